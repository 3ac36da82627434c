"""Mixing Attention of MixFormer (Chen et al., "MixFormer: Mixing Features across Windows and
Dimensions", CVPR 2022, Sec. 3.1 and Fig. 2).

The channels are projected into two halves that run in parallel: local-window self-attention (with
Swin's relative position bias) on ``C/2`` channels and a 3x3 depth-wise convolution on ``C``
channels projected to ``C/2``. Two interactions connect them (Sec. 3.1, "Bi-directional
Interactions", Fig. 2):

* channel interaction, conv -> attention: global average pool of the conv branch, 1x1 conv (C/8),
  BN, GELU, 1x1 conv (C/2), sigmoid: an SE-like gate on the attention's values;
* spatial interaction, attention -> conv: 1x1 conv (C/16), BN, GELU, 1x1 conv (1), sigmoid on the
  attention output: a spatial gate on the conv branch.

The two branches are normalised (LayerNorm / BN), concatenated and projected back to ``C``.
Parameter names and arithmetic follow PaddleClas's ``MixingAttention`` (PR 1820, 60239c9), so its
ImageNet checkpoints load; here the layer works on the whole padded map (``B, Hp, Wp, C``) rather
than on windows, which is the same function (token-wise projections commute with partitioning).
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.models import layers

from .windows import window_partition, window_reverse


def relative_position_index(window_size):
    """Swin's ``(N, N)`` index into the ``(2ws-1)^2`` relative position bias table, N = ws * ws."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij"))
    coords = coords.reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
    return (rel[:, :, 0] * (2 * window_size - 1) + rel[:, :, 1]).astype("int64")


class MixingAttention(nn.Layer):
    """Parallel window attention and depth-wise conv with bi-directional interactions (Fig. 2).

    Args:
        dim: channels ``C`` (even, >= 16; the attention runs on ``C/2``).
        num_heads: attention heads (of ``C/2`` channels).
        window_size: side of the square local windows (7).
        dwconv_kernel_size: kernel of the depth-wise conv (3).
        qkv_bias: bias of the q/k/v projection.
        qk_scale: overrides ``head_dim ** -0.5``.
        attn_drop, proj_drop: dropout rates.

    ``forward(x)``: ``x`` is ``(B, Hp, Wp, C)`` with ``Hp``, ``Wp`` multiples of ``window_size``.
    """

    def __init__(self, dim, num_heads, window_size=7, dwconv_kernel_size=3, qkv_bias=True,
                 qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        if dim < 16 or dim % 2 or (dim // 2) % num_heads:
            raise ValueError("MixingAttention needs an even dim >= 16 and dim/2 a multiple of "
                             "num_heads, got dim={}, num_heads={}".format(dim, num_heads))
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        half = dim // 2
        self.scale = qk_scale or (half // num_heads) ** -0.5
        self.relative_position_bias_table = self.create_parameter(
            shape=[(2 * window_size - 1) ** 2, num_heads],
            default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        # a persistable buffer, as in PaddleClas (their checkpoints carry it)
        self.register_buffer("relative_position_index",
                             paddle.to_tensor(relative_position_index(window_size)))
        self.proj_attn = nn.Linear(dim, half)
        self.proj_attn_norm = nn.LayerNorm(half)
        self.proj_cnn = nn.Linear(dim, dim)
        self.proj_cnn_norm = nn.LayerNorm(dim)
        self.dwconv3x3 = nn.Sequential(
            nn.Conv2D(dim, dim, dwconv_kernel_size, padding=dwconv_kernel_size // 2, groups=dim),
            layers.SyncBatchNorm(dim), nn.GELU())
        self.channel_interaction = nn.Sequential(
            nn.Conv2D(dim, dim // 8, 1), layers.SyncBatchNorm(dim // 8), nn.GELU(),
            nn.Conv2D(dim // 8, half, 1))
        self.projection = nn.Conv2D(dim, half, 1)
        self.conv_norm = layers.SyncBatchNorm(half)
        self.qkv = nn.Linear(half, 3 * half, bias_attr=None if qkv_bias else False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.spatial_interaction = nn.Sequential(
            nn.Conv2D(half, dim // 16, 1), layers.SyncBatchNorm(dim // 16), nn.GELU(),
            nn.Conv2D(dim // 16, 1, 1))
        self.attn_norm = nn.LayerNorm(half)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self):
        """``(1, heads, N, N)`` bias from the table (Swin Eq. 4)."""
        n = self.window_size * self.window_size
        bias = paddle.index_select(self.relative_position_bias_table,
                                   self.relative_position_index.reshape([-1]))
        return bias.reshape([n, n, self.num_heads]).transpose([2, 0, 1]).unsqueeze(0)

    def _heads(self, windows):
        """``(Bw, N, C/2)`` -> ``(Bw, heads, N, C/2/heads)``."""
        return windows.reshape([0, 0, self.num_heads, -1]).transpose([0, 2, 1, 3])

    def forward(self, x):
        x_attn = self.proj_attn_norm(self.proj_attn(x))                          # B, Hp, Wp, C/2
        x_cnn = self.proj_cnn_norm(self.proj_cnn(x)).transpose([0, 3, 1, 2])     # B, C, Hp, Wp

        # conv branch, and the channel interaction it sends to the attention (Fig. 2, left)
        x_cnn = self.dwconv3x3(x_cnn)
        channel_gate = F.sigmoid(self.channel_interaction(x_cnn.mean(axis=[2, 3], keepdim=True)))
        x_cnn = self.projection(x_cnn)                                           # B, C/2, Hp, Wp

        # window attention, values gated per channel
        q, k, v = paddle.split(self.qkv(x_attn), 3, axis=-1)
        v = v * channel_gate.transpose([0, 2, 3, 1])
        q, _ = window_partition(q, self.window_size)
        k, _ = window_partition(k, self.window_size)
        v, grid = window_partition(v, self.window_size)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        attn = paddle.matmul(q * self.scale, k, transpose_y=True) + self.relative_position_bias()
        attn = self.attn_drop(F.softmax(attn, axis=-1))
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).flatten(2)          # Bw, N, C/2
        x_attn = window_reverse(out, grid, self.window_size)                     # B, Hp, Wp, C/2

        # spatial interaction, attention -> conv (Fig. 2, right)
        spatial_gate = F.sigmoid(self.spatial_interaction(x_attn.transpose([0, 3, 1, 2])))
        x_cnn = self.conv_norm(spatial_gate * x_cnn).transpose([0, 2, 3, 1])    # B, Hp, Wp, C/2

        x = paddle.concat([self.attn_norm(x_attn), x_cnn], axis=-1)
        return self.proj_drop(self.proj(x))

    def extra_repr(self):
        return "dim={}, num_heads={}, window_size={}".format(self.dim, self.num_heads,
                                                             self.window_size)
