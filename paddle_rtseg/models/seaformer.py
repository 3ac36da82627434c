"""SeaFormer (Wang et al., "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic
Segmentation", ICLR 2023; code fudan-zvg/SeaFormer), deployable everywhere.

Backbone (Fig. 2): a MobileNetV2 stem and stages down to 1/8 (the shared detail feature), then
context stages at 1/16..1/64 whose last ``len(depths)`` stages are each followed by SeaFormer blocks
(squeeze-enhanced axial attention + conv FFN). The light head fuses each context output into the
1/8 detail feature with a hard-sigmoid gate, then a 1x1 (depthwise) Conv-BN-ReLU and a classifier.

Registered names: backbones ``RTSeg_SeaFormer`` (any table) and ``RTSeg_SeaFormer_tiny/small/base/
large`` (the authors' variants), model ``RTSeg_SeaFormerSeg``. PaddleSeg develop's ``SeaFormer_*`` /
``SeaFormerSeg`` keep their names. Parameter counts with 150 classes equal the authors' code (Tiny
1,667,318; Small 3,990,118; Base 8,605,654; Large 13,951,510). The authors' PyTorch checkpoints
(mmseg segmentors and ImageNet backbones) load through ``convert_torch_state_dict``.
"""
import math
import re

import numpy as np
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.models.backbones.transformer_utils import DropPath, Identity

from ..layers.conv_bn import ConvBN
from ..layers.fusion_block import FusionBlock
from ..layers.inverted_residual import InvertedResidual
from ..layers.sea_attention import SeaAttention
from ..layers.shape import spatial_size
from ..registry import register, register_variant

# The authors' variants (seaformer-seg/local_configs/seaformer/seaformer_*.py). MobileNetV2 stage
# rows are (kernel, expand ratio, out channels, stride); the first stage follows the 3x3 stride-2 stem.
VARIANTS = {
    "tiny": dict(
        stem_channels=16,
        mv2_stages=[[(3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1)], [(5, 3, 32, 2), (5, 3, 32, 1)],
                    [(3, 3, 64, 2), (3, 3, 64, 1)], [(5, 3, 128, 2)], [(3, 6, 160, 2)]],
        key_dims=[16, 24], depths=[2, 2], num_heads=4, mlp_ratios=[2, 4]),
    "small": dict(
        stem_channels=16,
        mv2_stages=[[(3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1)], [(5, 3, 48, 2), (5, 3, 48, 1)],
                    [(3, 3, 96, 2), (3, 3, 96, 1)], [(5, 4, 160, 2)], [(3, 6, 192, 2)]],
        key_dims=[16, 24], depths=[3, 3], num_heads=6, mlp_ratios=[2, 4]),
    "base": dict(
        stem_channels=16,
        mv2_stages=[[(3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1)], [(5, 3, 64, 2), (5, 3, 64, 1)],
                    [(3, 3, 128, 2), (3, 3, 128, 1)], [(5, 4, 192, 2)], [(3, 6, 256, 2)]],
        key_dims=[16, 24], depths=[4, 4], num_heads=8, mlp_ratios=[2, 4]),
    "large": dict(
        stem_channels=32,
        mv2_stages=[[(3, 3, 32, 1), (3, 4, 64, 2), (3, 4, 64, 1)], [(5, 4, 128, 2), (5, 4, 128, 1)],
                    [(3, 4, 192, 2), (3, 4, 192, 1)], [(5, 4, 256, 2)], [(3, 6, 320, 2)]],
        key_dims=[16, 20, 24], depths=[3, 3, 3], num_heads=8, mlp_ratios=[2, 4, 6]),
}
# Light-head widths per variant (the authors' decode_head channels / embed_dims).
HEADS = {
    "tiny": dict(head_channels=96, embed_dims=[64, 96]),
    "small": dict(head_channels=128, embed_dims=[96, 128]),
    "base": dict(head_channels=160, embed_dims=[128, 160]),
    "large": dict(head_channels=192, embed_dims=[128, 160, 192]),
}

_BN_BUFFERS = {"_mean": "running_mean", "_variance": "running_var"}


class SeaFormerFFN(nn.Layer):
    """SeaFormer's FFN: 1x1 Conv-BN -> 3x3 depthwise conv (bias) -> ReLU6 -> 1x1 Conv-BN."""

    def __init__(self, channels, hidden_channels):
        super().__init__()
        self.fc1 = ConvBN(channels, hidden_channels)
        self.dwconv = nn.Conv2D(hidden_channels, hidden_channels, 3, padding=1,
                                groups=hidden_channels)
        self.fc2 = ConvBN(hidden_channels, channels)

    def forward(self, x):
        return self.fc2(F.relu6(self.dwconv(self.fc1(x))))


class SeaFormerBlock(nn.Layer):
    """``x + DropPath(SeaAttention(x))`` then ``x + DropPath(FFN(x))`` (Fig. 2)."""

    def __init__(self, channels, key_dim, num_heads, mlp_ratio, attn_ratio=2, drop_path_rate=0.0):
        super().__init__()
        self.attn = SeaAttention(channels, key_dim, num_heads, attn_ratio)
        self.mlp = SeaFormerFFN(channels, int(channels * mlp_ratio))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else Identity()

    def forward(self, x):
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


def _init_conv(layer):
    """Authors' init: conv weights N(0, sqrt(2 / fan_out)), zero bias."""
    if isinstance(layer, nn.Conv2D):
        k = layer.weight.shape
        fan_out = k[0] * k[2] * k[3] // layer._groups
        nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out))(layer.weight)
        if layer.bias is not None:
            nn.initializer.Constant(0.0)(layer.bias)


def _conv_bn_leaf(key, conv_name):
    """Our ConvBN parameter ``...conv.weight`` / ``...norm._mean`` -> the authors' names."""
    m = re.match(r"(.*)\.(conv|norm)\.(\w+)$", key)
    if m is None:
        return key
    prefix, part, leaf = m.groups()
    return "{}.{}.{}".format(prefix, conv_name if part == "conv" else "bn",
                             _BN_BUFFERS.get(leaf, leaf))


def _convert(our_keys, authors_key, torch_state, dropped):
    """Pick each of our keys from ``torch_state`` by its authors' name; keys of the checkpoint that
    map to nothing and are not ``dropped`` are passed on under their own name (so the loader reports
    them as unexpected)."""
    out, used = {}, set()
    for key in our_keys:
        theirs = authors_key(key)
        if theirs in torch_state:
            out[key] = torch_state[theirs]
            used.add(theirs)
    for key, value in torch_state.items():
        if key not in used and not key.endswith("num_batches_tracked") and not dropped(key):
            out[key] = value
    return out


@register(manager.BACKBONES)
class SeaFormer(nn.Layer):
    """SeaFormer backbone (registered as ``RTSeg_SeaFormer``); outputs ``[1/8 detail feature,
    output of each transformer stage]``.

    Args:
        mv2_stages: per stage, rows ``(kernel, expand_ratio, out_channels, stride)`` of inverted
            residual blocks; stage 1 follows the stem, stage 2 ends at 1/8.
        key_dims: per transformer stage, channels per head of q/k.
        depths: SeaFormer blocks per transformer stage; the stages follow the last
            ``len(depths)`` MobileNetV2 stages and keep their width.
        num_heads: attention heads.
        mlp_ratios: per transformer stage, FFN hidden width / width.
        stem_channels: width of the 3x3 stride-2 stem.
        attn_ratio: value channels per head / key_dim.
        drop_path_rate: stochastic depth, rising linearly from 0 within each transformer stage.
        in_channels: image channels.
        pretrained: checkpoint to load: the authors' ImageNet ``.pth`` or a ``.pdparams``.
    """

    def __init__(self, mv2_stages, key_dims, depths, num_heads, mlp_ratios, stem_channels=16,
                 attn_ratio=2, drop_path_rate=0.1, in_channels=3, pretrained=None):
        super().__init__()
        if not len(key_dims) == len(depths) == len(mlp_ratios) <= len(mv2_stages) - 2:
            raise ValueError("key_dims, depths and mlp_ratios need one entry per transformer stage "
                             "(at most len(mv2_stages) - 2)")
        self.stem = ConvBN(in_channels, stem_channels, 3, stride=2, act=nn.ReLU)
        stages, widths, channels = [], [], stem_channels
        for rows in mv2_stages:
            blocks = []
            for kernel, expand_ratio, out_channels, stride in rows:
                blocks.append(InvertedResidual(channels, out_channels, kernel, stride, expand_ratio))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
            widths.append(channels)
        self.mv2_stages = nn.LayerList(stages)
        self.first_transformer_stage = len(mv2_stages) - len(depths)
        transformer_stages = []
        for i, depth in enumerate(depths):
            width = widths[self.first_transformer_stage + i]
            rates = np.linspace(0, drop_path_rate, depth)
            transformer_stages.append(nn.Sequential(*[
                SeaFormerBlock(width, key_dims[i], num_heads, mlp_ratios[i], attn_ratio,
                               float(rate)) for rate in rates]))
        self.transformer_stages = nn.LayerList(transformer_stages)
        self.feat_channels = [widths[1]] + widths[self.first_transformer_stage:]
        self.apply(_init_conv)
        if pretrained is not None:
            from ..weights.checkpoints import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        x = self.stem(x)
        outputs = []
        for i, stage in enumerate(self.mv2_stages):
            x = stage(x)
            if i == 1:
                outputs.append(x)  # shared 1/8 detail feature
            if i >= self.first_transformer_stage:
                x = self.transformer_stages[i - self.first_transformer_stage](x)
                outputs.append(x)
        return outputs

    def authors_key(self, key):
        """Our state-dict key -> fudan-zvg/SeaFormer's (``smb*``/``trans*``, ``c``/``bn``)."""
        m = re.match(r"mv2_stages\.(\d+)\.(\d+)\.(expand|depthwise|project)\.(.*)", key)
        if m is not None:
            i, j, part, rest = int(m[1]), int(m[2]), m[3], m[4]
            offset = 0 if self.mv2_stages[i][j].expand is None else 2
            index = {"expand": 0, "depthwise": offset, "project": offset + 2}[part]
            key = "smb{}.layer{}.conv.{}.{}".format(i + 1, j + 1, index, rest)
        key = re.sub(r"^stem\.", "smb1.stem_block.0.", key)
        key = re.sub(r"^transformer_stages\.(\d+)\.(\d+)\.", lambda t: "trans{}.transformer_blocks.{}."
                     .format(int(t[1]) + 1, t[2]), key)
        key = key.replace(".attn.detail.", ".attn.")
        key = re.sub(r"\.attn\.(row|column)\.pos_emb_(q|k)\.", r".attn.pos_emb_\1\2.", key)
        key = re.sub(r"\.attn\.(row|column)\.proj\.", r".attn.proj_encode_\1.1.", key)
        key = key.replace(".attn.proj.", ".attn.proj.1.")
        return _conv_bn_leaf(key, "c")

    def convert_torch_state_dict(self, torch_state):
        """The authors' ImageNet backbone checkpoint (or the backbone of their mmseg segmentor
        checkpoint) -> our keys; their ImageNet classifier (``linear.*``) is dropped."""
        if any(k.startswith("backbone.") for k in torch_state):
            torch_state = {k[len("backbone."):]: v for k, v in torch_state.items()
                           if k.startswith("backbone.")}
        return _convert(self.state_dict(), self.authors_key, torch_state,
                        dropped=lambda k: k.startswith("linear."))


def _variant(name):
    return register_variant(manager.BACKBONES, SeaFormer, "SeaFormer_" + name, VARIANTS[name],
                            "SeaFormer-{} backbone (the authors' table in ``VARIANTS``); keyword "
                            "arguments override the table.".format(name.capitalize()))


SeaFormer_tiny = _variant("tiny")
SeaFormer_small = _variant("small")
SeaFormer_base = _variant("base")
SeaFormer_large = _variant("large")


class LightHead(nn.Layer):
    """SeaFormer's light segmentation head (Sec. 3.3): fusion blocks, 1x1 Conv-BN-ReLU, classifier.

    Args:
        in_channels: backbone output channels ``[detail, context_1, ...]``.
        head_channels: width of the fused feature (must equal ``embed_dims[-1]``).
        embed_dims: output width of each fusion block.
        num_classes: classes.
        is_dw: the 1x1 fuse conv is depthwise (the authors' setting in every config).
        dropout_ratio: channel dropout before the classifier.
    """

    def __init__(self, in_channels, head_channels, embed_dims, num_classes, is_dw=True,
                 dropout_ratio=0.1):
        super().__init__()
        if len(embed_dims) != len(in_channels) - 1 or embed_dims[-1] != head_channels:
            raise ValueError("embed_dims needs one entry per context feature ({}) and must end with "
                             "head_channels ({}); got {}".format(len(in_channels) - 1,
                                                                 head_channels, embed_dims))
        detail = [in_channels[0]] + list(embed_dims[:-1])
        self.fusions = nn.LayerList([FusionBlock(d, c, e) for d, c, e in
                                     zip(detail, in_channels[1:], embed_dims)])
        self.linear_fuse = ConvBN(head_channels, head_channels,
                                  groups=head_channels if is_dw else 1, act=nn.ReLU)
        self.dropout = nn.Dropout2D(dropout_ratio) if dropout_ratio > 0 else Identity()
        self.classifier = nn.Conv2D(head_channels, num_classes, 1)
        self.apply(_init_conv)
        nn.initializer.Normal(0.0, 0.01)(self.classifier.weight)

    def forward(self, features):
        x = features[0]
        for fusion, context in zip(self.fusions, features[1:]):
            x = fusion(x, context)
        return self.classifier(self.dropout(self.linear_fuse(x)))

    @staticmethod
    def authors_key(key):
        """Our head key (without prefix) -> mmseg LightHead's (``fuse*``, ConvModule ``conv``/``bn``)."""
        key = re.sub(r"^fusions\.(\d+)\.", lambda t: "fuse{}.".format(int(t[1]) + 1), key)
        key = key.replace(".global_embedding.", ".global_act.")
        key = re.sub(r"^classifier\.", "conv_seg.", key)
        return _conv_bn_leaf(key, "conv")


@register(manager.MODELS)
class SeaFormerSeg(nn.Layer):
    """SeaFormer segmentor: backbone + light head (registered as ``RTSeg_SeaFormerSeg``).

    Args:
        num_classes: classes.
        backbone: a SeaFormer backbone (e.g. ``RTSeg_SeaFormer_base``).
        head_channels, embed_dims, is_dw, dropout_ratio: of :class:`LightHead` (per-variant values
            in ``HEADS``).
        pretrained: checkpoint of the whole model: ``.pdparams`` or the authors' mmseg ``.pth``.
    """

    def __init__(self, num_classes, backbone, head_channels, embed_dims, is_dw=True,
                 dropout_ratio=0.1, pretrained=None):
        super().__init__()
        self.backbone = backbone
        self.head = LightHead(backbone.feat_channels, head_channels, embed_dims, num_classes,
                              is_dw, dropout_ratio)
        self.pretrained = pretrained
        if pretrained is not None:
            from ..weights.checkpoints import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        logit = self.head(self.backbone(x))
        return [F.interpolate(logit, size=spatial_size(x), mode="bilinear", align_corners=False)]

    def authors_key(self, key):
        """Our key -> the authors' mmseg segmentor key (``backbone.*`` / ``decode_head.*``)."""
        if key.startswith("backbone."):
            return "backbone." + self.backbone.authors_key(key[len("backbone."):])
        return "decode_head." + LightHead.authors_key(key[len("head."):])

    def convert_torch_state_dict(self, torch_state):
        """The authors' mmseg checkpoint (``state_dict`` with ``backbone.``/``decode_head.`` keys)
        -> our keys. An ImageNet backbone checkpoint (no prefixes) fills the backbone only, so the
        head is reported missing: load it with ``load_checkpoint(model.backbone, path)`` instead."""
        if not any(k.startswith(("backbone.", "decode_head.")) for k in torch_state):
            torch_state = {"backbone." + k: v for k, v in torch_state.items()}
        return _convert(self.state_dict(), self.authors_key, torch_state,
                        dropped=lambda k: k.startswith("backbone.linear."))
