"""RTFormer's segmentation head: ``BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 1x1 conv (bias)``."""
import paddle.nn as nn

from .norm import bn2d, conv2d


class SegHead(nn.Layer):
    """Args: in_channels, inter_channels, num_classes, lr_mult (learning-rate multiplier)."""

    def __init__(self, in_channels, inter_channels, num_classes, lr_mult=1.0):
        super().__init__()
        self.bn1 = bn2d(in_channels, lr_mult=lr_mult)
        self.conv1 = conv2d(in_channels, inter_channels, 3, padding=1, lr_mult=lr_mult)
        self.bn2 = bn2d(inter_channels, lr_mult=lr_mult)
        self.relu = nn.ReLU()
        self.conv2 = conv2d(inter_channels, num_classes, 1, bias=True, lr_mult=lr_mult)

    def forward(self, x):
        x = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(x)))
