"""Token merging of SegFormer++ (Kienzle et al., "SegFormer++: Efficient Token-Merging Strategies for
High-Resolution Semantic Segmentation", MIPR 2024, arXiv 2405.14467, Sec. 3).

Two ways to shrink the token sets of MiT's efficient self-attention, per stage:

* ``bsm`` -- bipartite soft matching over ``sx x sy`` windows (ToMe for Stable Diffusion, as the paper
  uses it with ``no_rand=True``): the top-left token of each window is a destination, every other
  token (including the border tokens outside the last whole window) is a source; each source picks
  its most cosine-similar destination; the ``r = int(N * ratio)`` sources with the highest
  similarity are averaged into their destination together with it; unmerging copies a destination's
  value back to every source merged into it. Deterministic.
* ``n2d`` -- neighbour merging: ``s x s`` average pooling (ceil mode: partial border windows average
  their valid tokens), unmerged by nearest upsampling (as a repeat: reshape + concat).

Keys/values are merged after the spatial-reduction conv + norm and are never unmerged; queries are
merged before attention and unmerged after it (the MixFFN sees every token).

Deployment: everything here is gathers, a one-hot matmul (the mean of merged tokens, instead of a
``scatter_reduce``), ``argsort`` (``topk`` when exported)/``argmax``, pooling, reshape and concat
-- ops Paddle Inference (oneDNN and OpenVINO), ONNX and Paddle Lite have. ``bsm`` needs the token grid size at export (fixed input H/W); ``n2d`` works
with any input size.
"""
import dataclasses
import math
from typing import Optional, Tuple

import paddle
import paddle.nn.functional as F

from .shape import dim

MODES = (None, "bsm", "n2d")


@dataclasses.dataclass(frozen=True)
class TokenMergingConfig:
    """Merging of one MiT stage (every block of the stage uses it), the paper's ``tome_cfg`` keys.

    Args:
        kv_mode: ``None``, ``"bsm"`` or ``"n2d"`` for the (spatially reduced) keys/values.
        kv_r: fraction of key/value tokens removed by ``bsm`` (``r = int(N_kv * kv_r)``).
        kv_sx, kv_sy: ``bsm`` window (one destination per window) for keys/values.
        kv_s: ``n2d`` pooling window ``(sy, sx)`` for keys/values.
        q_mode, q_r, q_sx, q_sy, q_s: the same for the queries (merged, then unmerged after attention).
    """
    kv_mode: Optional[str] = None
    kv_r: float = 0.0
    kv_sx: int = 2
    kv_sy: int = 2
    kv_s: Tuple[int, int] = (2, 2)
    q_mode: Optional[str] = None
    q_r: float = 0.0
    q_sx: int = 2
    q_sy: int = 2
    q_s: Tuple[int, int] = (2, 2)

    def __post_init__(self):
        for side in ("kv", "q"):
            mode = getattr(self, side + "_mode")
            if mode not in MODES:
                raise ValueError("{}_mode must be one of {}, got {!r}".format(side, list(MODES), mode))
            ratio = getattr(self, side + "_r")
            if mode == "bsm" and not 0.0 < ratio < 1.0:
                raise ValueError("{}_r is the fraction of tokens merged away and must lie in (0, 1), "
                                 "got {!r}".format(side, ratio))
            for name in (side + "_sx", side + "_sy"):
                if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                    raise ValueError("{} must be a positive int, got {!r}".format(
                        name, getattr(self, name)))
            if mode == "bsm" and getattr(self, side + "_sx") * getattr(self, side + "_sy") < 2:
                raise ValueError("a 1x1 {} window has no source token to merge".format(side))
            s = getattr(self, side + "_s")
            s = (s, s) if isinstance(s, int) else tuple(s)
            if len(s) != 2 or not all(isinstance(v, int) and v >= 1 for v in s):
                raise ValueError("{}_s must be a positive int or a pair (sy, sx), got {!r}".format(
                    side, getattr(self, side + "_s")))
            object.__setattr__(self, side + "_s", s)

    @property
    def active(self):
        return self.kv_mode is not None or self.q_mode is not None


NO_MERGING = (TokenMergingConfig(),) * 4
_HQ_KV = TokenMergingConfig(kv_mode="bsm", kv_r=0.6, kv_sx=2, kv_sy=2)
_HQ_Q = TokenMergingConfig(q_mode="bsm", q_r=0.8, q_sx=4, q_sy=4)
_FAST_KV = TokenMergingConfig(kv_mode="bsm", kv_r=0.9, kv_sx=4, kv_sy=4)
_FAST_Q = TokenMergingConfig(q_mode="bsm", q_r=0.9, q_sx=4, q_sy=4)
_N2D = TokenMergingConfig(q_mode="n2d", q_s=(2, 2))


@dataclasses.dataclass(frozen=True)
class TokenMergingStrategy:
    """A whole-backbone strategy: one :class:`TokenMergingConfig` per stage, and whether the input
    is downsampled by 0.5 (nearest) before stage 1 (the paper's "Downsampling" baseline)."""
    stages: Tuple[TokenMergingConfig, ...] = NO_MERGING
    downsample: bool = False


# The paper's configs (KieDani/SegformerPlusPlus mmsegmentation/local_configs/cityscapes/B5/*.py).
PRESETS = {
    "none": TokenMergingStrategy(),
    "hq": TokenMergingStrategy((_HQ_KV, _HQ_KV, _HQ_Q, _HQ_Q)),
    "fast": TokenMergingStrategy((_FAST_KV, _FAST_KV, _FAST_Q, _FAST_Q)),
    "2x2": TokenMergingStrategy((_N2D,) * 4),
    "downsample": TokenMergingStrategy(NO_MERGING, downsample=True),
}


def resolve_token_merging(spec):
    """Turn a user's ``token_merging`` value into a :class:`TokenMergingStrategy`.

    Accepts ``None`` (no merging), a preset name (``none``, ``hq``, ``fast``, ``2x2``,
    ``downsample``), a strategy, or a list of 4 per-stage configs (each a
    :class:`TokenMergingConfig`, a dict of its fields, or ``None``).
    """
    if spec is None:
        return PRESETS["none"]
    if isinstance(spec, TokenMergingStrategy):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key not in PRESETS:
            raise ValueError("Unknown token_merging {!r}; valid presets: {} (or None, or a list of 4 "
                             "per-stage dicts with keys {})".format(
                                 spec, sorted(PRESETS), _field_names()))
        return PRESETS[key]
    if isinstance(spec, (list, tuple)):
        if len(spec) != 4:
            raise ValueError("token_merging as a list needs one entry per MiT stage (4), got {}"
                             .format(len(spec)))
        return TokenMergingStrategy(tuple(_stage_config(s) for s in spec))
    raise ValueError("token_merging must be None, a preset name {} or a list of 4 per-stage dicts, "
                     "got {!r}".format(sorted(PRESETS), spec))


def _field_names():
    return [f.name for f in dataclasses.fields(TokenMergingConfig)]


def _stage_config(spec):
    if spec is None:
        return TokenMergingConfig()
    if isinstance(spec, TokenMergingConfig):
        return spec
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(_field_names()))
        if unknown:
            raise ValueError("Unknown token merging keys {}; valid keys: {}".format(
                unknown, _field_names()))
        return TokenMergingConfig(**spec)
    raise ValueError("A per-stage token merging entry must be a dict, None or TokenMergingConfig, "
                     "got {!r}".format(spec))


# ---------------------------------------------------------------------------------------------
# Bipartite soft matching


def bsm_num_removed(num_tokens, h, w, sx, sy, ratio):
    """Tokens removed by ``bsm`` on an ``h x w`` grid: ``int(N * ratio)``, at most the number of
    sources; 0 when the grid holds no whole window (no destination)."""
    num_dst = (h // sy) * (w // sx)
    if num_dst == 0:
        return 0
    return max(0, min(int(num_tokens * ratio), num_tokens - num_dst))


def _split(x, h, w, sx, sy):
    """Split grid tokens (B, h*w, C) into destinations (B, Nd, C) -- the top-left token of each
    whole ``sy x sx`` window, in raster order of the windows -- and sources (B, Ns, C): the rest of
    each window, then the right border columns, then the bottom border rows. Only reshapes and
    slices (no index constants, which Paddle Lite cannot read from Paddle 3 exports)."""
    c = x.shape[2]
    hsy, wsx = h // sy, w // sx
    hh, ww = hsy * sy, wsx * sx
    grid = x.reshape([-1, h, w, c])
    core = _slice(_slice(grid, 1, 0, hh), 2, 0, ww)
    # 4-D, not 5-D, transposes: Paddle Lite fuses reshape/transpose[0,2,1,3,4]/reshape into a
    # (here wrong) shuffle_channel
    core = core.reshape([-1, sy, wsx, sx * c]).transpose([0, 2, 1, 3])
    core = core.reshape([-1, hsy * wsx, sy * sx, c])
    first, rest = paddle.split(core, [1, sy * sx - 1], axis=2)
    parts = [rest.reshape([-1, hsy * wsx * (sy * sx - 1), c])]
    if ww < w:
        parts.append(_slice(_slice(grid, 1, 0, hh), 2, ww, w).reshape([-1, hh * (w - ww), c]))
    if hh < h:
        parts.append(_slice(grid, 1, hh, h).reshape([-1, (h - hh) * w, c]))
    return first.reshape([-1, hsy * wsx, c]), paddle.concat(parts, axis=1)


def _slice(x, axis, start, end):
    """``x[start:end]`` along ``axis`` with explicit bounds (Paddle Lite's x86 ``slice`` mis-sizes
    the open-ended slices Paddle 3 writes)."""
    return paddle.slice(x, axes=[axis], starts=[start], ends=[end])


def _unsplit(dst, src, h, w, sx, sy):
    """Inverse of :func:`_split`: back to (B, h*w, C) in raster order."""
    c = dst.shape[2]
    hsy, wsx = h // sy, w // sx
    hh, ww = hsy * sy, wsx * sx
    n_core = hsy * wsx * (sy * sx - 1)
    core = paddle.concat([dst.unsqueeze(2),
                          _slice(src, 1, 0, n_core).reshape([-1, hsy * wsx, sy * sx - 1, c])],
                         axis=2)
    core = core.reshape([-1, wsx, sy, sx * c]).transpose([0, 2, 1, 3]).reshape([-1, hh, ww, c])
    offset = n_core
    if ww < w:
        right = _slice(src, 1, offset, offset + hh * (w - ww)).reshape([-1, hh, w - ww, c])
        core = paddle.concat([core, right], axis=2)
        offset += hh * (w - ww)
    if hh < h:
        bottom = _slice(src, 1, offset, offset + (h - hh) * w).reshape([-1, h - hh, w, c])
        core = paddle.concat([core, bottom], axis=1)
    return core.reshape([-1, h * w, c])


def _batched_gather(x, index):
    """``out[b, k] = x[b, index[b, k]]`` for ``x`` (B, M, C) and int64 ``index`` (B, K), with plain
    ``gather`` on the flattened batch (Paddle Lite has no ``take_along_axis``)."""
    m, c = x.shape[1], x.shape[2]
    offsets = paddle.arange(dim(x, 0), dtype="int64").unsqueeze(1) * m
    out = paddle.gather(x.reshape([-1, c]), (index + offsets).reshape([-1]), axis=0)
    return out.reshape([-1, index.shape[1], c])


def _order(x, descending=False):
    """Indices sorting the last axis of ``x``: ``argsort`` in dygraph, a full-length ``topk`` in
    exported graphs. Same order (ties aside, as for any two sorts); OpenVINO's Paddle front-end
    (Paddle Inference's OpenVINO engine) converts ``top_k_v2`` but has no ``argsort``. The ranks of
    a permutation are sorted as float32: exact below 2**24 tokens, and Paddle Lite's ARM top-k
    kernel is float-only."""
    if paddle.in_dynamic_mode():
        return paddle.argsort(x, axis=-1, descending=descending)
    # always largest-first: Paddle Lite's x86 top_k_v2 returned a wrong order with largest=False
    return paddle.topk(x if descending else -x, k=x.shape[-1], axis=-1, sorted=True)[1]


class BipartiteSoftMatching:
    """Match the tokens of ``metric`` (B, N, C), an ``h x w`` grid, once; then :meth:`merge` any
    tensor with the same tokens (B, N, C') to (B, N - r, C') and :meth:`unmerge` back to (B, N, C').

    Merged layout is ``[unmerged sources | destinations]`` (not spatial; attention does not care,
    so the result equals the paper's up to exact ties of similarity). The matching itself is not
    differentiated (indices only); merge/unmerge are.
    """

    def __init__(self, metric, h, w, sx, sy, ratio):
        if not all(isinstance(v, int) for v in (h, w)):
            raise ValueError(
                "bsm token merging needs the token grid size when the graph is built: export with a "
                "fixed input height and width (e.g. InputSpec [None, 3, 1024, 1024] / "
                "--input_shape 1 3 1024 1024), or use the '2x2'/'downsample' strategies, which take "
                "any size")
        self.grid = (h, w, sx, sy)
        self.num_dst = (h // sy) * (w // sx)
        self.num_src = h * w - self.num_dst
        self.r = bsm_num_removed(h * w, h, w, sx, sy, ratio)
        if self.r == 0:
            return
        m = metric.detach()
        m = m / paddle.sqrt(paddle.sum(m * m, axis=-1, keepdim=True))
        dst, src = _split(m, *self.grid)
        scores = paddle.matmul(src, dst, transpose_y=True)             # B, Ns, Nd cosine
        node_max = paddle.max(scores, axis=-1)                          # best destination's score
        self.node_idx = paddle.argmax(scores, axis=-1)                  # B, Ns: best destination
        self.edge_idx = _order(node_max, descending=True)               # most similar first
        self.rank = _order(self.edge_idx.astype("float32"))             # position in that order
        # B, Ns: the top-r sources (a 1-D bound: Paddle Lite rejects 0-D fill_constant tensors)
        self.is_merged = self.rank < paddle.full([1], self.r, dtype="int64")

    def merge(self, x):
        """(B, N, C) -> (B, N - r, C): unmerged sources, then each destination averaged with the
        sources merged into it (``scatter_reduce(mean, include_self=True)`` as a one-hot matmul)."""
        if self.r == 0:
            return x
        dst, src = _split(x, *self.grid)
        unmerged = _batched_gather(src, _slice(self.edge_idx, 1, self.r, self.num_src))
        assign = F.one_hot(self.node_idx, self.num_dst).astype(x.dtype)
        assign = assign * self.is_merged.astype(x.dtype).unsqueeze(-1)     # B, Ns, Nd
        sums = paddle.matmul(assign, src, transpose_x=True)                # B, Nd, C
        counts = paddle.sum(assign, axis=1).unsqueeze(-1)                  # B, Nd, 1
        return paddle.concat([unmerged, (dst + sums) / (counts + 1.0)], axis=1)

    def unmerge(self, x):
        """(B, N - r, C) -> (B, N, C): every token takes its own value, or its destination's if it
        was merged."""
        if self.r == 0:
            return x
        num_unmerged = self.num_src - self.r
        src_pos = paddle.where(self.is_merged, self.node_idx + num_unmerged,
                               self.rank - self.r)                                 # B, Ns
        dst = _slice(x, 1, num_unmerged, num_unmerged + self.num_dst)
        return _unsplit(dst, _batched_gather(x, src_pos), *self.grid)


# ---------------------------------------------------------------------------------------------
# Neighbour 2-D merging


def neighbor_merge_2d(x, h, w, s):
    """(B, h*w, C) -> (B, ceil(h/sy) * ceil(w/sx), C) by ``s = (sy, sx)`` average pooling with ceil
    mode (a partial border window averages its valid tokens). Returns the tokens and their grid."""
    c = x.shape[2]
    x = x.transpose([0, 2, 1]).reshape([0, c, h, w])
    x = F.avg_pool2d(x, kernel_size=list(s), stride=list(s), ceil_mode=True)
    return x.flatten(2).transpose([0, 2, 1]), (dim(x, 2), dim(x, 3))


def neighbor_unmerge_2d(x, merged_hw, hw, s=(2, 2)):
    """Inverse of :func:`neighbor_merge_2d`: nearest upsampling of the merged grid back to ``hw``.

    Written as a repeat (reshape + concat of copies, then a crop of the partial border window) wherever that
    equals nearest resizing (``src = floor(dst * in / out)``): always for windows of 1 or 2, and
    for any window when the sizes are known and the index maps agree. A ``nearest_interp`` op in the
    program would turn oneDNN's fast bilinear path off for all its resizes in Paddle Inference
    (:func:`paddle_rtseg.deploy_utils.onednn_resize_is_exact`); the repeat also skips the two
    token <-> NCHW transposes."""
    (hm, wm), (h, w) = merged_hw, hw
    sy, sx = s
    if not (_repeat_is_nearest(hm, h, sy) and _repeat_is_nearest(wm, w, sx)):
        return _nearest_resize(x, merged_hw, hw)
    c = x.shape[2]
    x = _repeat(x.reshape([0, 0, 1, c]), sx).reshape([0, hm, -1, c])   # B, hm, wm * sx, C
    if not _known_equal(w, wm, sx):
        x = paddle.slice(x, axes=[2], starts=[0], ends=[w])
    x = _repeat(x.reshape([0, 0, 1, -1]), sy).reshape([0, -1, c])
    if not _known_equal(h, hm, sy):                                     # B, hm * sy * w, C
        x = paddle.slice(x, axes=[1], starts=[0], ends=[h * w])          # raster order: first h rows
    return x


def _repeat(x, times):
    """``x`` repeated ``times`` along axis 2 (size 1): a concat of copies, which every backend runs
    as plain copies (Paddle Inference's CPU ``expand_v2`` took a quarter of B0's 2x2 run time)."""
    return x if times == 1 else paddle.concat([x] * times, axis=2)


def _known_equal(full, merged, s):
    return isinstance(full, int) and isinstance(merged, int) and full == merged * s


def _repeat_is_nearest(merged, full, s):
    """Whether ``dst // s`` is nearest resizing's ``floor(dst * merged / full)`` for every ``dst``."""
    if s <= 2:
        return True
    if not (isinstance(merged, int) and isinstance(full, int)):
        return False
    return all(int(d * (merged / full)) == d // s for d in range(full))


def _nearest_resize(x, merged_hw, hw):
    c = x.shape[2]
    x = x.transpose([0, 2, 1]).reshape([0, c, merged_hw[0], merged_hw[1]])
    if all(isinstance(v, int) for v in hw):
        size = list(hw)
    else:  # a 1-D [H, W] tensor (Paddle Lite's interpolate wants exactly that)
        size = paddle.concat([paddle.reshape(paddle.to_tensor(v, "int32") if isinstance(v, int) else
                                             v.astype("int32"), [1]) for v in hw])
    x = F.interpolate(x, size=size, mode="nearest")
    return x.flatten(2).transpose([0, 2, 1])


def merged_token_counts(strategy, h, w, sr_ratios=(8, 4, 2, 1), strides=(4, 2, 2, 2),
                        patch_sizes=(7, 3, 3, 3)):
    """Per stage ``(queries, keys/values)`` seen by attention for an ``h x w`` input (no compute).
    Reproduces SegFormer++'s token bookkeeping (REFERENCES §9 counts at 1024x1024)."""
    strategy = resolve_token_merging(strategy)
    if strategy.downsample:
        h, w = int(h * 0.5), int(w * 0.5)
    counts = []
    for cfg, sr, stride, k in zip(strategy.stages, sr_ratios, strides, patch_sizes):
        pad = k // 2
        h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        hk, wk = (h // sr, w // sr) if sr > 1 else (h, w)
        counts.append((_count(cfg, "q", h, w), _count(cfg, "kv", hk, wk)))
    return counts


def _count(cfg, side, h, w):
    mode = getattr(cfg, side + "_mode")
    if mode == "bsm":
        sx, sy = getattr(cfg, side + "_sx"), getattr(cfg, side + "_sy")
        return h * w - bsm_num_removed(h * w, h, w, sx, sy, getattr(cfg, side + "_r"))
    if mode == "n2d":
        sy, sx = getattr(cfg, side + "_s")
        return math.ceil(h / sy) * math.ceil(w / sx)
    return h * w
