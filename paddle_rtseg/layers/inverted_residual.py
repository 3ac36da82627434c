"""MobileNetV2 inverted residual block (Sandler et al., CVPR 2018), SeaFormer's convolutional stages.

``x -> [1x1 expand Conv-BN-act] -> kxk depthwise Conv-BN-act (stride s) -> 1x1 project Conv-BN``,
plus the input when the shape is kept.
"""
import paddle.nn as nn

from .conv_bn import ConvBN


class InvertedResidual(nn.Layer):
    """Args: in_channels, out_channels, kernel_size (depthwise), stride (1 or 2), expand_ratio
    (hidden width = ``round(in_channels * expand_ratio)``; 1 skips the expansion), act (activation
    class after the expansion and the depthwise conv)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio, act=nn.ReLU):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("stride must be 1 or 2, got {}".format(stride))
        hidden = int(round(in_channels * expand_ratio))
        self.expand = ConvBN(in_channels, hidden, act=act) if expand_ratio != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel_size, stride, groups=hidden, act=act)
        self.project = ConvBN(hidden, out_channels)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return x + out if self.use_residual else out
