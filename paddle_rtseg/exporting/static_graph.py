"""Export a model to a static graph plus PaddleSeg's ``deploy.yaml`` (the command is
:mod:`paddle_rtseg.cli.export`).


By default batch, height and width are dynamic (``[-1, 3, -1, -1]``): one export serves every batch size
and image size. ``--format legacy`` (default) writes ``model.pdmodel`` / ``model.pdiparams``, which every
backend reads (Paddle Inference, paddle2onnx, Paddle Lite's ``opt``); ``--format pir`` writes Paddle 3's
``model.json``. Paddle picks the format when it is imported (``FLAGS_enable_pir_api``), so when the
running process has the other one the export re-runs itself in a subprocess with the flag set.

The export is atomic: files are written to a temporary directory next to ``--save_dir`` and moved in
only once everything succeeded, ``deploy.yaml`` last (:func:`paddle_rtseg_runtime.outputs.publish`).
Nothing else in ``--save_dir`` is touched: only the files a previous export or conversion wrote there
(``.paddle_rtseg_files``) are replaced or removed. The export owns ``--save_dir`` while it runs
(:mod:`paddle_rtseg_runtime.run_lock`): a second export or training into it, or into a folder
inside a running training's folder, is refused, and temporary directories a killed export of it
left next to it are removed.
"""
import contextlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile

from paddle_rtseg_runtime import run_lock
from paddle_rtseg.exporting.conv_bias_add import conv_bias_as_channel_add

OUTPUT_OPS = ("argmax", "softmax", "none")
FORMATS = ("legacy", "pir")


class ExportError(ValueError):
    """The export cannot be done as asked; the message says what to change."""


def _paddle_version():
    import paddle
    return paddle.__version__


def _paddle_3():
    version = _paddle_version()
    return version.startswith("0.0.0") or int(version.split(".")[0]) >= 3


def pir_active():
    """True when this process's Paddle writes PIR ``model.json`` (Paddle >= 3 and the flag not off)."""
    if not _paddle_3():
        return False
    return os.environ.get("FLAGS_enable_pir_api", "1").lower() not in ("0", "false", "off")


def model_files(fmt):
    """(model file, params file) names that ``paddle.jit.save`` writes in ``fmt``."""
    return ("model.json" if fmt == "pir" else "model.pdmodel"), "model.pdiparams"


def check_args(input_shape, output_op, fmt):
    if output_op not in OUTPUT_OPS:
        raise ExportError("Unknown --output_op {!r}: use one of {} (argmax: int32 class map N,H,W; "
                          "softmax: probabilities N,C,H,W; none: logits N,C,H,W).".format(
                              output_op, ", ".join(OUTPUT_OPS)))
    if fmt not in FORMATS:
        raise ExportError("Unknown --format {!r}: use legacy (model.pdmodel, needed by Paddle Lite) "
                          "or pir (model.json).".format(fmt))
    if fmt == "pir" and not _paddle_3():
        raise ExportError("--format pir needs Paddle >= 3 (this is Paddle {}); use --format legacy."
                          .format(_paddle_version()))
    if input_shape is not None:
        if len(input_shape) != 4 or any(d == 0 or d < -1 for d in input_shape):
            raise ExportError("--input_shape takes 4 numbers N C H W (use -1 for a dynamic "
                              "dimension), got {}.".format(" ".join(map(str, input_shape))))


def check_save_dir(save_dir):
    parent = os.path.dirname(os.path.abspath(save_dir))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise ExportError("Cannot create the parent of --save_dir {}: {}. Choose a writable "
                          "directory.".format(save_dir, e.strerror)) from None
    target = save_dir if os.path.isdir(save_dir) else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise ExportError("--save_dir {} is not writable (no write permission on {}). Choose a "
                          "writable directory.".format(save_dir, target))
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise ExportError("--save_dir {} exists and is a file; pass a directory.".format(save_dir))


class _WithOutputOp:
    """Factory for a Layer that applies PaddleSeg's ``output_op`` to the model's first logits."""

    @staticmethod
    def build(model, output_op):
        import paddle
        import paddle.nn.functional as F

        class SavedSegmentationNet(paddle.nn.Layer):
            # ``output_op`` is an attribute, not a closure variable: Paddle 2.6's dy2static
            # recompiles ``forward`` without its closure (NameError: output_op)
            def __init__(self):
                super().__init__()
                self.model = model
                self.output_op = output_op

            def forward(self, x):
                logit = self.model(x)[0]
                if self.output_op == "argmax":
                    return paddle.argmax(logit, axis=1, dtype="int32")
                if self.output_op == "softmax":  # on the last axis (Lite x86 overflows on axis 1)
                    return F.softmax(logit.transpose([0, 2, 3, 1]), axis=-1).transpose([0, 3, 1, 2])
                return logit

        return SavedSegmentationNet()


def prepare_export(model):
    """Let every layer that has a ``prepare_export()`` method (e.g. SegFormer++'s decoder, which
    materializes filters it computes from parameters in dygraph) switch to its export form; called
    on the loaded eval-mode model right before tracing. Returns the layers prepared."""
    prepared = [layer for layer in model.sublayers(include_self=True)
                if callable(getattr(layer, "prepare_export", None))]
    for layer in prepared:
        layer.prepare_export()
    return prepared


def _probe(model, shape, in_channels):
    """Run the model in dygraph on a zero image of ``shape`` (-1 -> a small size) to find shapes it
    cannot take before tracing (tracing errors are far less readable)."""
    import paddle
    concrete = [d if d > 0 else (1 if i == 0 else 64) for i, d in enumerate(shape)]
    if shape[1] > 0 and in_channels is not None and shape[1] != in_channels:
        raise ExportError("--input_shape has {} channels but the model takes {}-channel images; "
                          "pass --input_shape N {} H W.".format(shape[1], in_channels, in_channels))
    try:
        with paddle.no_grad():
            model(paddle.zeros(concrete, "float32"))
    except Exception as e:  # the model's own message, without Paddle's stack
        raise ExportError("The model cannot take input shape {} ({}: {}). Pass --input_shape N C H "
                          "W with a size the model accepts (e.g. H and W multiples of 32).".format(
                              concrete, type(e).__name__, str(e).strip().splitlines()[-1][:300])
                          ) from None


# attributes Paddle 3 no longer writes (constants of the op) but Paddle Lite 2.13 requires
_FIXED_ATTRIBUTES = {"relu6": {"threshold": 6.0},
                     "hard_swish": {"threshold": 6.0, "scale": 6.0, "offset": 3.0},
                     "swish": {"beta": 1.0}}


def _patch_for_lite(pdmodel_path):
    """Make Paddle 3.0's legacy program loadable by Paddle Lite 2.13 (the same function for Paddle
    Inference and paddle2onnx). Two things Paddle 3.0 writes that Lite cannot take:

    * ``flatten_contiguous_range`` (and friends) without their ``XShape`` output: ``opt`` dereferences
      it and segfaults on any model that calls ``flatten``. The variable is declared here.
    * 0-D ``fill_constant`` (Python scalars in shape arithmetic of a dynamic-shape graph): Lite's
      ``InferShape`` aborts with "no valid out_shape". They become shape ``[1]``, which broadcasts
      identically against the 0-D and 1-element shape values they meet.
    * activations whose constants became fixed in Paddle 3 and lost their attribute (``relu6``
      without ``threshold``: "No attributes called threshold found for relu6"). The attribute is
      added with the value Paddle 3 hard-codes.
    Returns the number of ops changed.
    """
    from paddle.base.proto import framework_pb2
    from paddle_rtseg_runtime.program import read_program, tensor_desc
    program = read_program(pdmodel_path)
    patched = 0
    for block in program.blocks:
        variables = {v.name: v for v in block.vars}
        for op in block.ops:
            for name, value in _FIXED_ATTRIBUTES.get(op.type, {}).items():
                if not any(a.name == name for a in op.attrs):
                    attr = op.attrs.add()
                    attr.name, attr.type, attr.f = name, framework_pb2.AttrType.FLOAT, value
                    patched += 1
            if op.type == "fill_constant" and not any(i.arguments for i in op.inputs):
                for attr in op.attrs:
                    if attr.name == "shape" and not attr.longs and not attr.ints:
                        attr.longs.append(1)
                        out = tensor_desc(variables[op.outputs[0].arguments[0]])
                        if not out.dims:
                            out.dims.append(1)
                        patched += 1
            if op.type not in ("flatten_contiguous_range", "squeeze2", "unsqueeze2", "transpose2"):
                continue
            if any(o.parameter == "XShape" for o in op.outputs):
                continue
            x = [i for i in op.inputs if i.parameter == "X"][0].arguments[0]
            out = [o for o in op.outputs if o.parameter == "Out"][0].arguments[0]
            name = out + "@xshape"
            var = block.vars.add()
            var.name = name
            var.persistable = False
            var.type.type = variables[x].type.type
            tensor = tensor_desc(var)
            tensor.data_type = tensor_desc(variables[x]).data_type
            tensor.dims.extend([0] + list(tensor_desc(variables[x]).dims))
            xshape = op.outputs.add()
            xshape.parameter = "XShape"
            xshape.arguments.append(name)
            patched += 1
    if patched:
        with open(pdmodel_path, "wb") as f:
            f.write(program.SerializeToString())
    return patched


def drop_pretrained(cfg):
    """Remove ``pretrained`` from the model and its backbone (the weights come from elsewhere)."""
    cfg.dic["model"].pop("pretrained", None)
    if isinstance(cfg.dic["model"].get("backbone"), dict):
        cfg.dic["model"]["backbone"].pop("pretrained", None)
    return cfg


def _transforms(cfg):
    export = cfg.dic.get("export") or {}
    transforms = export.get("transforms")
    if transforms is None:
        transforms = (cfg.dic.get("val_dataset") or {}).get("transforms")
    return transforms or [{"type": "Normalize"}]


def _write_deploy_yaml(path, model_file, params_file, transforms, input_shape, output_op):
    import yaml
    info = {"Deploy": {
        "model": model_file,
        "params": params_file,
        "transforms": transforms,
        "input_shape": list(input_shape),
        "output_op": output_op,
        "output_dtype": "int32" if output_op == "argmax" else "float32",
    }}
    with open(path, "w") as f:
        yaml.safe_dump(info, f, default_flow_style=None, sort_keys=False)


def _rerun(argv, fmt, save_dir):
    """Run the export in a fresh Python whose Paddle writes ``fmt``; its errors become ours."""
    if os.environ.get("_RTSEG_EXPORT_CHILD"):
        raise ExportError("Paddle {} cannot write the {} format (FLAGS_enable_pir_api has no effect "
                          "here); use --format legacy".format(_paddle_version(), fmt))
    env = dict(os.environ, FLAGS_enable_pir_api="1" if fmt == "pir" else "0",
               _RTSEG_EXPORT_CHILD="1", **run_lock.child_env(save_dir))
    proc = subprocess.run([sys.executable, "-m", "paddle_rtseg.export"] + argv, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=run_lock.die_with_parent)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.strip().splitlines() if l.lower().startswith("error:")]
        message = lines[-1][len("error:"):].strip() if lines else proc.stderr.strip()[-2000:]
        raise ExportError(message or "export subprocess failed with code {}".format(
            proc.returncode))
    return proc.stdout


def export(config, save_dir, model_path=None, input_shape=None, output_op="argmax",
           fmt="legacy", opts=None, model_overrides=None):
    """Export the model of ``config`` (weights from ``model_path``) to ``save_dir``.

    Returns the path of ``deploy.yaml``. Raises :class:`ExportError` (or the config/checkpoint
    errors of :mod:`paddle_rtseg`) with a message that says which flag to change.
    """
    check_args(input_shape, output_op, fmt)
    if model_path is not None and not os.path.isfile(model_path):
        from paddle_rtseg_runtime.files import not_a_file
        raise ExportError("--model_path {} {}. Pass the .pdparams written by training (e.g. "
                          "output/best_model/model.pdparams) or a PyTorch .pth.".format(
                              model_path, not_a_file(model_path)))
    check_save_dir(save_dir)
    with run_lock.run_folder(save_dir):
        _remove_stale_exports(save_dir)
        return _export(config, save_dir, model_path, input_shape, output_op, fmt, opts,
                       model_overrides)


def _temp_prefix(save_dir, old=False):
    return ".export-{}{}.".format("old-" if old else "", os.path.basename(os.path.abspath(save_dir)))


def _remove_stale_exports(save_dir):
    """Remove the temporary folders a killed export of ``save_dir`` left next to it (called with
    the folder's lock held, so no live export of it can own them)."""
    parent = os.path.dirname(os.path.abspath(save_dir))
    pattern = re.compile("^({}|{})[a-z0-9_]{{8}}$".format(
        re.escape(_temp_prefix(save_dir)), re.escape(_temp_prefix(save_dir, old=True))))
    stale = [n for n in os.listdir(parent) if pattern.match(n)]
    for name in stale:
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    if stale:
        sys.stderr.write("warning: removed {} temporary folder(s) left next to {} by a killed "
                         "export: {}\n".format(len(stale), save_dir, ", ".join(stale)))


class _InspectWithoutSource:
    """The ``inspect`` module, except that ``stack()`` reads no source lines."""

    def __getattr__(self, name):
        return getattr(inspect, name)

    @staticmethod
    def stack(context=1):
        return inspect.stack(0)


@contextlib.contextmanager
def tracing_without_source_lookups():
    """While tracing: Paddle's legacy static ``+ - * /`` with an operand whose first dimension is
    dynamic (-1, our batch) calls ``inspect.stack()`` only to put the caller's file and line in a
    DeprecationWarning; with source context that reads every frame's source file, ~57 ms a call,
    3.6 of the 22 s a tiny MixFormer took to export (cProfile). The file and line stay the same
    without the source lines. A Paddle without that module is left alone."""
    try:
        from paddle.base.layers import math_op_patch
    except ImportError:
        yield
        return
    saved = getattr(math_op_patch, "inspect", None)
    if saved is not inspect:
        yield
        return
    math_op_patch.inspect = _InspectWithoutSource()
    try:
        yield
    finally:
        math_op_patch.inspect = saved


def _export(config, save_dir, model_path, input_shape, output_op, fmt, opts, model_overrides):
    if pir_active() != (fmt == "pir"):
        argv = ["--config", config, "--save_dir", save_dir, "--output_op", output_op,
                "--format", fmt]
        if model_path:
            argv += ["--model_path", model_path]
        if input_shape:
            argv += ["--input_shape"] + [str(d) for d in input_shape]
        for key, value in (model_overrides or {}).items():
            opts = list(opts or []) + ["model.{}={}".format(key, value)]
        if opts:
            argv += ["--opts"] + list(opts)
        _rerun(argv, fmt, save_dir)
        return os.path.join(save_dir, "deploy.yaml")

    import paddle
    from paddle_rtseg import load_checkpoint, load_config
    from paddle_rtseg_runtime.errors import reporting_full_disk
    from paddleseg.cvlibs import SegBuilder

    cfg = load_config(config, opts=opts)
    cfg.dic["model"] = dict(cfg.dic["model"], **(model_overrides or {}))
    if model_path:  # weights come from --model_path: do not download ImageNet backbones
        drop_pretrained(cfg)
    model = SegBuilder(cfg).model
    if model_path:
        load_checkpoint(model, model_path)
    model.eval()
    shape = list(input_shape) if input_shape else [-1, 3, -1, -1]
    in_channels = getattr(model, "in_channels", None) or cfg.dic["model"].get("in_channels", 3)
    if shape[1] == -1:
        shape[1] = in_channels
    _probe(model, shape, in_channels)
    prepare_export(model)

    net = _WithOutputOp.build(model, output_op)
    net.eval()
    spec = [paddle.static.InputSpec([None if d == -1 else d for d in shape], "float32", "x")]
    model_file, params_file = model_files(fmt)
    parent = os.path.dirname(os.path.abspath(save_dir))
    with reporting_full_disk(save_dir):
        tmp = tempfile.mkdtemp(prefix=_temp_prefix(save_dir), dir=parent)
    try:
        try:  # trace first, so that only a tracing failure is blamed on the input shape
            with tracing_without_source_lookups():
                static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
                static.forward.concrete_program
        except Exception as e:
            dynamic = [i for i, d in enumerate(shape) if d == -1]
            hint = ("This model needs a fixed input size: pass --input_shape 1 {} H W."
                    .format(shape[1]) if dynamic else "Check the model's forward for Python "
                    "control flow on tensor values.")
            last = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
            raise ExportError("Tracing the model with input shape {} failed ({}). {}".format(
                shape, last, hint)) from None
        with tracing_without_source_lookups():
            _save_traced(static, os.path.join(tmp, "model"), save_dir)
        with reporting_full_disk(save_dir):
            if fmt == "legacy":
                _patch_for_lite(os.path.join(tmp, model_file))
                conv_bias_as_channel_add(os.path.join(tmp, model_file))
            _write_deploy_yaml(os.path.join(tmp, "deploy.yaml"), model_file, params_file,
                               _transforms(cfg), shape, output_op)
        from paddle_rtseg_runtime.files import default_mode
        from paddle_rtseg_runtime.outputs import publish
        for name in os.listdir(tmp):
            default_mode(os.path.join(tmp, name))
        publish(tmp, save_dir)  # only the export's own files change; deploy.yaml last
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(save_dir, "deploy.yaml")


def _save_traced(static, prefix, save_dir):
    """``paddle.jit.save`` of the traced model; a failure here is about writing, not the shape."""
    import paddle
    from paddle_rtseg_runtime.errors import DISK_FULL, DiskFullError, disk_full_message
    try:
        paddle.jit.save(static, prefix)
    except Exception as e:
        text = " ".join(str(e).split())
        if getattr(e, "errno", None) in DISK_FULL or "No space left on device" in text:
            raise DiskFullError(disk_full_message(os.path.dirname(os.path.abspath(save_dir)))
                                ) from None
        raise ExportError("Writing the exported model next to --save_dir {} failed ({}: {}). Check "
                          "that the folder is writable and has space.".format(
                              save_dir, type(e).__name__, text[-300:])) from None
