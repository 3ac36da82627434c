"""Converters run as subprocesses: paddle2onnx (ONNX) and paddle_lite_opt (Paddle Lite ``.nb``)."""
import os
import re
import subprocess
import sys
import tempfile

from .errors import DeployError
from .model_dir import model_paths
from .outputs import record


def _tool(name):
    """Path of a console script installed next to this Python (venv-safe), else the bare name."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.isfile(candidate) else name


def _run(cmd, what, ok_codes=(0,)):
    """Run a converter in a subprocess (paddle2onnx and paddle_lite_opt can abort or segfault),
    in a scratch working directory: paddle2onnx leaves uuid-named weight files in its cwd."""
    with tempfile.TemporaryDirectory(prefix="rtseg-convert-") as scratch:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=scratch)
    if proc.returncode not in ok_codes:
        reason = "crashed with signal {}".format(-proc.returncode) if proc.returncode < 0 else \
            "exited with code {}".format(proc.returncode)
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise DeployError("{} {}: {}\nLast output:\n{}".format(what, reason, " ".join(cmd), tail))
    return proc.stdout


# Opset 17 has LayerNormalization as one op. At 13 paddle2onnx writes each layer_norm as nine ops,
# and ONNX Runtime's transpose optimizer moves some of those across their transposes (reducing
# axis 1 instead of -1) before its LayerNorm fusion runs, so those stay nine kernels (7 of
# SegFormer++-B0's 19). Measured with scripts/onnx_opset_speed.py: docs/deployment.md, section 7.
DEFAULT_OPSET = 17


def convert_onnx(model_dir, onnx_path, opset=DEFAULT_OPSET):
    """``paddle2onnx`` at ``opset`` (17 by default; >= 13: opset 11 lacks ``sum`` and aborts the
    process)."""
    if opset < 13:
        raise DeployError("--opset_version {} is too old: use 13 or newer (Paddle's sum/layer_norm "
                          "need 13; paddle2onnx aborts the process on 11).".format(opset))
    model_file, params_file = model_paths(os.path.abspath(model_dir))
    onnx_path = os.path.abspath(onnx_path)
    os.makedirs(os.path.dirname(onnx_path), exist_ok=True)
    _run([_tool("paddle2onnx"), "--model_dir", os.path.dirname(model_file),
          "--model_filename", os.path.basename(model_file),
          "--params_filename", os.path.basename(params_file), "--save_file", onnx_path,
          "--opset_version", str(opset), "--enable_onnx_checker", "True"], "paddle2onnx")
    record(onnx_path)  # a re-export into that folder removes it (outputs.publish)
    return onnx_path


def convert_lite(model_dir, out_prefix, target="arm", quant_type=None):
    """``paddle_lite_opt`` to ``<out_prefix>.nb`` (naive_buffer) for ``target`` (arm, x86, ...);
    ``quant_type`` QUANT_INT8/QUANT_INT16 stores weights in int (dynamic weight quantization)."""
    model_file, params_file = model_paths(os.path.abspath(model_dir))
    out_prefix = os.path.abspath(out_prefix)
    if not model_file.endswith(".pdmodel"):
        raise DeployError("Paddle Lite reads only the legacy model.pdmodel format; {} was exported "
                          "with --format pir. Re-export with --format legacy.".format(model_dir))
    cmd = [_tool("paddle_lite_opt"), "--model_file=" + model_file, "--param_file=" + params_file,
           "--valid_targets=" + target, "--optimize_out_type=naive_buffer",
           "--optimize_out=" + out_prefix]
    if quant_type:
        cmd += ["--quant_model=true", "--quant_type=" + quant_type]
    output = _run(cmd, "paddle_lite_opt")
    if not os.path.isfile(out_prefix + ".nb"):
        raise DeployError("paddle_lite_opt wrote no {}.nb:\n{}".format(out_prefix, output[-1000:]))
    record(out_prefix + ".nb")
    return out_prefix + ".nb"


def lite_model_ops(model_dir, target="arm"):
    """Ops of the exported model and whether Paddle Lite has a kernel for them on ``target``
    (``paddle_lite_opt --print_model_ops=true``). Returns ``({op: [targets...]}, supported)``."""
    model_file, params_file = model_paths(os.path.abspath(model_dir))
    output = _run([_tool("paddle_lite_opt"), "--print_model_ops=true",
                   "--model_file=" + model_file, "--param_file=" + params_file,
                   "--valid_targets=" + target], "paddle_lite_opt --print_model_ops",
                  ok_codes=(0, 1))  # it exits 1 after printing, even when all ops are supported
    lines = output.splitlines()
    start = next((i for i, l in enumerate(lines) if "OP_name" in l), None)
    if start is None:
        raise DeployError("Unexpected paddle_lite_opt output:\n" + output[-1000:])
    columns = lines[start].split()[1:]  # e.g. ['kARM', 'kHost']; kHost kernels run on ARM too
    header = lines[start]
    ops = {}
    for line in lines[start + 1:]:
        if not re.match(r"^\s+[a-z_0-9]+(\s+Y)*\s*$", line):
            break
        # a 'Y' under the last character of a column header means a kernel exists there
        ops[line.split()[0]] = [col for col in columns
                                if line[header.index(col) + len(col) - 1:
                                        header.index(col) + len(col)] == "Y"]
    supported = "supports this model" in output and "not supported" not in output
    return ops, supported
