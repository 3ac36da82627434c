"""The one operation counter of the project: multiply-accumulates (MACs) of a forward pass, and the
sgemm throughput of this process, to put a measured latency in GFLOP/s next to it.

``paddle.flops`` counts layers (``nn.Conv2D``, ``nn.Linear``...) through forward hooks, so it misses
every ``paddle.matmul`` / ``@`` (attention: ``q k^T`` and ``attn v``) and every functional
``F.conv2d`` (e.g. a filter computed from parameters). :func:`count_macs` counts at the operator
entry points instead (``paddle._C_ops``, which layers and functionals both call in dygraph, and
``Tensor.__matmul__``), from the shapes of the real tensors of one forward:

* ``conv2d`` / ``depthwise_conv2d``: output elements x ``C_in / groups`` x ``k_h`` x ``k_w``;
* ``conv2d_transpose``: input elements x ``C_out / groups`` x ``k_h`` x ``k_w``;
* ``matmul`` (``paddle.matmul``, ``@``, ``paddle.mm``), ``bmm``, ``linear``, ``addmm``: output
  elements x the contracted length.

Element-wise ops, normalisation, softmax, pooling and resizing are not counted (the usual
convention, as in fvcore and the papers' tables); FLOPs are ``2 x MACs``.

:func:`count_bitops` weighs the same MACs by their operands' bit widths (the low-bit papers'
BitOPs, e.g. PalQuant's comparison at equal BitOPs): a MAC of a quantized convolution with
``b_w``-bit weights and ``b_a``-bit activations costs ``b_w x b_a`` bit operations, every other MAC
(full-precision layers) ``32 x 32``.
"""
import contextlib
import time

import numpy as np
import paddle
from paddle import _C_ops

_CONVS = ("conv2d", "depthwise_conv2d", "conv3d")
_TRANSPOSED_CONVS = ("conv2d_transpose", "depthwise_conv2d_transpose")


def _numel(t):
    return int(np.prod(t.shape)) if len(t.shape) else 1


def _contracted(x, transpose_x=False):
    if len(x.shape) == 1:
        return x.shape[0]
    return x.shape[-2] if transpose_x else x.shape[-1]


def _macs(name, args, out):
    if name in _CONVS:
        weight = args[1]
        return _numel(out) * _numel(weight) // weight.shape[0]
    if name in _TRANSPOSED_CONVS:
        weight = args[1]
        return _numel(args[0]) * _numel(weight) // weight.shape[0]
    if name == "matmul":
        return _numel(out) * _contracted(args[0], bool(args[2]) if len(args) > 2 else False)
    if name in ("bmm", "linear"):
        return _numel(out) * (args[1].shape[-2] if name == "bmm" else args[1].shape[0])
    if name == "addmm":
        return _numel(out) * args[1].shape[-1]
    return 0


@contextlib.contextmanager
def _counting(totals):
    """Wrap the counted ``_C_ops`` entry points (and ``Tensor.__matmul__``) while inside."""
    saved = {}

    def wrap(name, fn):
        def counted(*args, **kwargs):
            out = fn(*args, **kwargs)
            first = out[0] if isinstance(out, (list, tuple)) else out
            totals[name] = totals.get(name, 0) + _macs(name, args, first)
            return out
        return counted

    for name in _CONVS + _TRANSPOSED_CONVS + ("matmul", "bmm", "linear", "addmm"):
        if hasattr(_C_ops, name):
            saved[name] = getattr(_C_ops, name)
            setattr(_C_ops, name, wrap(name, saved[name]))
    tensor_saved = {}
    for dunder, swap in (("__matmul__", False), ("__rmatmul__", True)):
        if hasattr(paddle.Tensor, dunder):
            tensor_saved[dunder] = getattr(paddle.Tensor, dunder)

            def matmul_method(self, other, _swap=swap):
                x, y = (other, self) if _swap else (self, other)
                return paddle.matmul(x, y)  # counted through _C_ops.matmul
            setattr(paddle.Tensor, dunder, matmul_method)
    try:
        yield totals
    finally:
        for name, fn in saved.items():
            setattr(_C_ops, name, fn)
        for dunder, fn in tensor_saved.items():
            setattr(paddle.Tensor, dunder, fn)


def count_macs(model, input_shape, by_op=False, dtype="float32"):
    """MACs of one ``model(x)`` with ``x`` of ``input_shape`` (eval mode, no grad, dygraph).

    Returns the total (int), or ``(total, {op: macs})`` with ``by_op=True``. ``input_shape`` may
    also be a list of shapes for a model taking several inputs."""
    shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
    inputs = [paddle.zeros(list(s), dtype=dtype) for s in shapes]
    was_training = model.training
    model.eval()
    totals = {}
    try:
        with paddle.no_grad(), _counting(totals):
            model(*inputs)
    finally:
        if was_training:
            model.train()
    total = int(sum(totals.values()))
    return (total, dict(totals)) if by_op else total


def count_bitops(model, input_shape, full_precision_bits=32):
    """BitOPs of one ``model(x)`` (as :func:`count_macs`): a dict with ``macs`` (all),
    ``low_bit_macs`` ({"W{b_w}A{b_a}": MACs} of the quantized convolutions: layers with integer
    ``weight_levels`` / ``act_levels`` = 2**bits, as PalQuant's ``QConv``; a side left at ``None``
    counts ``full_precision_bits``), ``bitops`` (every MAC times its two operand widths) and
    ``low_bit_bitops`` (the quantized convolutions' share)."""
    import math
    bits = {}

    def width(levels):
        return full_precision_bits if levels is None else int(math.ceil(math.log2(levels)))

    def hook(layer, inputs, output):
        if layer.weight_levels is None and layer.act_levels is None:
            return  # a full-precision QConv: counted with the rest
        w = layer.weight
        key = (width(layer.weight_levels), width(layer.act_levels))
        bits[key] = bits.get(key, 0) + _numel(output) * _numel(w) // w.shape[0]

    handles = [m.register_forward_post_hook(hook) for m in model.sublayers(include_self=True)
               if hasattr(m, "weight_levels") and hasattr(m, "act_levels")
               and hasattr(m, "weight")]
    try:
        total = count_macs(model, input_shape)
    finally:
        for h in handles:
            h.remove()
    low = sum(bits.values())
    low_bitops = sum(macs * bw * ba for (bw, ba), macs in bits.items())
    return dict(macs=total, low_bit_macs={"W{}A{}".format(*k): v for k, v in sorted(bits.items())},
                low_bit_bitops=low_bitops,
                bitops=low_bitops + (total - low) * full_precision_bits ** 2)


def sgemm_gflops(n=1024, repeats=5):
    """Achieved float32 GFLOP/s of ``paddle.matmul`` on two ``n x n`` matrices in this process
    (current thread settings; median of ``repeats`` after a warm-up): the roofline against which
    a model's ``2 x MACs / latency`` is read."""
    a = paddle.randn([n, n])
    b = paddle.randn([n, n])
    paddle.matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        paddle.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / float(np.median(times)) / 1e9


def achieved_gflops(macs, seconds):
    """``2 x MACs / seconds`` in GFLOP/s."""
    return 2.0 * macs / seconds / 1e9
