"""An exported model directory: ``deploy.yaml`` and the model files it names.

A model folder is untrusted input (users download exported models): ``deploy.yaml`` is read by the
one safe, bounded YAML reader (:func:`limits.read_yaml`), every field is checked for its type and
range before a runner uses it, the files it names must stay inside the folder, and an ONNX model's
external data must too (:func:`check_onnx_external_data`)."""
import os

from . import limits
from .errors import DeployError

OUTPUT_OPS = ("argmax", "softmax", "none")
_INTERPS = ("NEAREST", "LINEAR", "CUBIC", "AREA", "LANCZOS4")
_TRANSFORM_KEYS = ("Normalize", "Resize", "ResizeByLong", "ResizeByShort")  # the runners' preprocess


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and abs(value) < float("inf")


def inside(model_dir, name, what):
    """``model_dir/name`` after proving ``name`` is a relative path that stays in ``model_dir``
    (symbolic links resolved): a deploy.yaml cannot make a runner read ``../../etc/passwd``."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise DeployError("{} names {} {}; it must be a file name inside the model folder. Re-export "
                          "the model.".format(what, "a" if not isinstance(name, str) else "the path",
                                              limits_repr(name)))
    path = os.path.join(model_dir, name)
    root = os.path.realpath(model_dir)
    if os.path.isabs(name) or os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise DeployError("{} names {}, which is outside the model folder {}; a model folder may only "
                          "use its own files. Re-export the model, or fix the path.".format(
                              what, limits_repr(name), model_dir))
    return path


def limits_repr(value):
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


def _check_transforms(transforms, path):
    if not isinstance(transforms, list):
        raise DeployError("{}: transforms must be a list of {{type: ...}} entries, got {}. Re-export "
                          "the model.".format(path, limits_repr(transforms)))
    for i, t in enumerate(transforms):
        where = "{}: transforms[{}]".format(path, i)
        kind = t.get("type") if isinstance(t, dict) else None
        if kind not in _TRANSFORM_KEYS:
            raise DeployError("deploy.yaml transform {} is not supported by the runner (supported: "
                              "{}); {}.".format(limits_repr(kind), ", ".join(_TRANSFORM_KEYS), where))
        bad = None
        for key in ("mean", "std") if kind == "Normalize" else ():
            value = t.get(key, [0.5, 0.5, 0.5])
            if not isinstance(value, list) or len(value) not in (1, 3) or \
                    not all(_is_number(v) for v in value) or \
                    (key == "std" and not all(v != 0 for v in value)):
                bad = "{} must be a list of 1 or 3 numbers{}".format(
                    key, " (not 0)" if key == "std" else "")
        if kind == "Resize":
            size = t.get("target_size", [512, 512])
            divisor = t.get("size_divisor")
            if not isinstance(size, list) or len(size) != 2 or \
                    not all(_is_int(v) and v >= 1 for v in size):
                bad = "target_size must be [width, height], two integers of at least 1"
            elif size[0] * size[1] > limits.limit("PADDLE_RTSEG_MAX_IMAGE_PIXELS"):
                bad = "target_size {}x{} is more pixels than images may have. {}".format(
                    size[0], size[1], limits.how_to_raise("PADDLE_RTSEG_MAX_IMAGE_PIXELS"))
            elif divisor is not None and not (_is_int(divisor) and 1 <= divisor <= 4096):
                bad = "size_divisor must be an integer from 1 to 4096"
            elif not isinstance(t.get("keep_ratio", False), bool):
                bad = "keep_ratio must be true or false"
        if kind in ("ResizeByLong", "ResizeByShort"):
            key = "long_size" if kind == "ResizeByLong" else "short_size"
            side = t.get(key)
            if not (_is_int(side) and 1 <= side <= 65535):
                bad = "{} must be an integer from 1 to 65535".format(key)
        if t.get("interp", "LINEAR") not in _INTERPS:
            bad = "interp must be one of {}".format(", ".join(_INTERPS))
        if bad:
            raise DeployError("{} ({}): {}, got {}. Re-export the model, or fix deploy.yaml.".format(
                where, kind, bad, limits_repr({k: v for k, v in t.items() if k != "type"})))


def read_deploy_yaml(model_dir, program_files=True):
    """``Deploy`` section of ``model_dir/deploy.yaml``, every field checked. With ``program_files``
    the Paddle program files it names (``model``, ``params``) must exist; the ONNX and Lite runners
    pass False, since a device gets only ``deploy.yaml`` and its ``model.onnx`` /
    ``model_<target>.nb``."""
    path = os.path.join(model_dir, "deploy.yaml")
    if not os.path.isdir(model_dir):
        raise DeployError("Model directory {} does not exist. Pass the --save_dir of "
                          "`python -m paddle_rtseg.export`.".format(model_dir))
    if not os.path.isfile(path):
        raise DeployError("{} has no deploy.yaml; it is not an exported model directory. Export "
                          "with `python -m paddle_rtseg.export --config ... --save_dir {}`."
                          .format(model_dir, model_dir))
    doc = limits.read_yaml(path, "deploy.yaml")  # YamlError is a DeployError
    info = doc.get("Deploy") if isinstance(doc, dict) else None
    if not isinstance(info, dict) or "model" not in info:
        raise DeployError("{} has no `Deploy: {{model, params, transforms}}` section.".format(path))
    for key in ("model", "params"):
        if key in info:
            if not isinstance(info[key], str):
                raise DeployError("{}: `{}:` must be a file name, got {}. Re-export the model, or "
                                  "fix deploy.yaml.".format(path, key, limits_repr(info[key])))
            inside(model_dir, info[key], "{} ({})".format(path, key))
    missing = [info[k] for k in ("model", "params") if program_files and k in info
               and not os.path.isfile(os.path.join(model_dir, info[k]))]
    if missing:
        raise DeployError("Model directory {} is missing {} (named in deploy.yaml). Re-run the "
                          "export into this directory.".format(model_dir, ", ".join(missing)))
    if program_files and "params" not in info:  # the Paddle program's weights file
        raise DeployError("{} names no `params:` file (Deploy: {{model, params, transforms}}). "
                          "Re-export the model, or add `params: model.pdiparams`.".format(path))
    info.setdefault("transforms", [{"type": "Normalize"}])
    info.setdefault("input_shape", [-1, 3, -1, -1])
    info.setdefault("output_op", "argmax")
    _check_transforms(info["transforms"], path)
    shape = info["input_shape"]
    if not isinstance(shape, list) or len(shape) != 4 or \
            not all(_is_int(v) and (v == -1 or 1 <= v <= 65535) for v in shape) or shape[1] == 0:
        raise DeployError("{}: input_shape must be [N, C, H, W], each an integer from 1 to 65535 or "
                          "-1 (any), got {}. Re-export the model, or fix deploy.yaml.".format(
                              path, limits_repr(shape)))
    if info["output_op"] not in OUTPUT_OPS:
        raise DeployError("{}: output_op {} is not one of {}. Re-export the model, or fix "
                          "deploy.yaml.".format(path, limits_repr(info["output_op"]),
                                                ", ".join(OUTPUT_OPS)))
    return info


def model_paths(model_dir):
    info = read_deploy_yaml(model_dir)
    return os.path.join(model_dir, info["model"]), os.path.join(model_dir, info["params"])


def check_onnx_external_data(onnx_path):
    """Refuse an ONNX model whose tensors keep their data in files outside its folder (an
    ``external_data`` location such as ``../../etc/passwd`` would be read into the weights), before
    ONNX Runtime opens it. Needs the ``onnx`` package; without it nothing is checked."""
    try:
        import onnx
        from onnx import external_data_helper
    except ImportError:
        return
    try:
        model = onnx.load(onnx_path, load_external_data=False)
    except Exception as e:  # a corrupt protobuf: say so here, not in ONNX Runtime's words
        raise DeployError("ONNX model {} cannot be read ({}): the file is corrupt or not an ONNX "
                          "model. Convert it again.".format(onnx_path, limits_repr(str(e))[:200])) \
            from None
    folder = os.path.dirname(os.path.abspath(onnx_path))
    for tensor in external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        inside(folder, location, "ONNX model {} (external data of tensor {})".format(
            onnx_path, limits_repr(tensor.name)))


# bytes per element of Paddle's VarType.Type values that a .pdiparams tensor can hold
_DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 19: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16,
                32: 1, 33: 1}
_REEXPORT = "Re-export the model (python -m paddle_rtseg.export) or download it again."


def check_program_files(model_file, params_file):
    """Cheap structural checks of a legacy ``.pdmodel`` / ``.pdiparams`` pair before Paddle's
    native loader sees them (a random or truncated file must give one paragraph, not a traceback
    or a crash): the program must parse as a ``ProgramDesc`` with ops, and the parameters file
    must be a sequence of well-formed tensors (version 0, a ``TensorDesc``, exactly the bytes its
    dims and dtype need) ending exactly at the end of the file. Needs Paddle (its protobufs).
    A PIR ``model.json`` must parse as JSON with a program of ops (Paddle 3's layout:
    ``program.regions[0].blocks[0].ops``); its parameters file has the same format.
    Returns the number of tensors in ``params_file``."""
    from paddle.base.proto import framework_pb2
    if model_file.endswith(".json"):
        _check_pir_json(model_file)
        return _walk_params(params_file, framework_pb2)
    program = framework_pb2.ProgramDesc()
    try:
        with open(model_file, "rb") as f:
            program.ParseFromString(f.read())
        ok = bool(program.blocks) and any(len(b.ops) for b in program.blocks)
    except Exception:
        ok = False
    if not ok:
        raise DeployError("{} is not a Paddle program (it does not parse as a ProgramDesc with "
                          "ops: random, truncated or another kind of file). {}".format(
                              model_file, _REEXPORT))
    return _walk_params(params_file, framework_pb2)


def _check_pir_json(path):
    import json
    try:
        with open(path, "rb") as f:
            program = json.loads(f.read().decode("utf-8"))
        ops = program["program"]["regions"][0]["blocks"][0]["ops"]
        ok = isinstance(program.get("base_code"), dict) and isinstance(ops, list) and len(ops) > 0
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        ok = False
    if not ok:
        raise DeployError("{} is not a Paddle 3 (PIR) program (it does not parse as JSON with a "
                          "program of ops: random, truncated or another kind of file). {}".format(
                              path, _REEXPORT))


def _walk_params(path, framework_pb2):
    import struct
    size = os.path.getsize(path)
    count, pos = 0, 0

    def bad(why):
        return DeployError("{} is not a Paddle parameters file: {} (tensor {}, byte {} of {}). "
                           "{}".format(path, why, count, pos, size, _REEXPORT))

    with open(path, "rb") as f:
        def read(n):
            data = f.read(n)
            if len(data) != n:
                raise bad("it ends inside a tensor header (truncated?)")
            return data

        while pos < size:
            version, lod_levels = struct.unpack("<IQ", read(12))
            if version != 0 or lod_levels > 16:
                raise bad("unknown tensor version {} or {} LoD levels".format(version, lod_levels))
            pos += 12
            for _ in range(lod_levels):
                (length,) = struct.unpack("<Q", read(8))
                pos += 8 + length
                if pos > size:
                    raise bad("a LoD of {} bytes runs past the end".format(length))
                f.seek(pos)
            tensor_version, desc_size = struct.unpack("<Ii", read(8))
            pos += 8
            if tensor_version != 0 or not 0 <= desc_size <= min(size - pos, 1 << 16):
                raise bad("unknown tensor version {} or a descriptor of {} bytes".format(
                    tensor_version, desc_size))
            desc = framework_pb2.VarType.TensorDesc()
            try:
                desc.ParseFromString(read(desc_size))
            except Exception:
                raise bad("its tensor descriptor does not parse") from None
            pos += desc_size
            numel = 1
            for d in desc.dims:
                if d < 0:
                    raise bad("a negative dimension {}".format(d))
                numel *= d
            if desc.data_type not in _DTYPE_BYTES:
                raise bad("unknown data type {}".format(desc.data_type))
            nbytes = numel * _DTYPE_BYTES[desc.data_type]
            if nbytes > size - pos:
                raise bad("a tensor of {} bytes runs past the end (truncated?)".format(nbytes))
            pos += nbytes
            f.seek(pos)
            count += 1
    if count == 0:
        raise bad("it holds no tensor")
    return count


_NB_PROBE = """
import sys
from paddlelite.lite import MobileConfig, create_paddle_predictor
config = MobileConfig()
config.set_model_from_file(sys.argv[1])
create_paddle_predictor(config)
"""
_nb_checked = {}  # (path, size, mtime) of .nb files that loaded in a child process


NB_PROBE_TIMEOUT = 300  # seconds a .nb may take to load in the probe child before it is refused


def check_nb(path):
    """A Paddle Lite ``.nb`` must not be able to abort this process (Lite's loader ends the process
    with SIGABRT on a random or truncated file): the header is checked (meta version, the
    topology's size against the file's), then the file is loaded once in a child process; a child
    that fails or dies by a signal gives :class:`DeployError` with Lite's own reason."""
    import struct
    import subprocess
    import sys
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(26)
    why = None
    if len(head) < 26:
        why = "it is {} bytes, shorter than a .nb header".format(size)
    else:
        meta, topo = struct.unpack_from("<H", head)[0], struct.unpack_from("<Q", head, 18)[0]
        if meta == 2 and 26 + topo > size:
            why = "its topology of {} bytes runs past the end of the file (truncated?)".format(topo)
        elif meta > 2:
            why = "unknown .nb format version {}".format(meta)
    key = (os.path.abspath(path), size, os.path.getmtime(path))
    if why is None and key not in _nb_checked:
        try:
            proc = subprocess.run([sys.executable, "-c", _NB_PROBE, path], capture_output=True,
                                  text=True, errors="replace", timeout=NB_PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess([], 1, "", "loading it took over {} s".format(
                NB_PROBE_TIMEOUT))
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.splitlines() if l.strip()]
            fatal = [l.split("] ", 1)[-1] for l in lines if l.startswith("[F ")]
            reason = (fatal or lines or ["no message"])[-1].strip()[:300]
            why = "Paddle Lite cannot load it ({}: {})".format(
                "signal {}".format(-proc.returncode) if proc.returncode < 0
                else "exit code {}".format(proc.returncode), reason)
        else:
            _nb_checked[key] = True
    if why:
        raise DeployError("{} is not a usable Paddle Lite model: {}. Convert it again with "
                          "deploy/lite/convert.py (paddle_lite_opt), or download it again."
                          .format(path, why))
