"""What every deployment runner shares: reading an exported model directory (``deploy.yaml``),
PaddleSeg's pre/post-processing, one predictor class per backend, and the converters.

Nothing here imports Paddle at module level (only numpy, OpenCV and PyYAML), so the runners in
``deploy/`` load this file directly and run where only their own runtime (ONNX Runtime, Paddle Lite)
is installed. Backends are imported when a predictor is created.
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np


# --------------------------------------------------------------------------- files
def default_mode(path):
    """Give ``path`` (made 0600/0700 by ``mkstemp``/``mkdtemp``) the mode a plain open()/mkdir()
    would, so renamed-into-place outputs are readable like any other."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def write_bytes_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` via a temporary file renamed into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DeployError(ValueError):
    """A model directory, image or option the runner cannot use; the message says the fix."""


# --------------------------------------------------------------------------- model directory
def read_deploy_yaml(model_dir):
    """``Deploy`` section of ``model_dir/deploy.yaml``, with the model files checked to exist."""
    import yaml
    path = os.path.join(model_dir, "deploy.yaml")
    if not os.path.isdir(model_dir):
        raise DeployError("Model directory {} does not exist. Pass the --save_dir of "
                          "`python -m paddle_rtseg.export`.".format(model_dir))
    if not os.path.isfile(path):
        raise DeployError("{} has no deploy.yaml; it is not an exported model directory. Export "
                          "with `python -m paddle_rtseg.export --config ... --save_dir {}`."
                          .format(model_dir, model_dir))
    with open(path) as f:
        info = (yaml.safe_load(f) or {}).get("Deploy")
    if not isinstance(info, dict) or "model" not in info:
        raise DeployError("{} has no `Deploy: {{model, params, transforms}}` section.".format(path))
    missing = [info[k] for k in ("model", "params")
               if k in info and not os.path.isfile(os.path.join(model_dir, info[k]))]
    if missing:
        raise DeployError("Model directory {} is missing {} (named in deploy.yaml). Re-run the "
                          "export into this directory.".format(model_dir, ", ".join(missing)))
    info.setdefault("transforms", [{"type": "Normalize"}])
    info.setdefault("input_shape", [-1, 3, -1, -1])
    info.setdefault("output_op", "argmax")
    return info


def model_paths(model_dir):
    info = read_deploy_yaml(model_dir)
    return os.path.join(model_dir, info["model"]), os.path.join(model_dir, info["params"])


# --------------------------------------------------------------------------- pre/post-processing
def read_image(path, channels=3):
    """``H x W x 3`` BGR uint8 image, or a :class:`DeployError` naming what is wrong with it."""
    import cv2
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DeployError("Cannot read image {} (missing, or not an image OpenCV can decode)."
                          .format(path))
    found = 1 if image.ndim == 2 else image.shape[2]
    if found != channels:
        kind = {1: "grayscale", 2: "grayscale+alpha", 4: "RGBA/BGRA"}.get(found, "")
        raise DeployError("Image {} has {} channel(s){} but the model takes {}-channel color "
                          "images. Convert it first (e.g. `cv2.cvtColor(im, cv2.COLOR_{}2BGR)`)."
                          .format(path, found, " ({})".format(kind) if kind else "", channels,
                                  "GRAY" if found == 1 else "BGRA"))
    return to_uint8(image)


def to_uint8(image):
    """8-bit copy of a 16-bit or float image, scaled by its maximum (0 stays 0); the CLIs'
    ``datasets.checked_io.read_image`` uses the same rule, so both see the same pixels."""
    import cv2
    if image.dtype == np.uint8:
        return image
    return cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))


def _resize_to(image, size_hw, interp):
    import cv2
    return cv2.resize(image, (int(size_hw[1]), int(size_hw[0])), interpolation=interp)


def preprocess(image_bgr, transforms):
    """PaddleSeg's eval transforms (BGR -> RGB, resize ops, Normalize) -> ``1 x 3 x H x W`` float32."""
    import cv2
    interps = {"NEAREST": cv2.INTER_NEAREST, "LINEAR": cv2.INTER_LINEAR, "CUBIC": cv2.INTER_CUBIC,
               "AREA": cv2.INTER_AREA, "LANCZOS4": cv2.INTER_LANCZOS4}
    im = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).astype("float32")
    for t in transforms:
        kind = t.get("type")
        interp = interps.get(t.get("interp", "LINEAR"), cv2.INTER_LINEAR)
        h, w = im.shape[:2]
        if kind == "Normalize":
            mean = np.array(t.get("mean", [0.5, 0.5, 0.5]), "float32")
            std = np.array(t.get("std", [0.5, 0.5, 0.5]), "float32")
            im = (im / 255.0 - mean) / std
        elif kind == "Resize":
            th, tw = t.get("target_size", [512, 512])[::-1]  # PaddleSeg: [w, h]
            if t.get("keep_ratio", False):
                scale = min(th / h, tw / w)
                th, tw = int(round(h * scale)), int(round(w * scale))
            divisor = t.get("size_divisor")
            if divisor:
                th = int(np.ceil(th / divisor) * divisor)
                tw = int(np.ceil(tw / divisor) * divisor)
            im = _resize_to(im, (th, tw), interp)
        elif kind in ("ResizeByLong", "ResizeByShort"):
            edge = max(h, w) if kind == "ResizeByLong" else min(h, w)
            size = t.get("long_size", t.get("short_size"))
            scale = float(size) / edge
            im = _resize_to(im, (int(round(h * scale)), int(round(w * scale))), interp)
        else:
            raise DeployError("deploy.yaml transform {!r} is not supported by the runner (supported: "
                              "Normalize, Resize, ResizeByLong, ResizeByShort).".format(kind))
    return np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype="float32")


def to_label_map(output, output_op, size_hw):
    """Network output (argmax ``N,H,W`` or ``N,C,H,W`` scores) -> ``H x W`` uint8 class map of the
    original image size (nearest-neighbour resize of the class map, as PaddleSeg does)."""
    import cv2
    out = np.asarray(output)
    label = out[0] if output_op == "argmax" or out.ndim == 3 else out[0].argmax(0)
    label = label.astype("uint8")
    if label.shape != tuple(size_hw):
        label = cv2.resize(label, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)
    return label


def color_map(num_classes=256):
    """PaddleSeg's pseudo-color palette (``paddleseg.utils.visualize.get_color_map_list``)."""
    palette = np.zeros((num_classes, 3), "uint8")
    for i in range(num_classes):
        lab, j = i, 0
        while lab:
            palette[i, 0] |= ((lab >> 0) & 1) << (7 - j)
            palette[i, 1] |= ((lab >> 1) & 1) << (7 - j)
            palette[i, 2] |= ((lab >> 2) & 1) << (7 - j)
            j += 1
            lab >>= 3
    return palette


def save_results(label, image_bgr, save_dir, name, weight=0.6):
    """Write ``<name>.png`` (palette PNG whose pixel values are class ids, as PaddleSeg's predict)
    and ``<name>_overlay.jpg`` (image blended with the colored mask)."""
    import io

    import cv2
    from PIL import Image
    palette = color_map()
    mask = Image.fromarray(label, mode="P")
    mask.putpalette(palette.flatten().tolist())
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    colored = palette[label][:, :, ::-1]  # RGB palette -> BGR
    overlay = cv2.addWeighted(image_bgr, 1 - weight, colored, weight, 0)
    ok, jpg = cv2.imencode(".jpg", overlay)
    if not ok:
        raise DeployError("Could not encode the overlay of {}".format(name))
    try:
        write_bytes_atomic(os.path.join(save_dir, name + ".png"), buf.getvalue())
        write_bytes_atomic(os.path.join(save_dir, name + "_overlay.jpg"), jpg.tobytes())
    except OSError as e:
        raise DeployError("Cannot write to --save_dir {} ({}). Choose a folder you can write "
                          "to.".format(save_dir, e.strerror or e)) from None


def list_images(path):
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DeployError("--image_path {} does not exist (pass an image or a folder of images)."
                          .format(path))
    images = sorted(os.path.join(path, n) for n in os.listdir(path)  # hidden: e.g. macOS "._x.png"
                    if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    if not images:
        raise DeployError("No images ({}) in {}.".format(", ".join(IMAGE_EXTENSIONS), path))
    return images


def check_input(x, input_shape):
    """Reject an input the exported graph cannot take, before the backend does it cryptically."""
    if x.ndim != 4:
        raise DeployError("The model takes N x C x H x W input, got shape {}.".format(x.shape))
    for axis, (want, got) in enumerate(zip(input_shape, x.shape)):
        if want not in (-1, None) and want != got:
            what = ["batch size", "channels", "height", "width"][axis]
            raise DeployError("The model was exported for input shape {} but got {} ({} {} != {}). "
                              "Resize the input (a Resize transform in deploy.yaml) or re-export "
                              "with --input_shape, or without it for dynamic shapes.".format(
                                  list(input_shape), list(x.shape), what, got, want))


# --------------------------------------------------------------------------- predictors
class Predictor:
    """``predictor(x) -> numpy output`` for an ``N x C x H x W`` float32 array."""
    name = "base"

    def __call__(self, x):
        raise NotImplementedError


def read_program(pdmodel_path):
    """The ``ProgramDesc`` protobuf of a legacy ``.pdmodel`` (needs Paddle)."""
    from paddle.base.proto import framework_pb2
    program = framework_pb2.ProgramDesc()
    with open(pdmodel_path, "rb") as f:
        program.ParseFromString(f.read())
    return program


def onednn_resize_is_exact(model_file):
    """Whether Paddle Inference may run this program's resizes with oneDNN resampling.

    Paddle 3.0 leaves ``interpolate_onednn_pass`` out of its default oneDNN passes. It is 4x faster
    than the native kernel (RTFormer-Slim's final 8x upsample at 512x1024: 44 -> 11 ms) and agrees
    with it for bilinear NCHW resizes to a given size with ``align_corners=False, align_mode=0``,
    but not for nearest, ``align_corners=True`` or a ``scale_factor`` resize (wrong values, all
    measured). So: True only for a legacy program whose every resize is of that kind.
    """
    if not model_file.endswith(".pdmodel"):
        return False  # PIR programs do not go through the legacy pass builder
    for block in read_program(model_file).blocks:
        for op in block.ops:
            if "interp" not in op.type:
                continue
            attrs = {a.name: a for a in op.attrs}
            if (op.type not in ("bilinear_interp", "bilinear_interp_v2")
                    or any(name not in attrs for name in ("align_corners", "align_mode",
                                                          "data_layout"))
                    or attrs["align_corners"].b or attrs["align_mode"].i != 0
                    or attrs["data_layout"].s != "NCHW"
                    or ("scale" in attrs and any(v > 0 for v in attrs["scale"].floats))
                    or any(i.parameter == "Scale" and i.arguments for i in op.inputs)):
                return False
    return True


class PaddleInferencePredictor(Predictor):
    """Paddle Inference on an exported directory: CPU (oneDNN on/off, threads), GPU, TensorRT."""

    def __init__(self, model_dir, device="cpu", use_mkldnn=True, threads=2, use_trt=False,
                 trt_precision="fp32", min_shape=None, opt_shape=None, max_shape=None,
                 ir_optim=True):
        import paddle.inference as pi
        model_file, params_file = model_paths(model_dir)
        config = pi.Config(model_file, params_file)
        config.switch_ir_optim(ir_optim)
        if device == "gpu":
            config.enable_use_gpu(500, 0)
            if use_trt:
                precision = {"fp32": pi.PrecisionType.Float32,
                             "fp16": pi.PrecisionType.Half}[trt_precision]
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1,
                                              min_subgraph_size=3, precision_mode=precision,
                                              use_static=False, use_calib_mode=False)
                if min_shape:
                    name = "x"
                    config.set_trt_dynamic_shape_info({name: list(min_shape)},
                                                      {name: list(max_shape or min_shape)},
                                                      {name: list(opt_shape or min_shape)})
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads)
            if use_mkldnn:
                config.enable_mkldnn()
                if onednn_resize_is_exact(model_file):
                    config.pass_builder().append_pass("interpolate_onednn_pass")
            else:
                config.disable_mkldnn()
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        self.name = "paddle-inference-{}{}".format(
            device, "-trt-" + trt_precision if use_trt else "-onednn" if use_mkldnn and
            device == "cpu" else "")

    def __call__(self, x):
        self.input.reshape(list(x.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(x))
        self.predictor.run()
        return self.output.copy_to_cpu()


class OnnxPredictor(Predictor):
    """ONNX Runtime (CPU by default) on a ``.onnx`` written by :func:`convert_onnx`."""
    name = "onnxruntime"

    def __init__(self, onnx_path, threads=2, providers=None):
        import onnxruntime as ort
        if not os.path.isfile(onnx_path):
            raise DeployError("ONNX model {} does not exist; convert with paddle2onnx first "
                              "(deploy/onnx/README in docs/deployment.md).".format(onnx_path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # flush denormals, as Paddle Inference does: peaked attention leaves probabilities near
        # 1e-29 whose products are denormal, and x86 arithmetic on those is ~20x slower
        # (RTFormer-Slim 512x1024: cross-attention matmuls 62 -> 3.6 ms); results change only
        # for values below 1.2e-38. Unlike Paddle Inference, ONNX Runtime leaves the calling
        # thread in that mode: later numpy and Paddle dygraph code in it flush too (measured).
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        self.session = ort.InferenceSession(onnx_path, options,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]


class LitePredictor(Predictor):
    """Paddle Lite light runtime on a ``.nb`` (on this machine: an x86 ``.nb``).

    Two defects of the paddlelite 2.13 x86 runtime are worked around here (measured on RTFormer,
    see docs/deployment.md): a predictor that ran one input size gives wrong results for another
    size, so a predictor is kept per input size (the last few sizes); and the x86 ``bilinear_interp_v2`` kernel is wrong
    for batch > 1, so a batch runs image by image. The Python ``MobileConfig`` has no thread setting
    (the C++ API has ``set_threads``).
    """
    name = "paddle-lite"

    def __init__(self, nb_path):
        from paddlelite.lite import MobileConfig, create_paddle_predictor
        if not os.path.isfile(nb_path):
            raise DeployError("Paddle Lite model {} does not exist; convert with "
                              "deploy/lite/convert.py (paddle_lite_opt) first.".format(nb_path))
        self.nb_path = nb_path
        self._config, self._create = MobileConfig, create_paddle_predictor
        self._predictors = {}

    max_cached_sizes = 4  # a folder of photos of many sizes must not keep every model in memory

    def _predictor(self, size):
        if size not in self._predictors:
            if len(self._predictors) >= self.max_cached_sizes:
                self._predictors.pop(next(iter(self._predictors)))  # the oldest size
            config = self._config()
            config.set_model_from_file(self.nb_path)
            self._predictors[size] = self._create(config)
        return self._predictors[size]

    def __call__(self, x):
        predictor = self._predictor(tuple(x.shape[1:]))
        outputs = []
        for image in x:
            predictor.get_input(0).from_numpy(np.ascontiguousarray(image[None]))
            predictor.run()
            outputs.append(np.array(predictor.get_output(0).numpy(), copy=True))  # not a view
        return np.concatenate(outputs, axis=0)


# --------------------------------------------------------------------------- converters
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


def convert_onnx(model_dir, onnx_path, opset=13):
    """``paddle2onnx`` (opset >= 13: opset 11 lacks ``sum`` and aborts the process)."""
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
