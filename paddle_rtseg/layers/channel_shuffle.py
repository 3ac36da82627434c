"""Channel shuffle (ShuffleNet; PalQuant ``shuffle_utils.channel_shuffle``).

``channel_shuffle(x, G)`` views the C channels as [G, C/G] and transposes to [C/G, G]: output
channel ``j * G + g`` is input channel ``g * C/G + j``, so after it every group of C/G consecutive
channels holds channels from all G groups. PalQuant runs it on the main branch of every residual
block that has a downsample path, before the residual add. Built from reshape/transpose only (every
export backend has them); batch and spatial sizes may be dynamic.
"""
import paddle.nn as nn

from .shape import dim

__all__ = ["channel_shuffle", "ChannelShuffle"]


def channel_shuffle(x, groups):
    """Shuffle the channels of NCHW ``x`` across ``groups`` groups (identity for one group)."""
    channels = x.shape[1]
    if groups == 1:
        return x
    if channels % groups:
        raise ValueError("channel_shuffle: {} channels do not split into {} groups".format(
            channels, groups))
    h, w = dim(x, 2), dim(x, 3)
    x = x.reshape([0, groups, channels // groups, h, w]).transpose([0, 2, 1, 3, 4])
    return x.reshape([0, channels, h, w])


class ChannelShuffle(nn.Layer):
    """Layer form of :func:`channel_shuffle`."""

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)

    def extra_repr(self):
        return "groups={}".format(self.groups)
