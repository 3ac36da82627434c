"""UperNet (Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018, Sec. 3.1,
Fig. 3) on any backbone with ``feat_channels``, as the MixFormer paper uses it for ADE20K (Chen et
al., CVPR 2022, Sec. 4.3, following Swin's setup): PPM on the last stage, FPN top-down path with 1x1
laterals and 3x3 output convs, all levels upsampled to 1/4 and fused by a 3x3 Conv-BN-ReLU, dropout,
1x1 classifier; an auxiliary FCN head (3x3 Conv-BN-ReLU, dropout, 1x1) on the third stage while
training. Every layer exports to every backend (exact adaptive pooling, no data-dependent shapes).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.models import layers
from paddleseg.utils import utils

from ..layers.pyramid_pooling import PyramidPooling
from ..layers.shape import spatial_size
from ..registry import register


class UPerHead(nn.Layer):
    """PPM + FPN + fusion + classifier on four features (1/4 .. 1/32); logits at 1/4."""

    def __init__(self, in_channels, num_classes, channels=512, pool_scales=(1, 2, 3, 6),
                 dropout=0.1, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.psp = PyramidPooling(in_channels[-1], channels, pool_scales, align_corners)
        self.lateral_convs = nn.LayerList([layers.ConvBNReLU(c, channels, 1, bias_attr=False)
                                           for c in in_channels[:-1]])
        self.fpn_convs = nn.LayerList([layers.ConvBNReLU(channels, channels, 3, padding=1,
                                                         bias_attr=False)
                                       for _ in in_channels[:-1]])
        self.fpn_bottleneck = layers.ConvBNReLU(len(in_channels) * channels, channels, 3,
                                                padding=1, bias_attr=False)
        self.dropout = nn.Dropout2D(dropout)
        self.conv_seg = nn.Conv2D(channels, num_classes, 1)

    def _resize(self, x, like):
        return F.interpolate(x, size=spatial_size(like), mode="bilinear",
                             align_corners=self.align_corners)

    def forward(self, feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)] + [self.psp(feats[-1])]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._resize(laterals[i], laterals[i - 1])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [self._resize(o, outs[0]) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(paddle.concat(outs, axis=1))))


@register(manager.MODELS)
class UPerNet(nn.Layer):
    """UperNet segmentor (registered as ``RTSeg_UPerNet``).

    Args:
        num_classes: number of classes.
        backbone: a backbone with ``feat_channels`` returning four features (e.g.
            ``RTSeg_MixFormer_B1``).
        channels: width of the PPM / FPN / fusion (512 in UperNet and the MixFormer paper).
        pool_scales: PPM pool sizes.
        aux_channels: width of the auxiliary FCN head on the third feature (256; 0 disables it).
        aux_index: which feature the auxiliary head reads (2, i.e. 1/16).
        dropout: dropout before the classifiers.
        align_corners: of every upsampling.
        pretrained: checkpoint of the whole model.
    """

    def __init__(self, num_classes, backbone, channels=512, pool_scales=(1, 2, 3, 6),
                 aux_channels=256, aux_index=2, dropout=0.1, align_corners=False, pretrained=None):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.align_corners = align_corners
        in_channels = list(backbone.feat_channels)
        self.head = UPerHead(in_channels, num_classes, channels, pool_scales, dropout,
                             align_corners)
        self.aux_index = aux_index
        self.aux_head = None
        if aux_channels:
            self.aux_head = nn.Sequential(
                layers.ConvBNReLU(in_channels[aux_index], aux_channels, 3, padding=1,
                                  bias_attr=False),
                nn.Dropout2D(dropout), nn.Conv2D(aux_channels, num_classes, 1))
        self.pretrained = pretrained
        if pretrained is not None:
            utils.load_entire_model(self, pretrained)

    def forward(self, x):
        feats = self.backbone(x)
        logits = [self.head(feats)]
        if self.training and self.aux_head is not None:
            logits.append(self.aux_head(feats[self.aux_index]))
        size = spatial_size(x)
        return [F.interpolate(logit, size=size, mode="bilinear", align_corners=self.align_corners)
                for logit in logits]
