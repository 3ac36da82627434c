"""RTFormer (Wang et al., "RTFormer: Efficient Design for Real-Time Semantic Segmentation with
Transformer", NeurIPS 2022), deployable everywhere and interchangeable with PaddleSeg's.

A dual-resolution network: convolutional stages down to 1/8 (high-resolution branch) and 1/16
(low-resolution branch), two RTFormer blocks (GFA on the low branch, cross-resolution attention on
the high branch, Fig. 4), DAPPM on the 1/32 feature and a segmentation head at 1/8.

Constructor arguments and state-dict keys are those of ``paddleseg.models.RTFormer``, so PaddleSeg's
checkpoints load and give the same logits. Unlike PaddleSeg's, the cross-resolution attention uses no
activation-filtered convolution and the pooling is exact in every backend, so the exported model
takes any batch size and input size (see DESIGN.md, deployability rules).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.models.backbones.transformer_utils import DropPath, Identity

from ..weights.checkpoints import load_pretrained
from ..layers import (DAPPM, ConvFFN, CrossResolutionAttention, GPUFriendlyAttention, SegHead,
                      cross_kv_projection, make_stage)
from ..layers.init import init_kaiming, init_trunc_normal
from ..layers.norm import bn2d, conv2d
from ..layers.shape import spatial_size
from ..registry import register


class RTFormerBlock(nn.Layer):
    """One RTFormer block on the pair (high-resolution, low-resolution) features (Fig. 4).

    Low branch: GFA + FFN (halving resolution and widening when ``in_channels[1] != out_channels[1]``).
    The low branch is compressed and added to the high branch, which then runs cross-resolution
    attention with keys/values from the low branch + FFN; optionally the high branch is injected back
    into the low one by two strided 3x3 convs.

    Args:
        in_channels: ``[high, low]`` input channels.
        out_channels: ``[high, low]`` output channels (``high`` must equal the input's).
        num_heads: GDN groups of the low-branch GFA.
        drop_rate: dropout in the FFNs.
        drop_path_rate: stochastic depth on each residual branch.
        use_injection: add the downsampled high branch to the low branch at the end.
        cross_size: the low branch is pooled to ``cross_size x cross_size`` keys/values.
    """

    def __init__(self, in_channels, out_channels, num_heads=8, drop_rate=0.0, drop_path_rate=0.0,
                 use_injection=True, cross_size=12):
        super().__init__()
        in_h, in_l = in_channels
        out_h, out_l = out_channels
        if in_h != out_h:
            raise ValueError("RTFormerBlock keeps the high-resolution width: in_channels[0] ({}) "
                             "must equal out_channels[0] ({})".format(in_h, out_h))
        self.high_channels = out_h
        self.use_injection = use_injection
        if in_l != out_l:
            self.attn_shortcut_l = nn.Sequential(bn2d(in_l), conv2d(in_l, out_l, 1, 2))
            self.attn_shortcut_l.apply(init_kaiming)
        else:
            self.attn_shortcut_l = None
        self.attn_l = GPUFriendlyAttention(in_l, out_l, inter_channels=out_l, num_heads=num_heads)
        self.mlp_l = ConvFFN(out_l, drop_rate=drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else Identity()

        self.compression = nn.Sequential(bn2d(out_l), nn.ReLU(), conv2d(out_l, out_h, 1))
        self.compression.apply(init_kaiming)

        self.attn_h = CrossResolutionAttention(in_h, num_tokens=cross_size * cross_size)
        self.mlp_h = ConvFFN(out_h, drop_rate=drop_rate)
        self.cross_kv = cross_kv_projection(out_l, out_h, cross_size)
        self.cross_kv.apply(init_trunc_normal(0.02))

        if use_injection:
            self.down = nn.Sequential(
                bn2d(out_h), nn.ReLU(), conv2d(out_h, out_l // 2, 3, 2, 1),
                bn2d(out_l // 2), nn.ReLU(), conv2d(out_l // 2, out_l, 3, 2, 1))
            self.down.apply(init_kaiming)

    def forward(self, x):
        x_h, x_l = x
        shortcut = x_l if self.attn_shortcut_l is None else self.attn_shortcut_l(x_l)
        x_l = shortcut + self.drop_path(self.attn_l(x_l))
        x_l = x_l + self.drop_path(self.mlp_l(x_l))

        x_h = x_h + F.interpolate(self.compression(x_l), size=spatial_size(x_h), mode="bilinear")

        key, value = paddle.split(self.cross_kv(x_l), 2, axis=1)    # N, C_h, cs, cs each
        key, value = key.flatten(2), value.flatten(2)               # N, C_h, T
        x_h = x_h + self.drop_path(self.attn_h(x_h, key, value))
        x_h = x_h + self.drop_path(self.mlp_h(x_h))

        if self.use_injection:
            x_l = x_l + self.down(x_h)
        return x_h, x_l


@register(manager.MODELS)
class RTFormer(nn.Layer):
    """RTFormer segmentor (registered as ``RTSeg_RTFormer``); arguments as ``paddleseg.models.RTFormer``.

    Args:
        num_classes: number of classes.
        layer_nums: BasicBlocks in the four convolutional stages.
        base_channels: width ``c`` (Slim 32, Base 64); branches have 2c (1/8) and 4c..8c (1/16..1/32).
        spp_channels: DAPPM width per pyramid level.
        num_heads: GDN groups in the GFA of the low branch.
        head_channels: width of the auxiliary head; the main head has twice this.
        drop_rate: FFN dropout.  drop_path_rate: stochastic depth in the RTFormer blocks.
        use_aux_head: add the auxiliary head on the 1/8 feature (its logits only in training).
        use_injection: per RTFormer block, inject the high branch back into the low one.
        lr_mult: learning-rate multiplier of DAPPM and the heads (10 in the paper's recipes).
        cross_size: keys/values of the cross-resolution attention are ``cross_size^2`` pooled tokens.
        in_channels: image channels.
        pretrained: optional path of a checkpoint to load (``.pdparams``).
    """

    def __init__(self, num_classes, layer_nums=(2, 2, 2, 2), base_channels=64, spp_channels=128,
                 num_heads=8, head_channels=128, drop_rate=0.0, drop_path_rate=0.2,
                 use_aux_head=True, use_injection=(True, True), lr_mult=10.0, cross_size=12,
                 in_channels=3, pretrained=None):
        super().__init__()
        c = base_channels
        self.base_channels = base_channels
        self.relu = nn.ReLU()
        self._build_conv_stages(in_channels, c, layer_nums)
        block = dict(num_heads=num_heads, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                     cross_size=cross_size)
        self.layer4 = RTFormerBlock([2 * c, 4 * c], [2 * c, 8 * c],
                                    use_injection=use_injection[0], **block)
        self.layer5 = RTFormerBlock([2 * c, 8 * c], [2 * c, 8 * c],
                                    use_injection=use_injection[1], **block)
        self.spp = DAPPM(8 * c, spp_channels, 2 * c, lr_mult=lr_mult)
        self.seghead = SegHead(4 * c, int(head_channels * 2), num_classes, lr_mult=lr_mult)
        self.use_aux_head = use_aux_head
        if use_aux_head:
            self.seghead_extra = SegHead(2 * c, head_channels, num_classes, lr_mult=lr_mult)

        self._init_conv_stages()
        for name in ["spp", "seghead"] + (["seghead_extra"] if use_aux_head else []):
            getattr(self, name).apply(init_kaiming)
        for ffn in [self.layer4.mlp_l, self.layer4.mlp_h, self.layer5.mlp_l, self.layer5.mlp_h]:
            ffn.apply(init_kaiming)
        self.pretrained = pretrained
        if pretrained is not None:
            load_pretrained(self, pretrained)

    def _build_conv_stages(self, in_channels, c, layer_nums):
        """The stem and the convolutional stages up to 1/16: ``conv1 layer1 layer2 layer3 layer3_
        compression3`` (a subclass may build them otherwise)."""
        self.conv1 = nn.Sequential(
            nn.Conv2D(in_channels, c, 3, stride=2, padding=1), bn2d(c), nn.ReLU(),
            nn.Conv2D(c, c, 3, stride=2, padding=1), bn2d(c), nn.ReLU())
        self.layer1 = make_stage(c, c, layer_nums[0])
        self.layer2 = make_stage(c, 2 * c, layer_nums[1], stride=2)
        self.layer3 = make_stage(2 * c, 4 * c, layer_nums[2], stride=2)
        self.layer3_ = make_stage(2 * c, 2 * c, 1)
        self.compression3 = nn.Sequential(bn2d(4 * c), nn.ReLU(), conv2d(4 * c, 2 * c, 1))

    def _init_conv_stages(self):
        for name in ["conv1", "layer1", "layer2", "layer3", "layer3_", "compression3"]:
            getattr(self, name).apply(init_kaiming)

    def forward(self, x):
        x1 = self.layer1(self.conv1(x))                           # c, 1/4
        x2 = self.layer2(self.relu(x1))                           # 2c, 1/8
        x3 = self.layer3(self.relu(x2))                           # 4c, 1/16
        x3_ = x2 + F.interpolate(self.compression3(x3), size=spatial_size(x2), mode="bilinear")
        x3_ = self.layer3_(self.relu(x3_))                        # 2c, 1/8
        x4_, x4 = self.layer4([self.relu(x3_), self.relu(x3)])    # 2c, 1/8; 8c, 1/32
        x5_, x5 = self.layer5([self.relu(x4_), self.relu(x4)])    # 2c, 1/8; 8c, 1/32
        x6 = F.interpolate(self.spp(x5), size=spatial_size(x5_), mode="bilinear")
        logits = [self.seghead(paddle.concat([x5_, x6], axis=1))]
        if self.training and self.use_aux_head:
            logits.append(self.seghead_extra(x3_))
        size = spatial_size(x)
        return [F.interpolate(logit, size=size, mode="bilinear", align_corners=False)
                for logit in logits]
