"""Pyramid Pooling Module (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017, Sec. 3.2 / Fig. 3),
as UperNet's head uses it on the last backbone stage (Xiao et al., ECCV 2018, Sec. 3.1): adaptive
average pooling to ``s x s`` for each pool scale, 1x1 Conv-BN-ReLU, bilinear upsampling back, concat
with the input, 3x3 Conv-BN-ReLU. The pooling is exact in every export backend (``adaptive_pool``).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.models import layers

from .adaptive_pool import adaptive_avg_pool2d
from .shape import spatial_size


class PyramidPooling(nn.Layer):
    """``(B, in_channels, H, W)`` -> ``(B, channels, H, W)``.

    Args:
        in_channels: input channels.
        channels: channels of each pooled branch and of the output.
        pool_scales: output sizes of the adaptive average pools (1, 2, 3, 6).
        align_corners: of the upsampling.
    """

    def __init__(self, in_channels, channels, pool_scales=(1, 2, 3, 6), align_corners=False):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.align_corners = align_corners
        self.stages = nn.LayerList([layers.ConvBNReLU(in_channels, channels, 1, bias_attr=False)
                                    for _ in self.pool_scales])
        self.bottleneck = layers.ConvBNReLU(in_channels + len(self.pool_scales) * channels, channels,
                                            3, padding=1, bias_attr=False)

    def forward(self, x):
        size = spatial_size(x)
        outs = [x] + [F.interpolate(conv(adaptive_avg_pool2d(x, (s, s))), size=size,
                                    mode="bilinear", align_corners=self.align_corners)
                      for s, conv in zip(self.pool_scales, self.stages)]
        return self.bottleneck(paddle.concat(outs, axis=1))
