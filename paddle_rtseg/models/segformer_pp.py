"""SegFormer++ (Kienzle et al., "SegFormer++: Efficient Token-Merging Strategies for High-Resolution
Semantic Segmentation", MIPR 2024, arXiv 2405.14467): SegFormer (Xie et al., NeurIPS 2021) whose MiT
encoder merges tokens in attention, switchable on the same weights at inference.

Two all-MLP decoders (SegFormer Sec. 3.2, Eq. 4):

* ``head="paddleseg"`` (default) -- PaddleSeg's ``SegFormer``: per-stage Linear to ``embedding_dim``,
  upsample to 1/4, concat in order 4, 3, 2, 1, 1x1 ConvBNReLU, dropout, 1x1 classifier. State-dict keys
  and outputs equal ``paddleseg.models.SegFormer`` (merging off), so PaddleSeg checkpoints load.
* ``head="mmseg"`` -- mmseg's ``SegformerHead`` used by the SegFormer++ checkpoints: per-stage 1x1
  ConvBNReLU, concat in order 1, 2, 3, 4, ``fusion_conv`` ConvBNReLU, dropout, ``conv_seg``.

``convert_torch_state_dict`` maps mmseg / SegFormer++ PyTorch checkpoints onto this model.
"""
import re

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.models import layers

from ..weights.checkpoints import load_pretrained
from ..layers.materialize import exporting, materialize
from ..layers.shape import dim, spatial_size
from ..registry import register
from .mit import MixVisionTransformer

HEADS = ("paddleseg", "mmseg")


class _Linear(nn.Layer):
    """Per-stage token projection of PaddleSeg's head (key ``proj``)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, x):
        out = self.proj(x.flatten(2).transpose([0, 2, 1])).transpose([0, 2, 1])
        return out.reshape([0, 0, dim(x, 2), dim(x, 3)])


class _ConvBNReLU(nn.Layer):
    """mmcv ``ConvModule`` (1x1 conv without bias, BN, ReLU) with mmseg's key names."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, 1, bias_attr=False)
        self.bn = layers.SyncBatchNorm(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


@register(manager.MODELS)
class SegFormerPP(nn.Layer):
    """SegFormer++ segmentor (registered as ``RTSeg_SegFormerPP``).

    Args:
        num_classes: number of classes.
        backbone: a MiT backbone (``RTSeg_MiT_B0``..``RTSeg_MiT_B5``); PaddleSeg's
            ``MixVisionTransformer_B*`` also works when ``token_merging`` is None.
        embedding_dim: decoder width (256 for B0/B1, 768 for B2+ in PaddleSeg; 256 for every
            variant in mmseg's Cityscapes configs).
        head: ``"paddleseg"`` or ``"mmseg"`` decoder (see module docstring).
        token_merging: SegFormer++ strategy applied to the backbone: a preset ``hq``, ``fast``,
            ``2x2``, ``downsample`` or ``none``, or 4 per-stage dicts; ``None`` keeps the backbone's.
            Change it later with :meth:`set_token_merging` (no retraining needed).
        dropout: dropout before the classifier (0.1).
        align_corners: of the upsampling (False).
        pretrained: optional checkpoint of the whole model.
    """

    def __init__(self, num_classes, backbone, embedding_dim=256, head="paddleseg",
                 token_merging=None, dropout=0.1, align_corners=False, pretrained=None):
        super().__init__()
        if head not in HEADS:
            raise ValueError("head must be one of {}, got {!r}".format(list(HEADS), head))
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = head
        self.align_corners = align_corners
        channels = list(backbone.feat_channels)
        if head == "paddleseg":
            for i in (4, 3, 2, 1):
                setattr(self, "linear_c{}".format(i), _Linear(channels[i - 1], embedding_dim))
            self.dropout = nn.Dropout2D(dropout)
            self.linear_fuse = layers.ConvBNReLU(4 * embedding_dim, embedding_dim, 1, bias_attr=False)
            self.linear_pred = nn.Conv2D(embedding_dim, num_classes, 1)
        else:
            self.convs = nn.LayerList([_ConvBNReLU(c, embedding_dim) for c in channels])
            self.fusion_conv = _ConvBNReLU(4 * embedding_dim, embedding_dim)
            self.dropout = nn.Dropout2D(dropout)
            self.conv_seg = nn.Conv2D(embedding_dim, num_classes, 1)
        if token_merging is not None:
            self.set_token_merging(token_merging)
        self._exported = None  # set by prepare_export
        self.pretrained = pretrained
        if pretrained is not None:
            load_pretrained(self, pretrained)

    def set_token_merging(self, token_merging):
        """Switch the SegFormer++ strategy of the backbone in place; returns the strategy."""
        if not isinstance(self.backbone, MixVisionTransformer):
            raise ValueError("token merging needs a SegFormer++ MiT backbone (RTSeg_MiT_B0..B5), "
                             "not {}".format(type(self.backbone).__name__))
        return self.backbone.set_token_merging(token_merging)

    def forward(self, x):
        feats = self.backbone(x)
        if paddle.in_dynamic_mode():
            fused = self._fused_per_stage(feats)
        elif exporting(self):
            fused = self._fused_exported(feats)
        else:
            fused = self._fused_concat(feats)
        classifier = self.linear_pred if self.head == "paddleseg" else self.conv_seg
        logit = classifier(self.dropout(fused))
        return [F.interpolate(logit, size=spatial_size(x), mode="bilinear",
                              align_corners=self.align_corners)]

    def prepare_export(self):
        """Called by :func:`paddle_rtseg.exporting.static_graph.export` on the loaded, eval-mode model before
        tracing: the per-stage decoder (:meth:`_fused_per_stage`) with its filters materialized as
        parameters (:mod:`paddle_rtseg.layers.materialize`) and the fusion BN folded into them."""
        if self.training:
            raise ValueError("prepare_export needs the model in eval mode (it folds BN statistics)")
        with paddle.no_grad():
            parts = self._per_stage_filters()
        self._exported = [(materialize(self, "export_fuse{}_weight".format(i), weight),
                           materialize(self, "export_fuse{}_bias".format(i), bias))
                          for i, (weight, bias) in enumerate(parts)]

    def _fused_exported(self, feats):
        """:meth:`_fused_per_stage` with the filters of :meth:`prepare_export`."""
        return self._sum_of_parts(feats, self._exported)

    def _sum_of_parts(self, feats, filters, in_place=False):
        """ReLU of the sum of the per-stage parts, each convolved with its folded ``(weight, bias)``
        (:meth:`_per_stage_filters`) and upsampled to 1/4 where needed. ``in_place`` (eval without
        autograd) sums into the first part and applies the ReLU in place: no temporaries over the
        1/4-resolution map (256 x 256 x 256 floats for B0 at 1024x1024)."""
        size = spatial_size(feats[0])
        fused = None
        for (feat, upsample), (weight, bias) in zip(self._decoder_inputs(feats), filters):
            part = F.conv2d(feat, weight, bias)
            if upsample:
                part = self._up(part, size)
            if fused is None:
                fused = part
            else:
                fused = fused.add_(part) if in_place else fused + part
        return F.relu_(fused) if in_place else F.relu(fused)

    def _fusion_parameters(self):
        """(per-part ``linear_i`` or None, fusion conv weight, fusion BN), in concat order."""
        if self.head == "paddleseg":
            fuse = self.linear_fuse
            linears = [getattr(self, "linear_c{}".format(i)).proj for i in (4, 3, 2, 1)]
            return linears, fuse._conv.weight, fuse._batch_norm
        return [None] * len(self.convs), self.fusion_conv.conv.weight, self.fusion_conv.bn

    def _decoder_inputs(self, feats):
        """(feature, upsampled?) per part of the fusion conv's input, in its concat order."""
        if self.head == "paddleseg":
            return [(feats[i - 1], i > 1) for i in (4, 3, 2, 1)]  # PaddleSeg's concat order
        return [(F.relu(conv.bn(conv.conv(f))), i > 0)
                for i, (conv, f) in enumerate(zip(self.convs, feats))]

    def _per_stage_filters(self):
        """Per part of the fusion conv's input: the 1x1 filter [out, C_i, 1, 1] and bias [out] of
        that part's share of the fusion conv composed with its ``linear_i`` (PaddleSeg head), with
        the fusion BN (eval statistics) folded in: ``BN(sum_i conv_i) = sum_i (s * conv_i) + t``;
        ``t`` goes to the part that is not upsampled (bilinear weights sum to one, so either way
        is the same function)."""
        linears, conv_weight, norm = self._fusion_parameters()
        scale = norm.weight / paddle.sqrt(norm._variance + norm._epsilon)
        shift = norm.bias - norm._mean * scale
        direct = len(linears) - 1 if self.head == "paddleseg" else 0  # the 1/4 part
        out = []
        slices = paddle.split(conv_weight, len(linears), axis=1)
        for i, (linear, w) in enumerate(zip(linears, slices)):
            w = w.reshape(w.shape[:2])                                        # out, in
            if linear is None:
                weight, bias = w, paddle.zeros([w.shape[0]], w.dtype)
            else:
                weight = paddle.matmul(w, linear.weight, transpose_y=True)    # out, C_i
                bias = paddle.matmul(linear.bias.unsqueeze(0), w, transpose_y=True).reshape([-1])
            weight, bias = weight * scale.unsqueeze(1), bias * scale
            if i == direct:
                bias = bias + shift
            out.append((weight.unsqueeze(-1).unsqueeze(-1), bias))
        return out

    def _up(self, t, size):
        return F.interpolate(t, size=size, mode="bilinear", align_corners=self.align_corners)

    def _fused_concat(self, feats):
        """The decoder as written (SegFormer Eq. 4): the fusion conv over the concat of the
        upsampled stages. Static graphs traced without :meth:`prepare_export` (e.g. training with
        ``to_static``) use this form: the per-stage form would convolve with filters computed from
        parameters, on which ``paddle_lite_opt --valid_targets=arm`` crashes (signal 11)."""
        size = spatial_size(feats[0])
        if self.head == "paddleseg":
            c1, c2, c3, c4 = feats
            parts = [self._up(self.linear_c4(c4), size), self._up(self.linear_c3(c3), size),
                     self._up(self.linear_c2(c2), size), self.linear_c1(c1)]
            return self.linear_fuse(paddle.concat(parts, axis=1))
        parts = [conv(f) if i == 0 else self._up(conv(f), size)
                 for i, (conv, f) in enumerate(zip(self.convs, feats))]
        return self.fusion_conv(paddle.concat(parts, axis=1))

    def _fused_per_stage(self, feats):
        """Same function as :meth:`_fused_concat`, each stage's share of the fusion conv applied
        before its upsampling (:meth:`_fuse_part`); dygraph (val, predict, training). Exports
        use the same form with the filters materialized (:meth:`prepare_export`). In eval mode
        without autograd (val, predict) the fusion BN is folded into the filters as for exports and
        the parts are summed in place (:meth:`_sum_of_parts`): the same function without the BN
        pass and the temporaries over the 1/4-resolution map."""
        if not self.training and not paddle.is_grad_enabled():
            return self._sum_of_parts(feats, self._per_stage_filters(), in_place=True)
        size = spatial_size(feats[0])
        linears, conv_weight, norm = self._fusion_parameters()
        fused = None
        for (feat, upsample), linear, w in zip(self._decoder_inputs(feats), linears,
                                               paddle.split(conv_weight, len(linears), axis=1)):
            part = self._fuse_part(feat, linear, w)
            if upsample:
                part = self._up(part, size)
            fused = part if fused is None else fused + part
        return F.relu(norm(fused))

    @staticmethod
    def _fuse_part(feat, linear, fuse_weight):
        """One stage's share of the fusion conv, applied before the upsampling.

        The decoder (SegFormer Eq. 4) is ``fuse(concat_i(up(linear_i(F_i))))`` with a 1x1 ``fuse``
        conv: a 1x1 conv over a concat is the sum of 1x1 convs over its parts, and a 1x1 conv (a
        per-pixel channel mix) commutes with bilinear resizing (a per-channel weighted sum with
        weights summing to one), so each part's ``fuse`` slice -- composed with ``linear_i`` -- runs
        at the stage's own resolution. Same function, same parameters; at 1024x1024 the 1024 -> 256
        conv at 1/4 resolution (17 GMACs for B0) and the 4-way concat disappear."""
        w = fuse_weight.reshape(fuse_weight.shape[:2])                  # out, in
        if linear is None:
            return F.conv2d(feat, fuse_weight)
        weight = paddle.matmul(linear.weight, w, transpose_y=True)     # C_i, out
        bias = paddle.matmul(linear.bias.unsqueeze(0), w, transpose_y=True).reshape([-1])
        return F.conv2d(feat, weight.transpose([1, 0]).unsqueeze(-1).unsqueeze(-1), bias)

    def convert_torch_state_dict(self, torch_state):
        """mmseg / SegFormer++ PyTorch state dict (``backbone.layers.*``, ``decode_head.*``; or a bare
        mmseg MiT backbone ``layers.*``) -> numpy arrays keyed by this model's names."""
        out = {}
        for key, value in torch_state.items():
            if key.endswith("num_batches_tracked"):
                continue
            if key.startswith("layers."):
                key = "backbone." + key
            if key.startswith("backbone."):
                out.update(_convert_mit(key[len("backbone."):], np.asarray(value)))
            elif key.startswith("decode_head."):
                if self.head != "mmseg":
                    raise ValueError("This checkpoint has mmseg's SegformerHead ({!r}); build the "
                                     "model with head='mmseg' to load it".format(key))
                out[_convert_head_key(key[len("decode_head."):])] = np.asarray(value)
            else:
                out[key] = np.asarray(value)  # left for load_checkpoint to report as unexpected
        return out


_MMSEG_BLOCK = {
    "norm1": "norm1", "norm2": "norm2", "attn.sr": "attn.sr", "attn.norm": "attn.norm",
    "attn.attn.out_proj": "attn.proj", "ffn.layers.0": "mlp.fc1", "ffn.layers.1": "mlp.dwconv.dwconv",
    "ffn.layers.4": "mlp.fc2",
}
_LINEAR = ("attn.proj", "mlp.fc1", "mlp.fc2")


def _convert_mit(key, value):
    """One mmseg MiT key -> ``{our_key: array}`` (q/kv split out of the fused ``in_proj``; Linear
    weights transposed to Paddle's [in, out]; 1x1 conv FC weights flattened)."""
    m = re.match(r"layers\.(\d)\.0\.(projection|norm)\.(weight|bias)$", key)
    if m:
        part = "proj" if m.group(2) == "projection" else "norm"
        return {"backbone.patch_embed{}.{}.{}".format(int(m.group(1)) + 1, part, m.group(3)): value}
    m = re.match(r"layers\.(\d)\.2\.(weight|bias)$", key)
    if m:
        return {"backbone.norm{}.{}".format(int(m.group(1)) + 1, m.group(2)): value}
    m = re.match(r"layers\.(\d)\.1\.(\d+)\.(.+)\.(weight|bias|in_proj_weight|in_proj_bias)$", key)
    if not m:
        return {"backbone." + key: value}
    prefix = "backbone.block{}.{}.".format(int(m.group(1)) + 1, m.group(2))
    module, param = m.group(3), m.group(4)
    if module == "attn.attn" and param.startswith("in_proj"):
        c = value.shape[0] // 3
        kind = param[len("in_proj_"):]
        q, kv = value[:c], value[c:]
        if kind == "weight":
            q, kv = q.T, kv.T
        return {prefix + "attn.q." + kind: q, prefix + "attn.kv." + kind: kv}
    if module not in _MMSEG_BLOCK:
        return {prefix + module + "." + param: value}
    ours = _MMSEG_BLOCK[module]
    if ours in _LINEAR and param == "weight":
        value = value.reshape(value.shape[0], -1).T
    return {prefix + ours + "." + param: value}


def _convert_head_key(key):
    return (key.replace(".running_mean", "._mean").replace(".running_var", "._variance"))
