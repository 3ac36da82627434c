"""Adaptive pooling that computes exactly the same bins in dygraph, Paddle Inference, ONNX and Lite.

``nn.AdaptiveMaxPool2D`` uses bins ``[floor(i*L/n), ceil((i+1)*L/n))``. Exporters turn it into a
fixed-window pooling that only approximates those bins unless ``L`` is a multiple of ``n``
(paddle2onnx: 2.4% logit error on RTFormer at 512x1024). Here each bin is an explicit slice followed by
a max, separably along H then W (max is separable, so the result is exact). The slice bounds are
integers when the size is known and shape arithmetic otherwise, so dynamic-H/W exports stay exact.
"""
import paddle
import paddle.nn as nn

from .shape import dim


def _bin_edges(length, bins):
    """Start/end of each adaptive bin; ``length`` is an int or a 0-D int tensor."""
    return [((i * length) // bins, ((i + 1) * length + bins - 1) // bins) for i in range(bins)]


@paddle.jit.not_to_static  # plain Python at export: dy2static would turn the early returns into
def _adaptive_max_1d(x, axis, bins):  # conditional_block ops that Paddle Lite cannot load
    length = dim(x, axis)
    if isinstance(length, int) and length % bins == 0:
        if length == bins:
            return x
        step = length // bins  # equal, non-overlapping bins: one reshape and one max
        if axis == 2:
            return paddle.max(x.reshape([0, 0, bins, step, -1]), axis=3)
        return paddle.max(x.reshape([0, 0, 0, bins, step]), axis=4)
    pieces = [paddle.max(paddle.slice(x, axes=[axis], starts=[start], ends=[end]), axis=axis,
                         keepdim=True)
              for start, end in _bin_edges(length, bins)]
    return paddle.concat(pieces, axis=axis)


class AdaptiveMaxPool2D(nn.Layer):
    """Drop-in for ``nn.AdaptiveMaxPool2D(output_size)`` (NCHW) that every backend runs exactly."""

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(output_size)

    def forward(self, x):
        x = _adaptive_max_1d(x, 2, self.output_size[0])
        return _adaptive_max_1d(x, 3, self.output_size[1])

    def extra_repr(self):
        return "output_size={}".format(self.output_size)


class GlobalAvgPool2D(nn.Layer):
    """``nn.AdaptiveAvgPool2D(1)`` as a mean over H and W (a plain reduce_mean in every backend)."""

    def forward(self, x):
        return paddle.mean(x, axis=[2, 3], keepdim=True)
