"""Squeeze-enhanced axial attention (SeaFormer, Wang et al., ICLR 2023, Sec. 3.2, Fig. 2-3).

Queries, keys and values are 1x1 Conv-BN projections of the input. Two paths use them:

* squeeze axial attention (Eq. 2-4): q/k/v are averaged over W (a sequence along H) and over H (a
  sequence along W); each sequence gets a squeeze-axial positional embedding (q and k) and runs
  multi-head attention along its axis; the row result ``(B, C, H, 1)`` and the column result
  ``(B, C, 1, W)`` are broadcast-added to v, so the global context costs O(H + W) tokens.
* detail enhancement (Eq. 5): ``concat(q, k, v)`` -> 3x3 depthwise Conv-BN -> ReLU6 -> 1x1 Conv-BN,
  a convolutional path that keeps local detail.

The attention result, projected back to the input width, gates the detail path through a hard
sigmoid: ``out = hard_sigmoid(proj(v + row + column)) * detail``. Only convolutions, BatchNorm,
means, matmuls and last-axis softmaxes, so the layer exports everywhere (see axial_position.py for
the positional embedding).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .axial_position import SqueezeAxialPositionalEmbedding
from .conv_bn import ConvBN
from .hard_sigmoid import hard_sigmoid
from .shape import broadcast_explicitly


def axial_mean(x, axis):
    """Mean over spatial ``axis`` (2: H, 3: W) of ``(B, C, H, W)``, kept as size 1: the squeeze of
    Eq. 2. Exported graphs take the mean over W as a mean over H of the transposed map: Paddle
    Inference hands a reduction over the last axis to oneDNN, which runs it on its NHWC tensors with
    its reference kernel (``reduction ref:any`` in ``ONEDNN_VERBOSE=1``: 3-7 ms for one 256x32x32
    map of SeaFormer-L); other axes run in Paddle's own kernel, as the mean over H does. (A 5-D
    ``(B, C, H, W, 1)`` view instead gives wrong values on Paddle Lite x86.)"""
    if axis == 2 or paddle.in_dynamic_mode():
        return paddle.mean(x, axis=axis, keepdim=True)
    return paddle.mean(x.transpose([0, 1, 3, 2]), axis=2, keepdim=True).transpose([0, 1, 3, 2])


class SqueezeAxialAttention(nn.Layer):
    """Multi-head attention along one axis of squeezed q/k/v (Eq. 2-4), then ReLU6 + Conv-BN.

    Args:
        key_channels: channels of q and k (``num_heads * key_dim``).
        value_channels: channels of v (``num_heads * value_dim``).
        num_heads: attention heads.
        axis: 2 attends along H (squeezes W), 3 along W (squeezes H).
    """

    def __init__(self, key_channels, value_channels, num_heads, axis):
        super().__init__()
        if key_channels % num_heads or value_channels % num_heads:
            raise ValueError("key_channels ({}) and value_channels ({}) must be multiples of "
                             "num_heads ({})".format(key_channels, value_channels, num_heads))
        self.num_heads = num_heads
        self.axis = axis
        self.scale = (key_channels // num_heads) ** -0.5
        self.pos_emb_q = SqueezeAxialPositionalEmbedding(key_channels, axis)
        self.pos_emb_k = SqueezeAxialPositionalEmbedding(key_channels, axis)
        self.proj = ConvBN(value_channels, value_channels, bn_weight_init=0.0)


    def _heads(self, x):
        """``(B, C, L)``-like -> ``(B, heads, C / heads, L)``."""
        return x.reshape([0, self.num_heads, x.shape[1] // self.num_heads, -1])

    def forward(self, q, k, v):
        """Squeeze full ``(B, C, H, W)`` maps, then :meth:`attend`."""
        return self.attend(*(axial_mean(t, 5 - self.axis) for t in (q, k, v)))

    def attend(self, q, k, v):
        """Attention over squeezed ``(B, C, L, 1)`` or ``(B, C, 1, L)`` sequences."""
        q = self._heads(self.pos_emb_q(q) * self.scale)  # scale q, not the L x L
        k = self._heads(self.pos_emb_k(k))
        channels = v.shape[1]
        v = self._heads(v)
        attn = F.softmax(paddle.matmul(q, k, transpose_x=True), axis=-1)               # B,h,L,L
        out = paddle.matmul(v, attn, transpose_y=True)                                 # B,h,dv,L
        out = out.reshape([0, channels, -1, 1] if self.axis == 2 else [0, channels, 1, -1])
        return self.proj(F.relu6(out))


class DetailEnhancement(nn.Layer):
    """``concat(q, k, v)`` -> 3x3 depthwise Conv-BN -> ReLU6 -> 1x1 Conv-BN (Eq. 5).

    Args:
        in_channels: channels of ``concat(q, k, v)``.
        out_channels: output channels (the block's width).
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.dwconv = ConvBN(in_channels, in_channels, 3, groups=in_channels, act=nn.ReLU6)
        self.pwconv = ConvBN(in_channels, out_channels)

    def forward(self, qkv):
        """``qkv``: ``concat(q, k, v)`` along channels."""
        return self.pwconv(self.dwconv(qkv))


class SeaAttention(nn.Layer):
    """Squeeze-enhanced axial attention (Fig. 2 right).

    Args:
        channels: input and output channels.
        key_dim: channels per head of q and k.
        num_heads: attention heads.
        attn_ratio: value channels per head = ``attn_ratio * key_dim`` (2 in every variant).
    """

    def __init__(self, channels, key_dim, num_heads, attn_ratio=2):
        super().__init__()
        key_channels = key_dim * num_heads
        value_channels = int(attn_ratio * key_dim) * num_heads
        self.to_q = ConvBN(channels, key_channels)
        self.to_k = ConvBN(channels, key_channels)
        self.to_v = ConvBN(channels, value_channels)
        self.detail = DetailEnhancement(2 * key_channels + value_channels, channels)
        self.row = SqueezeAxialAttention(key_channels, value_channels, num_heads, axis=2)
        self.column = SqueezeAxialAttention(key_channels, value_channels, num_heads, axis=3)
        self.proj = ConvBN(value_channels, channels, bn_weight_init=0.0)
        self.split_sizes = [key_channels, key_channels, value_channels]

    def forward(self, x):
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        qkv = paddle.concat([q, k, v], axis=1)
        detail = self.detail(qkv)
        # one squeeze of concat(q, k, v) per axis (means are per channel), split for the attention
        row = self.row.attend(*paddle.split(axial_mean(qkv, 3), self.split_sizes, axis=1))
        column = self.column.attend(*paddle.split(axial_mean(qkv, 2), self.split_sizes, axis=1))
        # v (B,C,H,W) + row (B,C,H,1) + column (B,C,1,W), broadcast explicitly in exported graphs
        context = v + broadcast_explicitly(row, v) + broadcast_explicitly(column, v)
        return hard_sigmoid(self.proj(F.relu6(context))) * detail
