"""GPU-Friendly Attention (RTFormer, Wang et al., NeurIPS 2022, Sec. 3.2, Eq. 3-4).

External attention keeps a learned key ``K`` (``inter x C_in``) and value ``V`` (``C_out x inter``)
shared by every image and every position, so its cost is linear in the number of pixels:

    GFA(X) = GDN(X K^T) V

Instead of splitting channels into heads (many small matmuls, poor GPU occupancy), the
``inter`` similarity channels are normalised in ``num_heads`` groups by grouped double
normalisation (GDN): a softmax over the pixels, then an L1 normalisation over the channels of each
group. Both K and V are 1x1 convolutions with parameter filters, so the layer exports everywhere.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .norm import bn2d
from .shape import dim


def grouped_double_normalization(x, groups, eps=1e-6):
    """GDN of RTFormer Eq. 4 on ``(N, inter, H, W)`` similarities: softmax over the H*W pixels
    (last axis), then divide by the sum over the ``inter / groups`` channels of each group."""
    n_ch = x.shape[1]
    h, w = dim(x, 2), dim(x, 3)
    x = x.reshape([0, groups, n_ch // groups, -1])
    x = F.softmax(x, axis=-1)
    x = x / (paddle.sum(x, axis=2, keepdim=True) + eps)
    return x.reshape([0, n_ch, h, w])


class GPUFriendlyAttention(nn.Layer):
    """GFA block body: ``BN -> X K^T -> GDN -> V`` (RTFormer Eq. 3).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output; when it differs from ``in_channels`` the key
            projection has stride 2 (RTFormer's low-resolution branch halves resolution there).
        inter_channels: number of external key/value slots.
        num_heads: groups of GDN (the paper's replacement for multi-head attention).
    """

    def __init__(self, in_channels, out_channels, inter_channels, num_heads=8):
        super().__init__()
        if inter_channels % num_heads:
            raise ValueError("inter_channels ({}) must be a multiple of num_heads ({})".format(
                inter_channels, num_heads))
        self.num_heads = num_heads
        self.stride = 1 if in_channels == out_channels else 2
        self.norm = bn2d(in_channels)
        self.k = self.create_parameter(
            shape=(inter_channels, in_channels, 1, 1),
            default_initializer=nn.initializer.Normal(std=0.001))
        self.v = self.create_parameter(
            shape=(out_channels, inter_channels, 1, 1),
            default_initializer=nn.initializer.Normal(std=0.001))

    def forward(self, x):
        x = F.conv2d(self.norm(x), self.k, stride=self.stride)
        x = grouped_double_normalization(x, self.num_heads)
        return F.conv2d(x, self.v)
