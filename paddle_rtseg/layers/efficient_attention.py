"""MiT efficient self-attention (SegFormer, Xie et al., NeurIPS 2021, Sec. 3.1, Eq. 2) with the token
merging hooks of SegFormer++ (arXiv 2405.14467, Sec. 3; :mod:`.token_merging`).

Keys/values come from the spatially reduced sequence (``sr x sr`` strided conv + LayerNorm), then are
optionally merged; queries are optionally merged before attention and unmerged after the output
projection. Parameter names (``q``, ``kv``, ``proj``, ``sr``, ``norm``) are PaddleSeg's.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .shape import dim
from .token_merging import (BipartiteSoftMatching, TokenMergingConfig, neighbor_merge_2d,
                            neighbor_unmerge_2d)


class EfficientSelfAttention(nn.Layer):
    """Args:
        dim: channels C.  num_heads: attention heads.  qkv_bias: bias of ``q`` / ``kv``.
        sr_ratio: spatial reduction of keys/values (1: none).
        sr_norm_epsilon: epsilon of the LayerNorm after the reduction (PaddleSeg/NVlabs 1e-5, mmseg
            and SegFormer++ 1e-6).
        attn_drop, proj_drop: dropout on attention weights / after the output projection.
        merging: :class:`TokenMergingConfig` of this layer (mutable attribute ``merging``).
    """

    def __init__(self, dim, num_heads, qkv_bias=True, sr_ratio=1, sr_norm_epsilon=1e-5,
                 attn_drop=0.0, proj_drop=0.0, merging=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError("dim ({}) must be divisible by num_heads ({})".format(dim, num_heads))
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias_attr=None if qkv_bias else False)
        self.kv = nn.Linear(dim, dim * 2, bias_attr=None if qkv_bias else False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2D(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, epsilon=sr_norm_epsilon)
        self.merging = merging or TokenMergingConfig()

    def forward(self, x, h, w):
        cfg = self.merging
        c = self.dim
        if self.sr_ratio > 1:
            x_kv = self.sr(x.transpose([0, 2, 1]).reshape([0, c, h, w]))
            h_kv, w_kv = dim(x_kv, 2), dim(x_kv, 3)
            x_kv = self.norm(x_kv.flatten(2).transpose([0, 2, 1]))
        else:
            x_kv, h_kv, w_kv = x, h, w

        if cfg.kv_mode == "bsm":
            x_kv = BipartiteSoftMatching(x_kv, h_kv, w_kv, cfg.kv_sx, cfg.kv_sy, cfg.kv_r).merge(x_kv)
        elif cfg.kv_mode == "n2d":
            x_kv, _ = neighbor_merge_2d(x_kv, h_kv, w_kv, cfg.kv_s)

        x_q = x
        if cfg.q_mode == "bsm":
            matching = BipartiteSoftMatching(x, h, w, cfg.q_sx, cfg.q_sy, cfg.q_r)
            x_q = matching.merge(x)
        elif cfg.q_mode == "n2d":
            x_q, merged_hw = neighbor_merge_2d(x, h, w, cfg.q_s)

        out = self.proj_drop(self.proj(self._attend(x_q, x_kv)))

        if cfg.q_mode == "bsm":
            out = matching.unmerge(out)
        elif cfg.q_mode == "n2d":
            out = neighbor_unmerge_2d(out, merged_hw, (h, w), cfg.q_s)
        return out

    def _attend(self, x_q, x_kv):
        """Multi-head attention of Eq. 2: softmax(q k^T / sqrt(d)) v, heads concatenated.

        The ``1/sqrt(d)`` scale multiplies the queries (N x d), not the N x N' attention matrix.
        In dygraph the queries are processed in blocks (:func:`blocked_attention`)."""
        c, heads = self.dim, self.num_heads
        q = (self.q(x_q) * self.scale).reshape([0, -1, heads, c // heads]).transpose([0, 2, 1, 3])
        kv = self.kv(x_kv).reshape([0, -1, 2, heads, c // heads]).transpose([2, 0, 3, 1, 4])
        k, v = kv[0], kv[1]
        if paddle.in_dynamic_mode() and not (self.training and self.attn_drop.p > 0):
            out = blocked_attention(q, k, v)
        else:
            attn = F.softmax(paddle.matmul(q, k, transpose_y=True), axis=-1)
            out = paddle.matmul(self.attn_drop(attn), v)
        return out.transpose([0, 2, 1, 3]).reshape([0, -1, c])


#: Attention-matrix elements per query block of :func:`blocked_attention` (4 MB of float32: the
#: block stays in cache between the two matmuls and the softmax).
BLOCK_ELEMENTS = 1 << 20


def blocked_attention(q, k, v, block_elements=None):
    """``softmax(q k^T) v`` for (B, heads, N, d) queries, computed for blocks of queries in turn.

    Every query row is computed exactly as in the one-shot form (rows are independent), but the
    ``N x N'`` matrix never exists whole: on CPU the one-shot form streams it through memory three
    times (matmul, softmax, matmul; 256 MB for MiT stage 1 at 1024x1024) and is memory-bound."""
    block_elements = block_elements or BLOCK_ELEMENTS
    b, heads, n = q.shape[0], q.shape[1], q.shape[2]
    n_kv = k.shape[2]
    rows = max(64, block_elements // max(1, b * heads * n_kv))
    if not isinstance(n, int) or n <= rows:
        return paddle.matmul(F.softmax(paddle.matmul(q, k, transpose_y=True), axis=-1), v)
    outs = [paddle.matmul(F.softmax(paddle.matmul(q[:, :, start:start + rows], k, transpose_y=True),
                                    axis=-1), v)
            for start in range(0, n, rows)]
    return paddle.concat(outs, axis=2)
