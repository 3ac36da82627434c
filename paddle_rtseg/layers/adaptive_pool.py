"""Adaptive pooling that computes exactly the same bins in dygraph, Paddle Inference, ONNX and Lite.

``nn.AdaptiveMaxPool2D`` uses bins ``[floor(i*L/n), ceil((i+1)*L/n))``. Exporters turn it into a
fixed-window pooling that only approximates those bins unless ``L`` is a multiple of ``n``
(paddle2onnx: 2.4% logit error on RTFormer at 512x1024). Here one gather per axis lays the bins out
as ``K = ceil(L/n) + 1`` runs of ``n`` (no bin is longer than ``K``; a shorter bin of length ``l``
wraps around, run ``j`` taking its element ``j mod l``, which cannot change its max), and a max over
the run axis is the adaptive max, exactly.
Max is separable, so H then W gives the 2-D pool.

The indices are computed with a few integer ops (``arange``, ``+``, ``-``, ``*``, ``//``) from the
size, a constant when it is known and the runtime shape otherwise, so every export runs the same
~30 small ops and none is a constant tensor (Paddle Lite 2.13 cannot read the constant tensors
Paddle 3.0 writes). A max over one slice per bin needed ~100 ops and cost 3-4x more in Paddle
Inference.

Why ``j mod l`` (as ``j - (j // l) * l``) and not ``minimum(start + j, end - 1)``: Paddle Lite's ARM
``elementwise_min``/``max`` have float kernels only, so ``opt`` wraps an int64 ``minimum`` in casts
and a float tensor reaches ``gather`` as its index, which aborts on ARM at run time
(``gather_compute.cc: Unsupported this index precision: float``). ``+ - * //`` run on int64 in every
backend, and the function (the pooled values) is unchanged. The ``//`` divides a full ``(K, bins)``
tensor by a ``(1, bins)`` one: OpenVINO's Paddle front-end (Paddle Inference's OpenVINO engine)
converts ``elementwise_floordiv`` only when the divisor broadcasts one way, and ``(K, 1) // (1, bins)``
left RTFormer unconvertible.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .shape import dim


@paddle.jit.not_to_static  # plain Python at export: the int/tensor branch is resolved while tracing
def _bin_indices(length, bins):
    """``(K, bins)`` indices, run-major: column ``i`` lists bin ``i`` of an axis of ``length``,
    cyclically up to ``K = ceil(length / bins) + 1`` entries. ``length`` is an int when
    known (then ``K`` is a constant) or a 0-D int tensor from the runtime shape."""
    if not isinstance(length, int):
        length = length.astype("int64")
    longest = (length + bins - 1) // bins + 1
    i = paddle.arange(bins, dtype="int64")
    start = i * length // bins
    end = ((i + 1) * length + bins - 1) // bins
    size = (end - start).unsqueeze(0)                       # (1, bins), every bin >= 1 long
    start = start.unsqueeze(0)                              # (1, bins)
    runs = start + paddle.arange(longest, dtype="int64").unsqueeze(1)  # (K, bins): start + j
    offsets = runs - start                                  # j, as a full (K, bins) tensor
    return runs - (offsets // size) * size


def adaptive_max_pool2d(x, output_size):
    """Exact ``F.adaptive_max_pool2d(x, output_size)`` for NCHW ``x``; ``output_size = (h, w)``."""
    bins_h, bins_w = output_size
    channels = x.shape[1]
    index_h = _bin_indices(dim(x, 2), bins_h).flatten()
    index_w = _bin_indices(dim(x, 3), bins_w).flatten()
    y = paddle.gather(x.flatten(0, 1), index_h, axis=1)                 # NC, K_h * bins_h, W
    y = y.unsqueeze(1).reshape([0, -1, bins_h, 0]).max(axis=1)           # NC, bins_h, W
    y = paddle.gather(y, index_w, axis=2)                                # NC, bins_h, K_w * bins_w
    y = y.reshape([0, 0, -1, bins_w]).max(axis=2)                        # NC, bins_h, bins_w
    return y.reshape([-1, channels, bins_h, bins_w])


class _AdaptivePool2D(nn.Layer):
    """An adaptive pooling layer over :attr:`pool` (``pool(x, (h, w))``, NCHW)."""
    pool = None

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(output_size)

    def forward(self, x):
        return self.pool(x, self.output_size)

    def extra_repr(self):
        return "output_size={}".format(self.output_size)


class AdaptiveMaxPool2D(_AdaptivePool2D):
    """Drop-in for ``nn.AdaptiveMaxPool2D(output_size)`` (NCHW) that every backend runs exactly."""
    pool = staticmethod(adaptive_max_pool2d)


@paddle.jit.not_to_static
def _average_matrix(length, bins):
    """``(length, bins)`` float matrix whose column ``i`` averages bin ``[floor(i*L/n),
    ceil((i+1)*L/n))`` of an axis of ``length`` (an int, or a 0-D int tensor at export). Built from
    the size with integer ``*``, ``//``, ``+`` and float ``relu``/``minimum`` (Paddle Lite ARM's
    ``elementwise_min`` is float-only), never from a constant tensor."""
    if not isinstance(length, int):
        length = length.astype("int64")
    i = paddle.arange(bins, dtype="int64")
    start = (i * length // bins).astype("float32").unsqueeze(0)
    end = (((i + 1) * length + bins - 1) // bins).astype("float32").unsqueeze(0)
    j = paddle.arange(length, dtype="int64").astype("float32").unsqueeze(1)
    one = paddle.ones([1], dtype="float32")
    inside = paddle.minimum(F.relu(j - start + 1), one) * paddle.minimum(F.relu(end - j), one)
    return inside / (end - start)


def adaptive_avg_pool2d(x, output_size):
    """Exact ``F.adaptive_avg_pool2d(x, output_size)`` for NCHW ``x`` in every backend: two matrix
    products with the bin-averaging matrices of H and W (exporters otherwise replace the adaptive
    pool by a fixed-window one that only approximates it when a side is not a multiple of the bins)."""
    bins_h, bins_w = output_size
    y = paddle.matmul(x, _average_matrix(dim(x, 3), bins_w))                  # N, C, H, bins_w
    y = paddle.matmul(y.transpose([0, 1, 3, 2]), _average_matrix(dim(x, 2), bins_h))
    return y.transpose([0, 1, 3, 2])                                          # N, C, bins_h, bins_w


class AdaptiveAvgPool2D(_AdaptivePool2D):
    """Drop-in for ``nn.AdaptiveAvgPool2D(output_size)`` (NCHW) that every backend runs exactly."""
    pool = staticmethod(adaptive_avg_pool2d)
