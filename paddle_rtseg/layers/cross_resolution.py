"""Cross-resolution attention (RTFormer, Wang et al., NeurIPS 2022, Sec. 3.3, Eq. 5-6).

The high-resolution branch attends to keys and values computed from the low-resolution branch:
the low-resolution feature is normalised, adaptively max-pooled to ``cross_size x cross_size``
tokens and projected by a 1x1 convolution to ``2 * C_high`` channels, split into K and V (Eq. 5).
Every high-resolution pixel then takes a softmax-weighted sum of those ``T = cross_size^2`` values
(Eq. 6, scale ``T^-0.5``, the paper's "GFA with cross keys").

Written as two batched matmuls with the softmax on the last axis. PaddleSeg computes the same
function with ``conv2d(x, cross_k, groups=batch)``, a convolution whose filter is an activation:
that blocks dynamic-batch export, TensorRT and Paddle Lite (see DESIGN.md), this does not.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .adaptive_pool import AdaptiveMaxPool2D
from .norm import bn2d, conv2d
from .shape import dim


def cross_kv_projection(low_channels, high_channels, cross_size):
    """Eq. 5: ``BN -> exact adaptive max pool (cross_size^2 tokens) -> 1x1 conv to 2*C_high``.
    A ``Sequential`` so that parameter names match PaddleSeg (``cross_kv.0`` BN, ``cross_kv.2`` conv)."""
    return nn.Sequential(
        bn2d(low_channels),
        AdaptiveMaxPool2D(cross_size),
        conv2d(low_channels, 2 * high_channels, 1))


class CrossResolutionAttention(nn.Layer):
    """Attention of high-resolution pixels over low-resolution tokens (RTFormer Eq. 6).

    Args:
        channels: channels of the high-resolution feature (and of K and V).
        num_tokens: number of key/value tokens ``T`` (``cross_size ** 2``); sets the scale ``T^-0.5``.
    """

    def __init__(self, channels, num_tokens):
        super().__init__()
        self.scale = num_tokens ** -0.5
        self.norm = bn2d(channels)

    def forward(self, x, key, value):
        """``x``: (N, C, H, W); ``key``, ``value``: (N, C, T). Returns (N, C, H, W)."""
        h, w = dim(x, 2), dim(x, 3)
        x = self.norm(x).flatten(2)                                        # N, C, HW
        attn = paddle.matmul(x, key, transpose_x=True) * self.scale        # N, HW, T
        attn = F.softmax(attn, axis=-1)
        out = paddle.matmul(value, attn, transpose_y=True)                 # N, C, HW
        return out.reshape([0, 0, h, w])
