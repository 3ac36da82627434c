"""Weight initialisers shared by the models (PaddleSeg / timm conventions)."""
import paddle.nn as nn
from paddleseg.cvlibs.param_init import constant_init, kaiming_normal_init, trunc_normal_init


def init_kaiming(layer):
    """Kaiming-normal convs, unit BN, truncated-normal (0.02) linears: for ``Layer.apply``."""
    _init(layer, conv=kaiming_normal_init)


def init_trunc_normal(std):
    """Truncated-normal(std) convs and linears, unit BN: returns a function for ``Layer.apply``."""
    return lambda layer: _init(layer, conv=lambda w: trunc_normal_init(w, std=std), linear_std=std)


def _init(layer, conv, linear_std=0.02):
    if isinstance(layer, nn.Linear):
        trunc_normal_init(layer.weight, std=linear_std)
        if layer.bias is not None:
            constant_init(layer.bias, value=0.0)
    elif isinstance(layer, (nn.SyncBatchNorm, nn.BatchNorm2D)):
        constant_init(layer.weight, value=1.0)
        constant_init(layer.bias, value=0.0)
    elif isinstance(layer, nn.Conv2D):
        conv(layer.weight)
        if layer.bias is not None:
            constant_init(layer.bias, value=0.0)
