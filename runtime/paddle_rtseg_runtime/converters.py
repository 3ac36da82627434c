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
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, cwd=scratch)
        except FileNotFoundError:
            package = {"paddle2onnx": "paddle2onnx", "paddle_lite_opt": "paddlelite"}.get(
                os.path.basename(cmd[0]), os.path.basename(cmd[0]))
            raise DeployError("{} needs the `{}` command, which is not installed here: `pip "
                              "install {}` (the versions pinned in requirements.txt).".format(
                                  what, os.path.basename(cmd[0]), package)) from None
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


def convert_onnx(model_dir, onnx_path, opset=DEFAULT_OPSET, fold_constants=False):
    """``paddle2onnx`` at ``opset`` (17 by default; >= 13: opset 11 lacks ``sum`` and aborts the
    process), then tidied (:func:`_tidy_graph`).

    ``fold_constants``: paddle2onnx 2.1's default clean-up, Polygraphy's constant folding. Off by
    default: it runs ONNX Runtime's symbolic shape inference in SymPy (2.5-11x the conversion time:
    MixFormer-B0 77 s against 7 s), sets ``POLYGRAPHY_AUTOINSTALL_DEPS=1`` (pip installs at
    conversion time), and ONNX Runtime folds the same constants when it creates a session: equal
    outputs, the folded file no faster (``scripts/onnx_opset_speed.py --fold_constants``;
    docs/deployment.md, section 7)."""
    if opset < 13:
        raise DeployError("--opset_version {} is too old: use 13 or newer (Paddle's sum/layer_norm "
                          "need 13; paddle2onnx aborts the process on 11).".format(opset))
    model_file, params_file = model_paths(os.path.abspath(model_dir))
    onnx_path = os.path.abspath(onnx_path)
    os.makedirs(os.path.dirname(onnx_path), exist_ok=True)
    _run([_tool("paddle2onnx"), "--model_dir", os.path.dirname(model_file),
          "--model_filename", os.path.basename(model_file),
          "--params_filename", os.path.basename(params_file), "--save_file", onnx_path,
          "--opset_version", str(opset), "--enable_onnx_checker", "True",
          "--optimize_tool", "polygraphy" if fold_constants else "None"], "paddle2onnx")
    _tidy_graph(onnx_path)
    record(onnx_path)  # a re-export into that folder removes it (outputs.publish)
    return onnx_path


def _subgraphs(node):
    import onnx
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _tidy_graph(onnx_path):
    """What paddle2onnx's clean-up did without its constant folding: nodes whose outputs nobody
    reads are removed (ONNX Runtime warns once per such constant), and the weights, written as
    ``Constant`` nodes, become initializers, as other exporters write them."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(onnx_path)
    graph = model.graph

    def inner_reads(g):  # names read inside a subgraph (an If/Loop body may read outer tensors)
        names = set()
        for node in g.node:
            names.update(node.input)
            for sub in _subgraphs(node):
                names |= inner_reads(sub)
        return names

    while True:
        used = {o.name for o in graph.output}
        for node in graph.node:
            used.update(node.input)
            for sub in _subgraphs(node):
                used |= inner_reads(sub)
        dead = [n for n in graph.node if n.output and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    for node in [n for n in graph.node if n.op_type == "Constant" and len(n.attribute) == 1
                 and n.attribute[0].name == "value"]:
        tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
        graph.initializer.append(tensor)
        graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    from .files import write_bytes_atomic
    write_bytes_atomic(onnx_path, model.SerializeToString())


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
