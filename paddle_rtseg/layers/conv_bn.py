"""Bias-free convolution followed by BatchNorm (and optionally an activation): SeaFormer's unit.

Every convolution in SeaFormer (MobileNetV2 stages, attention projections, light head) is followed
by BatchNorm, so the whole network folds into plain convolutions at deployment.
"""
import paddle
import paddle.nn as nn


class ConvBN(nn.Layer):
    """``act(BN(conv(x)))`` with a bias-free conv.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: of the convolution (padding keeps
            the size at stride 1: ``kernel_size // 2``).
        act: activation layer class applied after BN (``None``: none).
        bn_weight_init: initial BN scale; 0 makes the branch start as a constant (SeaFormer's
            attention projections, as in LeViT).
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, groups=1, act=None,
                 bn_weight_init=1.0):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias_attr=False)
        self.norm = nn.BatchNorm2D(
            out_channels, weight_attr=paddle.ParamAttr(
                initializer=nn.initializer.Constant(bn_weight_init)))
        self.act = act() if act is not None else None

    def forward(self, x):
        x = self.norm(self.conv(x))
        return x if self.act is None else self.act(x)
