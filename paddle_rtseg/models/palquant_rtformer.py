"""RTFormer with PalQuant's parallel low-precision groups in its convolutional stages (issue 27:
PalQuant's idea, ECCV 2022, applied to one of the project's own families).

RTFormer's stages up to 1/16 (``layer1 layer2 layer3`` and the high-resolution ``layer3_``) are
ResNet basic blocks, exactly what PalQuant quantizes in a ResNet. Here they become PalQuant's:
widths multiplied by ``groups`` (G), every 3x3 and downsample 1x1 conv a grouped low-bit
:class:`~paddle_rtseg.layers.palquant_conv.QConv` (``groups=G``), the channel shuffle in every block
with a downsample path and a :class:`~paddle_rtseg.layers.cyclic_shuffle.CyclicShuffle` before
``layer2`` and ``layer3`` (as before PalQuant's layer2..4). What stays in full precision, as the
stem and classifier do in PalQuant: the stem (its second conv widened to ``c*G``), the 1x1
``compression3``, the two RTFormer blocks (attention), DAPPM and the heads. Two full-precision 1x1
Conv-BN projections (``merge_high``: ``2cG -> 2c``, ``merge_low``: ``4cG -> 4c``; none when G = 1)
hand the wide quantized features to the RTFormer blocks at RTFormer's own widths, so everything
from ``layer4`` on is RTFormer's, with its names.

``groups=1`` is RTFormer with plain low-bit conv stages (the baseline PalQuant compares with);
``weight_levels=act_levels=None`` keeps the same graph in full precision.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager

from ..layers.cyclic_shuffle import CyclicShuffle
from ..layers.norm import bn2d, conv2d
from ..layers.shape import spatial_size
from ..registry import register
from .palquant import FirstBatchQuantizerInit, init_like_the_authors, make_palquant_stage
from .rtformer import RTFormer

__all__ = ["PalQuantRTFormer"]


@register(manager.MODELS)
class PalQuantRTFormer(FirstBatchQuantizerInit, RTFormer):
    """RTFormer whose conv stages are G parallel low-precision groups (registered as
    ``RTSeg_PalQuantRTFormer``).

    Args:
        num_classes: number of classes.
        groups: G, the parallel low-precision groups of the conv stages (their widths x G).
        weight_levels, act_levels: quantization levels of the stages' QConvs (2**bits; 4 = 2 bit);
            None = full precision.
        **rtformer_args: :class:`~paddle_rtseg.models.rtformer.RTFormer`'s arguments
            (``base_channels``, ``layer_nums``, ``head_channels``, ...; ``pretrained`` loads a
            checkpoint of this model).
    """

    def __init__(self, num_classes, groups=2, weight_levels=4, act_levels=4, pretrained=None,
                 **rtformer_args):
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError("PalQuantRTFormer groups must be a positive integer, got {!r}".format(
                groups))
        # read by _build_conv_stages, which RTFormer's constructor calls (before Layer's own
        # attribute handling exists: a plain attribute)
        object.__setattr__(self, "_stage_args", dict(groups=groups, weight_levels=weight_levels,
                                                     act_levels=act_levels))
        super().__init__(num_classes, pretrained=None, **rtformer_args)
        self.groups, self.weight_levels, self.act_levels = groups, weight_levels, act_levels
        self._track_quantizer_init(self)
        self.pretrained = pretrained
        if pretrained is not None:
            from ..weights.checkpoints import load_pretrained
            load_pretrained(self, pretrained)

    def _build_conv_stages(self, in_channels, c, layer_nums):
        """PalQuant's stages instead of RTFormer's (module docstring), initialised as the authors
        initialise theirs."""
        levels = self._stage_args
        g = levels["groups"]
        self.conv1 = nn.Sequential(
            nn.Conv2D(in_channels, c, 3, stride=2, padding=1), bn2d(c), nn.ReLU(),
            nn.Conv2D(c, c * g, 3, stride=2, padding=1), bn2d(c * g), nn.ReLU())
        self.layer1 = make_palquant_stage(c * g, c * g, layer_nums[0], **levels)
        self.shuffle2 = CyclicShuffle(c * g, **levels)
        self.layer2 = make_palquant_stage(c * g, 2 * c * g, layer_nums[1], 2, **levels)
        self.shuffle3 = CyclicShuffle(2 * c * g, **levels)
        self.layer3 = make_palquant_stage(2 * c * g, 4 * c * g, layer_nums[2], 2, **levels)
        self.compression3 = nn.Sequential(bn2d(4 * c * g), nn.ReLU(),
                                          conv2d(4 * c * g, 2 * c * g, 1))
        self.layer3_ = make_palquant_stage(2 * c * g, 2 * c * g, 1, **levels)
        self.merge_high = self.merge_low = None
        if g > 1:
            self.merge_high = nn.Sequential(conv2d(2 * c * g, 2 * c, 1), bn2d(2 * c))
            self.merge_low = nn.Sequential(conv2d(4 * c * g, 4 * c, 1), bn2d(4 * c))

    def _init_conv_stages(self):
        for name in ["conv1", "layer1", "shuffle2", "layer2", "shuffle3", "layer3", "layer3_",
                     "compression3", "merge_high", "merge_low"]:
            if getattr(self, name) is not None:
                init_like_the_authors(getattr(self, name))

    def forward(self, x):
        self._init_quantizers_on_first_batch(self, x)
        x1 = self.layer1(self.conv1(x))                                  # cG, 1/4
        x2 = self.layer2(self.shuffle2(x1))                              # 2cG, 1/8
        x3 = self.layer3(self.shuffle3(x2))                              # 4cG, 1/16
        x3_ = x2 + F.interpolate(self.compression3(x3), size=spatial_size(x2), mode="bilinear")
        x3_ = self.layer3_(self.relu(x3_))                               # 2cG, 1/8
        if self.merge_high is not None:
            x3_, x3 = self.merge_high(x3_), self.merge_low(x3)           # 2c, 4c
        x4_, x4 = self.layer4([self.relu(x3_), self.relu(x3)])           # 2c, 1/8; 8c, 1/32
        x5_, x5 = self.layer5([self.relu(x4_), self.relu(x4)])
        x6 = F.interpolate(self.spp(x5), size=spatial_size(x5_), mode="bilinear")
        logits = [self.seghead(paddle.concat([x5_, x6], axis=1))]
        if self.training and self.use_aux_head:
            logits.append(self.seghead_extra(x3_))
        size = spatial_size(x)
        return [F.interpolate(logit, size=size, mode="bilinear", align_corners=False)
                for logit in logits]

