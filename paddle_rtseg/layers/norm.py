"""Conv/BN constructors with PaddleSeg RTFormer's defaults (bias-free convs, BN momentum 0.1, lr_mult)."""
import paddle
import paddle.nn as nn


def conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False, lr_mult=1.0,
           **kwargs):
    """``nn.Conv2D`` whose parameters learn at ``lr_mult`` x the base learning rate."""
    weight_attr = paddle.ParamAttr(learning_rate=lr_mult)
    bias_attr = paddle.ParamAttr(learning_rate=lr_mult) if bias else False
    return nn.Conv2D(in_channels, out_channels, kernel_size, stride, padding,
                     weight_attr=weight_attr, bias_attr=bias_attr, **kwargs)


def bn2d(channels, momentum=0.1, lr_mult=1.0, **kwargs):
    """``nn.BatchNorm2D`` (Paddle momentum semantics: running = m * running + (1 - m) * batch)."""
    attr = paddle.ParamAttr(learning_rate=lr_mult)
    return nn.BatchNorm2D(channels, momentum=momentum, weight_attr=attr, bias_attr=attr, **kwargs)
