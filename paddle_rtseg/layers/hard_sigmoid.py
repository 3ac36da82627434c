"""Hard sigmoid ``ReLU6(x + 3) / 6`` (MobileNetV3), SeaFormer's gate (Sec. 3.2 and the light head).

Written as add/ReLU6/scale rather than Paddle's ``hard_sigmoid`` op: those three ops run in every
backend, while ``hard_sigmoid`` needs Paddle Lite built with extra ops.
"""
import paddle.nn as nn
import paddle.nn.functional as F


def hard_sigmoid(x):
    """``ReLU6(x + 3) / 6``: 0 below -3, 1 above 3, linear in between."""
    return F.relu6(x + 3.0) / 6.0


class HardSigmoid(nn.Layer):
    """Layer form of :func:`hard_sigmoid`."""

    def forward(self, x):
        return hard_sigmoid(x)
