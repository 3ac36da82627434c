"""Convolutional feed-forward network of the RTFormer block: ``BN -> 3x3 conv -> GELU -> 3x3 conv``."""
import paddle.nn as nn

from .norm import bn2d


class ConvFFN(nn.Layer):
    """RTFormer's FFN (two 3x3 convs instead of a per-pixel MLP). Args: channels, hidden_channels
    (default ``channels``), drop_rate (dropout after each conv)."""

    def __init__(self, channels, hidden_channels=None, drop_rate=0.0):
        super().__init__()
        hidden_channels = hidden_channels or channels
        self.norm = bn2d(channels, epsilon=1e-6)
        self.conv1 = nn.Conv2D(channels, hidden_channels, 3, 1, 1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2D(hidden_channels, channels, 3, 1, 1)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x):
        x = self.drop(self.act(self.conv1(self.norm(x))))
        return self.drop(self.conv2(x))
