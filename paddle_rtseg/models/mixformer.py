"""MixFormer backbones (Chen et al., "MixFormer: Mixing Features across Windows and Dimensions",
CVPR 2022) for dense prediction.

A conv stem (1/4), then four stages of Mixing Blocks (Sec. 3.1: LayerNorm, mixing attention =
window attention || depth-wise conv with bi-directional interactions, residual; LayerNorm, MLP,
residual), with conv patch merging (BN, 2x2/2 conv) between stages. The backbone returns the output
of each stage (1/4, 1/8, 1/16, 1/32, NCHW) for a segmentation head; PaddleClas's classification
tail (final LayerNorm, ``last_proj`` to 1280, GELU, pooling, ``head``) is left out.

State-dict keys and shapes are those of PaddleClas's ``MixFormer`` (``ppcls/arch/backbone/model_zoo/
mixformer.py``, PR 1820 @ 60239c9), so its ImageNet checkpoints ``MixFormer_B{1,2,3,4,6}_
pretrained.pdparams`` load (their classifier keys are dropped); the stage outputs equal that code's
on the same weights (tests/fixtures/mixformer). Any input size works: windows and odd merges are
zero-padded bottom/right (PaddleClas itself needs H, W multiples of 32).
"""
import numpy as np
import paddle.nn as nn
from paddleseg.cvlibs import manager
from paddleseg.models.backbones.transformer_utils import DropPath, Identity, ones_, trunc_normal_, zeros_

from ..layers.conv_merging import ConvMerging
from ..layers.conv_stem import ConvStem
from ..layers.mixing_attention import MixingAttention
from ..layers.shape import dim
from ..layers.windows import crop, pad_to_multiple
from ..registry import register, register_variant

# PaddleClas's MixFormer_B0..B6 (embed_dim of stage 1, doubled per stage; depths; heads;
# drop_path_rate of their ImageNet recipe).
VARIANTS = {
    "B0": dict(embed_dim=24, depths=[1, 2, 6, 6], num_heads=[3, 6, 12, 24], drop_path_rate=0.0),
    "B1": dict(embed_dim=32, depths=[1, 2, 6, 6], num_heads=[2, 4, 8, 16], drop_path_rate=0.0),
    "B2": dict(embed_dim=32, depths=[2, 2, 8, 8], num_heads=[2, 4, 8, 16], drop_path_rate=0.05),
    "B3": dict(embed_dim=48, depths=[2, 2, 8, 6], num_heads=[3, 6, 12, 24], drop_path_rate=0.1),
    "B4": dict(embed_dim=64, depths=[2, 2, 8, 8], num_heads=[4, 8, 16, 32], drop_path_rate=0.2),
    "B5": dict(embed_dim=96, depths=[1, 2, 8, 6], num_heads=[6, 12, 24, 48], drop_path_rate=0.3),
    "B6": dict(embed_dim=96, depths=[2, 4, 16, 12], num_heads=[6, 12, 24, 48], drop_path_rate=0.5),
}
# ImageNet checkpoints named by PaddleClas PR 1820 (none for B0 and B5).
PRETRAINED_URLS = {v: "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/MixFormer_{}_"
                      "pretrained.pdparams".format(v) for v in ("B1", "B2", "B3", "B4", "B6")}
# Keys of PaddleClas's classification tail, absent from the backbone.
CLASSIFIER_PREFIXES = ("norm.", "last_proj.", "head.")


class Mlp(nn.Layer):
    """The block's MLP: Linear, GELU, dropout, Linear, dropout (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class MixingBlock(nn.Layer):
    """Mixing Block (Sec. 3.1, Fig. 2): ``x + MixingAttention(LN(x))``, then ``x + MLP(LN(x))``,
    on a channels-last map; the map is zero-padded to whole windows after the first LayerNorm and
    cropped back, as in PaddleClas."""

    def __init__(self, dim, num_heads, window_size=7, dwconv_kernel_size=3, mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MixingAttention(dim, num_heads, window_size, dwconv_kernel_size, qkv_bias,
                                    qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x):
        h, w = dim(x, 1), dim(x, 2)
        y = self.attn(pad_to_multiple(self.norm1(x), self.window_size))
        x = x + self.drop_path(crop(y, [h, w]))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MixFormerStage(nn.Layer):
    """Mixing Blocks at one resolution (keys ``blocks.*``) and the merging that follows them
    (``downsample``, None in the last stage). ``forward`` returns ``(stage output, merged)``."""

    def __init__(self, dim, depth, num_heads, out_dim=None, drop_path=(), **block_args):
        super().__init__()
        self.blocks = nn.LayerList([
            MixingBlock(dim, num_heads, drop_path=float(drop_path[i]) if len(drop_path) else 0.0,
                        **block_args) for i in range(depth)])
        self.downsample = ConvMerging(dim, out_dim) if out_dim else None

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else None)


def _init_weights(layer):
    """PaddleClas's init: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms."""
    if isinstance(layer, nn.Linear):
        trunc_normal_(layer.weight)
        if layer.bias is not None:
            zeros_(layer.bias)
    elif isinstance(layer, nn.LayerNorm):
        zeros_(layer.bias)
        ones_(layer.weight)


@register(manager.BACKBONES)
class MixFormer(nn.Layer):
    """MixFormer backbone (registered as ``RTSeg_MixFormer``; variants ``RTSeg_MixFormer_B0``..``B6``).

    Args:
        embed_dim: width of stage 1 (doubled per stage), or the four widths.
        depths: Mixing Blocks per stage.
        num_heads: attention heads per stage (of half the stage width).
        window_size: local window side (7).
        dwconv_kernel_size: depth-wise conv kernel (3).
        mlp_ratio: MLP hidden width / width (4).
        qkv_bias, qk_scale: of the attention.
        drop_rate, attn_drop_rate: dropout rates.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        patch_norm: LayerNorm after the stem (True, as PaddleClas's checkpoints).
        in_channels: image channels.
        pretrained: checkpoint to load: PaddleClas's ImageNet ``.pdparams`` (classifier dropped) or
            a backbone ``.pdparams``.
    """

    # Op types that ``python -m paddle_rtseg.quantize`` leaves in float in the int8 program it
    # converts for Paddle Lite's ARM kernels (:func:`paddle_rtseg.quantization.ptq.lite_arm_float_ops`).
    # Measured with scripts/arm_int8_bisect.py on MixFormer-B0 (docs/camvid.md): with its linear
    # layers (matmul_v2 with a weight, whether on 4-D or flattened 2-D tokens) in int8, Lite 2.13's
    # ARM int8 GEMM reads past the end of a buffer and the process dies by SIGSEGV at 352x480 and
    # 360x480 (it computed right up to 192x256); with only the convolutions in int8 it runs.
    lite_arm_int8_float_ops = ("matmul_v2",)

    def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                 dwconv_kernel_size=3, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.1, patch_norm=True, in_channels=3,
                 pretrained=None):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads need one entry per stage")
        if isinstance(embed_dim, int):
            embed_dim = [embed_dim * 2 ** i for i in range(len(depths))]
        if len(embed_dim) != len(depths):
            raise ValueError("embed_dim needs one width per stage (or one int)")
        self.feat_channels = [int(c) for c in embed_dim]
        self.patch_embed = ConvStem(in_channels, self.feat_channels[0], 4, norm=patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = np.linspace(0, drop_path_rate, sum(depths))
        self.layers = nn.LayerList()
        for i, depth in enumerate(depths):
            last = i == len(depths) - 1
            self.layers.append(MixFormerStage(
                self.feat_channels[i], depth, num_heads[i],
                out_dim=None if last else self.feat_channels[i + 1],
                drop_path=rates[sum(depths[:i]):sum(depths[:i + 1])], window_size=window_size,
                dwconv_kernel_size=dwconv_kernel_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate))
        self.apply(_init_weights)
        self.pretrained = pretrained
        if pretrained is not None:
            from ..weights.checkpoints import load_checkpoint
            load_checkpoint(self, pretrained)

    def forward(self, x):
        x = self.pos_drop(self.patch_embed(x))
        outputs = []
        for stage in self.layers:
            out, x = stage(x)
            outputs.append(out.transpose([0, 3, 1, 2]))
        return outputs

    def convert_paddle_state_dict(self, state):
        """A PaddleClas MixFormer classifier checkpoint -> backbone keys (drops ``norm.``,
        ``last_proj.``, ``head.``); a backbone or segmentor checkpoint is returned unchanged."""
        if "last_proj.weight" not in state:
            return state
        return {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}


def _variant(name):
    return register_variant(manager.BACKBONES, MixFormer, "MixFormer_" + name, VARIANTS[name],
                            "MixFormer-{} backbone (PaddleClas's MixFormer_{}: ``VARIANTS['{}']``); "
                            "keyword arguments override the table.".format(name, name, name))


MixFormer_B0 = _variant("B0")
MixFormer_B1 = _variant("B1")
MixFormer_B2 = _variant("B2")
MixFormer_B3 = _variant("B3")
MixFormer_B4 = _variant("B4")
MixFormer_B5 = _variant("B5")
MixFormer_B6 = _variant("B6")
