"""Post-training int8 quantization with Paddle's own API, and the mIoU of a quantized predictor.

The pipeline that uses it (export, PTQ, ONNX/OpenVINO/Lite int8, the accuracy table) is
``python -m paddle_rtseg.quantize`` (:mod:`paddle_rtseg.cli.quantize`).
"""
import os
import shutil

import numpy as np

import paddle_rtseg_runtime as du


def miou(predictor, pairs, transforms, num_classes, ignore_index=255):
    """Mean IoU over ``(image path, label path)`` pairs (argmax of the predictor's logits)."""
    from paddle_rtseg.datasets.checked_io import read_label
    from paddle_rtseg_runtime.metrics import Scores
    scores = Scores(num_classes, ignore_index)
    for image_path, label_path in pairs:
        label = read_label(label_path)
        scores.add(du.to_label_map(predictor(du.preprocess(du.read_image(image_path), transforms)),
                                   "none", label.shape), label)
    return scores.miou()


ALGOS = ["KL", "hist", "avg", "abs_max", "mse"]
DEFAULT_ALGO = "avg"
WHY_DEFAULT = ("as accurate as KL and mse and 13x faster than KL: demo SeaFormer-Tiny, simulated int8 "
               "mIoU vs fp32 88.93: avg 89.14 (88 s), abs_max 88.97 (73 s), hist 88.79 (90 s), mse "
               "89.23 (125 s), KL 89.22 (1161 s); docs/deployment.md 5b")
# seconds measured for RTFormer-Slim (16 calibration images, 2 busy cores): printed up front
KL_NOTE = ("KL searches 2048-bin histograms per activation tensor in pure Python: ~1-2 s per "
           "tensor, 538 s for RTFormer-Slim on 2 cores")


class _Progress:
    """Wraps Paddle's ``cal_kl_threshold`` (called once per activation tensor, silently) with a
    counter, elapsed time and an estimate of the time left, printed every ``every`` s."""

    def __init__(self, module, ptq, log, every=10.0):
        self.module, self.ptq, self.log, self.every = module, ptq, log, every
        self.original = module.cal_kl_threshold
        self.done, self.start, self.last = 0, None, 0.0

    def __call__(self, *args, **kwargs):
        import time
        total = len(self.ptq._quantized_act_var_name)
        if self.start is None:
            self.start = self.last = time.perf_counter()
            self.log("KL thresholds: {} activation tensors ({})".format(total, KL_NOTE))
        result = self.original(*args, **kwargs)
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == total:
            elapsed = now - self.start
            self.log("KL thresholds: {}/{} tensors, {:.0f} s elapsed, ~{:.0f} s left".format(
                self.done, total, elapsed, elapsed / self.done * max(total - self.done, 0)))
            self.last = now
        return result

    def __enter__(self):
        self.module.cal_kl_threshold = self
        return self

    def __exit__(self, *exc):
        self.module.cal_kl_threshold = self.original


QUANTIZABLE_OPS = ("conv2d", "depthwise_conv2d", "matmul_v2")
# the folder ``quantize`` writes the ARM PTQ program to when the model keeps ops float on ARM
LITE_ARM_PTQ = "ptq_int8_lite_arm"


def lite_arm_float_ops(model_cfg):
    """Op types the int8 program for Paddle Lite's ARM kernels keeps in float for the model of
    ``model_cfg`` (a config's ``model`` dict): the union of ``lite_arm_int8_float_ops`` over the
    registered models and backbones it names (its type, its backbone's), a model's own record of an
    int8 kernel that crashes Lite (e.g. :class:`paddle_rtseg.models.mixformer.MixFormer`)."""
    from paddleseg.cvlibs import manager
    components = {}
    for m in (manager.MODELS, manager.BACKBONES):
        components.update(m.components_dict)
    found, stack = set(), [model_cfg]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            component = components.get(kind) if isinstance(kind, str) else None
            component = getattr(component, "component_class", component)
            found.update(getattr(component, "lite_arm_int8_float_ops", ()))
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return tuple(op for op in QUANTIZABLE_OPS if op in found)


def lite_arm_ptq_dir(save_dir):
    """The int8 program of a ``quantize`` run in ``save_dir`` to convert for Lite's ARM kernels:
    ``ptq_int8_lite_arm/`` where the model keeps ops float on ARM, else ``ptq_int8/``."""
    arm = os.path.join(save_dir, LITE_ARM_PTQ)
    if os.path.isfile(os.path.join(arm, "deploy.yaml")):
        return arm
    return os.path.join(save_dir, "ptq_int8")


def post_training_quantize(fp32_dir, out_dir, calib_batches, algo, log=print, qdq=False,
                           reduce_range=False, op_types=QUANTIZABLE_OPS, skip_tensors=None,
                           adjust=None, weight_bits=None):
    """Paddle's static PTQ on the exported program; returns ``out_dir`` (a deployable dir).

    ``qdq``: the same calibration written as ``quantize_linear``/``dequantize_linear`` pairs
    (Paddle's ``onnx_format``), saved as ``out_dir/model_qdq.*`` into the directory a first call
    (``qdq=False``) made, whose ``deploy.yaml`` it shares: what Paddle Inference's OpenVINO engine
    runs in int8 (:func:`paddle_rtseg_runtime.openvino_int8_paths`). ``reduce_range`` (with
    ``qdq``): 7-bit weights (:func:`_weights_to_7_bits`), recorded in ``deploy.yaml``.
    ``adjust(program, scope)``: called on the quantized program before it is saved (PalQuant's
    exact scales, :mod:`paddle_rtseg.quantization.palquant_int8`); ``weight_bits``: the weights'
    bits to record with ``qdq`` when ``adjust`` narrowed them."""
    import paddle
    from paddle.static.quantization import PostTrainingQuantization
    from paddle.static.quantization import post_training_quantization as ptq_module

    class Feed(paddle.io.DataLoader):
        """The calibration batches as feed dicts: Paddle's PTQ calls its ``data_loader`` and
        iterates the result (Paddle 3.0 accepts any callable; 2.6 asserts a DataLoader)."""

        def __init__(self):  # noqa: the base class's set-up is for datasets, unused here
            pass

        def __call__(self):
            return ({"x": x} for x in calib_batches)

        def __iter__(self):
            return self()

        def __len__(self):
            return len(calib_batches)

    data_loader = Feed()

    paddle.enable_static()
    try:
        ptq = PostTrainingQuantization(
            executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=fp32_dir,
            model_filename="model.pdmodel", params_filename="model.pdiparams",
            data_loader=data_loader, batch_nums=len(calib_batches), algo=algo,
            quantizable_op_type=list(op_types), skip_tensor_list=skip_tensors or None,
            weight_quantize_type="channel_wise_abs_max", onnx_format=qdq)
        with _Progress(ptq_module, ptq, log):
            program = ptq.quantize()
        if qdq:
            _scales_as_vectors(program, ptq._scope)
            if reduce_range:
                _weights_to_7_bits(program, ptq._scope)
        if adjust is not None:
            adjust(program, ptq._scope)
        name = du.openvino_int8_paths(out_dir) if qdq else ("model.pdmodel", "model.pdiparams")
        ptq.save_quantized_model(out_dir, model_filename=os.path.basename(name[0]),
                                 params_filename=os.path.basename(name[1]))
    finally:
        paddle.disable_static()
    if qdq:
        _record_weight_bits(out_dir, weight_bits or (7 if reduce_range else 8))
        return out_dir
    shutil.copy(os.path.join(fp32_dir, "deploy.yaml"), os.path.join(out_dir, "deploy.yaml"))
    from paddle_rtseg.exporting.static_graph import _patch_for_lite
    _patch_for_lite(os.path.join(out_dir, "model.pdmodel"))
    return out_dir


def _scales_as_vectors(program, scope):
    """Give every 0-d scale and zero point of the QDQ pairs the shape ``[1]``. Paddle's PTQ stores
    the scales of its output observers (``only_observer`` pairs) as 0-d tensors, and OpenVINO's
    ``dequantize_linear`` converter takes 1-d or 2-d scales only ("dims of scale should not be
    greater than 2"), so Paddle Inference's OpenVINO engine would refuse the whole program."""
    import paddle
    for op in program.global_block().ops:
        if op.type in ("quantize_linear", "dequantize_linear"):
            for slot in ("Scale", "ZeroPoint"):
                for name in op.input(slot):
                    tensor = scope.find_var(name).get_tensor()
                    value = np.array(tensor)
                    if value.ndim == 0:
                        tensor.set(value.reshape(1), paddle.CPUPlace())
                        program.global_block().var(name).desc.set_shape([1])


def _weights_to_7_bits(program, scope):
    """Halve the int8 weights of every weight ``dequantize_linear`` (rounded, within +-63) and
    double its scale: the same function with 7-bit integer weights. OpenVINO's and ONNX Runtime's
    uint8 x int8 kernels on CPUs without VNNI/AMX add pairs of 16-bit products with saturation,
    which 8-bit weights can overflow and 7-bit ones cannot (2 * 255 * 63 < 32767);
    docs/deployment.md 5 and tests/test_precision.py. A weight read by several ops is halved once."""
    import paddle
    block, done = program.global_block(), set()
    for op in block.ops:
        name = op.input("X")[0] if op.type == "dequantize_linear" else None
        if name is None or not block.var(name).persistable or name in done:
            continue
        done.add(name)
        weights = scope.find_var(op.input("X")[0]).get_tensor()
        scale = scope.find_var(op.input("Scale")[0]).get_tensor()
        w, s = np.array(weights), np.array(scale)
        weights.set(np.clip(np.round(w.astype(np.float32) / 2), -63, 63).astype(w.dtype),
                    paddle.CPUPlace())
        scale.set((2 * s).astype(s.dtype), paddle.CPUPlace())


def _record_weight_bits(model_dir, bits):
    """Write the QDQ program's weight bits into ``model_dir/deploy.yaml`` (read by the OpenVINO
    int8 predictor, which refuses 8-bit weights on CPUs without VNNI/AMX)."""
    import yaml
    path = os.path.join(model_dir, "deploy.yaml")
    with open(path) as f:
        info = yaml.safe_load(f)
    info["Deploy"][du.paddle_inference.WEIGHT_BITS_KEY] = bits
    du.write_bytes_atomic(path, yaml.safe_dump(info, sort_keys=False).encode())


def _lite_x86_miou_child(nb, pairs, transforms, num_classes, queue):
    queue.put(miou(du.LitePredictor(nb), pairs, transforms, num_classes))


def lite_x86_miou(nb, pairs, transforms, num_classes):
    """``(mIoU, None)`` of an x86 ``.nb`` on the Lite runtime, run in a child process: Lite's x86
    int8 convolution can segfault (SegFormer++-B0's PTQ model in ``repack_bias``, measured), which
    must not take the whole quantization run down; then ``(nan, reason)``."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_lite_x86_miou_child,
                            args=(nb, pairs, transforms, num_classes, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        return float("nan"), "the runtime crashed (exit code {}), not evaluated".format(
            child.exitcode)
    return queue.get(), None
