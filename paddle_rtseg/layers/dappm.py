"""Deep Aggregation Pyramid Pooling Module (DDRNet, Hong et al. 2021), RTFormer's context head.

Average pools at 1/2, 1/4, 1/8 and global scale; each level is upsampled, added to the previous one
and refined by a 3x3 conv (hierarchical fusion), then all five are concatenated, compressed by a 1x1
conv and added to a 1x1 shortcut. Parameter names follow PaddleSeg (``scale0..4``, ``process1..4``,
``compression``, ``shortcut``).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .norm import bn2d, conv2d
from .shape import spatial_size


def _bn_relu_conv(in_channels, out_channels, kernel_size, lr_mult, pool=None):
    parts = [pool] if pool is not None else []
    parts += [bn2d(in_channels, lr_mult=lr_mult), nn.ReLU(),
              conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                     lr_mult=lr_mult)]
    return nn.Sequential(*parts)


class DAPPM(nn.Layer):
    """Args: in_channels, inter_channels (per pyramid level), out_channels, lr_mult (learning-rate
    multiplier of every parameter, 10 in RTFormer)."""

    def __init__(self, in_channels, inter_channels, out_channels, lr_mult=1.0):
        super().__init__()
        self.scale0 = _bn_relu_conv(in_channels, inter_channels, 1, lr_mult)
        for i, (k, s) in enumerate([(5, 2), (9, 4), (17, 8)], start=1):
            pool = nn.AvgPool2D(kernel_size=k, stride=s, padding=k // 2, exclusive=False)
            setattr(self, "scale{}".format(i), _bn_relu_conv(in_channels, inter_channels, 1,
                                                             lr_mult, pool))
        self.scale4 = _bn_relu_conv(in_channels, inter_channels, 1, lr_mult,
                                     nn.AdaptiveAvgPool2D(1))
        for i in range(1, 5):
            setattr(self, "process{}".format(i),
                    _bn_relu_conv(inter_channels, inter_channels, 3, lr_mult))
        self.compression = _bn_relu_conv(inter_channels * 5, out_channels, 1, lr_mult)
        self.shortcut = _bn_relu_conv(in_channels, out_channels, 1, lr_mult)

    def forward(self, x):
        size = spatial_size(x)
        levels = [self.scale0(x)]
        for i in range(1, 5):
            scaled = F.interpolate(getattr(self, "scale{}".format(i))(x), size=size,
                                   mode="bilinear")
            levels.append(getattr(self, "process{}".format(i))(scaled + levels[-1]))
        return self.compression(paddle.concat(levels, axis=1)) + self.shortcut(x)
