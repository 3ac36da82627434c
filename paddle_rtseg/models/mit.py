"""Mix Transformer (MiT) encoder of SegFormer (Xie et al., NeurIPS 2021, Sec. 3.1, Table 6) with the
token merging of SegFormer++ (Kienzle et al., MIPR 2024, arXiv 2405.14467).

Four stages of overlapping patch embedding (7x7/4, then 3x3/2) followed by blocks of efficient
self-attention (spatial reduction 8, 4, 2, 1) and Mix-FFN (Linear, 3x3 depth-wise conv, GELU,
Linear). State-dict keys are those of ``paddleseg.models.backbones.MixVisionTransformer_B*``, so
PaddleSeg's ImageNet and SegFormer checkpoints load; with merging off the outputs are PaddleSeg's.
The merging strategy can be changed at any time with :meth:`MixVisionTransformer.set_token_merging`.
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.models.backbones.transformer_utils import DropPath, Identity, ones_, trunc_normal_, zeros_

from ..weights.checkpoints import load_pretrained
from ..layers.efficient_attention import EfficientSelfAttention
from ..layers.materialize import exporting, materialize
from ..layers.shape import dim
from ..layers.token_merging import resolve_token_merging
from ..registry import register_variant


def _init_weights(layer):
    """PaddleSeg/NVlabs MiT init: trunc-normal(0.02) linears, unit LayerNorms, He-normal convs."""
    if isinstance(layer, nn.Linear):
        trunc_normal_(layer.weight)
        if layer.bias is not None:
            zeros_(layer.bias)
    elif isinstance(layer, nn.LayerNorm):
        zeros_(layer.bias)
        ones_(layer.weight)
    elif isinstance(layer, nn.Conv2D):
        fan_out = layer._kernel_size[0] * layer._kernel_size[1] * layer._out_channels // layer._groups
        nn.initializer.Normal(0, math.sqrt(2.0 / fan_out))(layer.weight)
        if layer.bias is not None:
            zeros_(layer.bias)


def even_crop(x):
    """``x`` cropped to an even height and width (the "Downsampling" strategy's first step)."""
    h, w = dim(x, 2), dim(x, 3)
    return paddle.slice(x, axes=[2, 3], starts=[0, 0], ends=[h // 2 * 2, w // 2 * 2])


class OverlapPatchEmbed(nn.Layer):
    """``k x k`` conv with stride ``s`` and padding ``k // 2``, then LayerNorm over tokens."""

    def __init__(self, in_channels, embed_dim, patch_size, stride, epsilon=1e-5):
        super().__init__()
        self.stride, self.padding = stride, patch_size // 2
        self.proj = nn.Conv2D(in_channels, embed_dim, patch_size, stride, padding=self.padding)
        self.norm = nn.LayerNorm(embed_dim, epsilon=epsilon)

    def forward(self, x, every_second_pixel=False):
        """``every_second_pixel``: embed ``x[:, :, ::2, ::2]`` of an even-sized ``x`` (SegFormer++'s
        "Downsampling": torch's nearest ``interpolate(scale_factor=0.5)``) without forming it. The
        same filter, dilated by 2 with twice the stride and padding, reads exactly those pixels and
        the same zero padding (output ``o`` reads ``x[2 (s o - p + i)]``), so the result is the
        embedding of the downsampled image, with no resize or pooling in the graph."""
        if every_second_pixel:
            x = F.conv2d(x, self.proj.weight, self.proj.bias, stride=2 * self.stride,
                         padding=2 * self.padding, dilation=2)
        else:
            x = self.proj(x)
        h, w = dim(x, 2), dim(x, 3)
        return self.norm(x.flatten(2).transpose([0, 2, 1])), h, w


class DWConv(nn.Layer):
    """3x3 depth-wise conv on the token grid (Mix-FFN's positional information)."""

    def __init__(self, channels):
        super().__init__()
        self.dwconv = nn.Conv2D(channels, channels, 3, 1, 1, groups=channels)

    def forward(self, x, h, w, act=None):
        """``act`` (element-wise) is applied on the NCHW map, before the transpose back to tokens:
        the same values, and Paddle's GELU is much faster on that layout."""
        c = x.shape[2]
        x = self.dwconv(x.transpose([0, 2, 1]).reshape([0, c, h, w]))
        if act is not None:
            x = act(x)
        return x.flatten(2).transpose([0, 2, 1])


class MixFFN(nn.Layer):
    """Mix-FFN (SegFormer Eq. 3): ``fc2(GELU(DWConv3x3(fc1(x))))``."""

    def __init__(self, channels, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(drop)
        self._exported = None  # set by prepare_export

    def forward(self, x, h, w):
        if exporting(self):
            return self._forward_nchw(x, h, w)
        x = self.drop(self.dwconv(self.fc1(x), h, w, act=self.act))
        return self.drop(self.fc2(x))

    def prepare_export(self):
        """Exported graphs run Mix-FFN on the NCHW map, ``fc1``/``fc2`` as 1x1 convs whose filters
        are the Linear weights materialized (:mod:`paddle_rtseg.layers.materialize`): the same
        function, but the token <-> NCHW transposes move from the 4x-wide hidden tensor to the
        block's input and output (measured in Paddle Inference: oneDNN reorders of the hidden map
        were the largest layout cost of MiT stage 1)."""
        self._exported = [materialize(self, "export_fc{}_weight".format(i),
                                      fc.weight.t().unsqueeze(-1).unsqueeze(-1))  # out, in, 1, 1
                          for i, fc in ((1, self.fc1), (2, self.fc2))]

    def _forward_nchw(self, x, h, w):
        c = x.shape[2]
        x = x.transpose([0, 2, 1]).reshape([0, c, h, w])
        x = F.conv2d(x, self._exported[0], self.fc1.bias)
        x = self.act(self.dwconv.dwconv(x))
        x = F.conv2d(self.drop(x), self._exported[1], self.fc2.bias)
        return self.drop(x.flatten(2).transpose([0, 2, 1]))


class MiTBlock(nn.Layer):
    """Pre-norm transformer block: efficient self-attention and Mix-FFN, each with a residual."""

    def __init__(self, dim_, num_heads, mlp_ratio=4.0, qkv_bias=True, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, epsilon=1e-6, sr_ratio=1, sr_norm_epsilon=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim_, epsilon=epsilon)
        self.attn = EfficientSelfAttention(dim_, num_heads, qkv_bias=qkv_bias, sr_ratio=sr_ratio,
                                           sr_norm_epsilon=sr_norm_epsilon, attn_drop=attn_drop,
                                           proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else Identity()
        self.norm2 = nn.LayerNorm(dim_, epsilon=epsilon)
        self.mlp = MixFFN(dim_, int(dim_ * mlp_ratio), drop=drop)

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Layer):
    """MiT encoder returning the four stage features (NCHW, strides 4, 8, 16, 32).

    Args:
        embed_dims, num_heads, depths, sr_ratios, mlp_ratio: the variant (SegFormer Table 6).
        in_channels: image channels.  qkv_bias: bias of q/kv.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth.
        epsilon: LayerNorm epsilon of blocks and stage norms (1e-6).
        patch_sr_norm_epsilon: epsilon of the patch-embedding and spatial-reduction LayerNorms
            (PaddleSeg/NVlabs 1e-5; mmseg and SegFormer++ use 1e-6 everywhere).
        token_merging: SegFormer++ strategy: ``None``, a preset (``hq``, ``fast``, ``2x2``,
            ``downsample``) or 4 per-stage dicts (see :func:`resolve_token_merging`).
        pretrained: optional backbone checkpoint (PaddleSeg ``.pdparams``).
    """

    def __init__(self, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), depths=(3, 4, 6, 3),
                 sr_ratios=(8, 4, 2, 1), mlp_ratio=4.0, in_channels=3, qkv_bias=True, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.1, epsilon=1e-6, patch_sr_norm_epsilon=1e-5,
                 token_merging=None, pretrained=None):
        super().__init__()
        self.feat_channels = list(embed_dims)
        self.sr_ratios = tuple(sr_ratios)
        dpr = [float(v) for v in paddle.linspace(0, drop_path_rate, sum(depths)).numpy()]
        cur = 0
        chans = [in_channels] + list(embed_dims)
        for i in range(4):  # PaddleSeg's parameter order: the four embeddings, then the stages
            setattr(self, "patch_embed{}".format(i + 1), OverlapPatchEmbed(
                chans[i], embed_dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2,
                epsilon=patch_sr_norm_epsilon))
        for i in range(4):
            setattr(self, "block{}".format(i + 1), nn.LayerList([
                MiTBlock(embed_dims[i], num_heads[i], mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                         dpr[cur + j], epsilon, sr_ratios[i], patch_sr_norm_epsilon)
                for j in range(depths[i])]))
            setattr(self, "norm{}".format(i + 1), nn.LayerNorm(embed_dims[i], epsilon=epsilon))
            cur += depths[i]
        self.apply(_init_weights)
        self.set_token_merging(token_merging)
        self.pretrained = pretrained
        if pretrained is not None:
            load_pretrained(self, pretrained)

    def set_token_merging(self, token_merging):
        """Switch the SegFormer++ strategy in place (weights untouched); returns the strategy."""
        strategy = resolve_token_merging(token_merging)
        self.token_merging = strategy
        for i, cfg in enumerate(strategy.stages):
            for block in getattr(self, "block{}".format(i + 1)):
                block.attn.merging = cfg
        return strategy

    def forward(self, x):
        downsample = self.token_merging.downsample
        if downsample:
            x = even_crop(x)
        outs = []
        for i in range(4):
            x, h, w = getattr(self, "patch_embed{}".format(i + 1))(x, downsample and i == 0)
            for block in getattr(self, "block{}".format(i + 1)):
                x = block(x, h, w)
            x = getattr(self, "norm{}".format(i + 1))(x)
            x = x.transpose([0, 2, 1]).reshape([0, self.feat_channels[i], h, w])
            outs.append(x)
        return outs


_VARIANTS = {
    "B0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "B1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "B2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "B3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "B4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "B5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}


def _variant(name):
    return register_variant(manager.BACKBONES, MixVisionTransformer, "MiT_" + name, _VARIANTS[name],
                            "MiT-{} (SegFormer Table 6), registered as ``RTSeg_MiT_{}``; keyword "
                            "arguments override the table.".format(name, name))


MiT_B0 = _variant("B0")
MiT_B1 = _variant("B1")
MiT_B2 = _variant("B2")
MiT_B3 = _variant("B3")
MiT_B4 = _variant("B4")
MiT_B5 = _variant("B5")
