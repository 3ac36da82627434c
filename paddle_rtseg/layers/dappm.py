"""Deep Aggregation Pyramid Pooling Module (DDRNet, Hong et al. 2021), RTFormer's context head.

Average pools at 1/2, 1/4, 1/8 and global scale; each level is upsampled, added to the previous one
and refined by a 3x3 conv (hierarchical fusion), then all five are concatenated, compressed by a 1x1
conv and added to a 1x1 shortcut. Parameter names follow PaddleSeg (``scale0..4``, ``process1..4``,
``compression``, ``shortcut``).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .materialize import exporting, materialize
from .norm import bn2d, conv2d
from .shape import spatial_size


class ZeroPadAvgPool2D(nn.Layer):
    """``nn.AvgPool2D(k, s, padding=k // 2, exclusive=False)`` written as explicit zero padding and
    an average pool without padding: the same function (padded zeros count, every window divides by
    ``k * k``), chosen because Paddle Lite's ARM pooling with ``exclusive=False`` divides by the
    padded extent instead of ``k * k`` when one window overlaps the padding on both sides (DAPPM's
    9/4 and 17/8 pools on a 1/32 map of <= 4 / <= 8 px, i.e. inputs of 256 px or less: 1e-2 logit
    error on ARM). A pool without padding has no such case on any backend.

    Exports (after :meth:`prepare_export`) run it as a depth-wise convolution with a constant
    ``1 / k^2`` filter, stride ``s`` and zero padding ``k // 2``: the same function again, one
    operator, where Paddle exports a 4-D zero pad as ``unsqueeze2`` + ``pad3d`` + ``squeeze2``,
    which Paddle Inference runs outside oneDNN (reorders to plain layout and back)."""

    def __init__(self, kernel_size, stride, channels):
        super().__init__()
        self.kernel_size, self.stride, self.channels = kernel_size, stride, channels
        self.pad = nn.Pad2D(kernel_size // 2, mode="constant", value=0.0)
        self.pool = nn.AvgPool2D(kernel_size=kernel_size, stride=stride, padding=0)

    def prepare_export(self):
        k = self.kernel_size
        self._exported = materialize(self, "export_filter",
                                     paddle.full([self.channels, 1, k, k], 1.0 / (k * k)))

    def forward(self, x):
        if exporting(self):
            return F.conv2d(x, self._exported, stride=self.stride, padding=self.kernel_size // 2,
                            groups=self.channels)
        return self.pool(self.pad(x))


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
            pool = ZeroPadAvgPool2D(k, s, in_channels)
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
