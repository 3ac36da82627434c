"""PalQuant's cyclic shuffle module (ECCV 2022, Sec. 3; code ``shuffle_utils.CyclicShuffle``).

The G parallel low-precision groups of a PalQuant network never mix inside a grouped convolution.
The cyclic shuffle rolls the groups by one (input groups reordered ``[1, 2, ..., G-1, 0]``), so a
grouped quantized 1x1 conv sees, in its group ``g``, the features of group ``g + 1``; then BN and
ReLU, plus the unshuffled input (no ReLU after the sum): ``x + relu(bn(qconv1x1(roll(x))))``.
PalQuant puts one before layer2, layer3 and layer4. The roll is two channel slices and a concat.
State-dict names follow the authors: ``conv1.0`` (the QConv), ``conv1.1`` (the BN).
"""
import paddle
import paddle.nn as nn

from .palquant_conv import QConv1x1

__all__ = ["cyclic_permute", "CyclicShuffle"]


def cyclic_permute(x, groups):
    """Roll the channel groups of NCHW ``x`` by one: group ``g`` of the output is group
    ``(g + 1) % groups`` of the input."""
    channels = x.shape[1]
    if channels % groups:
        raise ValueError("cyclic_permute: {} channels do not split into {} groups".format(
            channels, groups))
    if groups == 1:
        return x
    step = channels // groups
    return paddle.concat([x[:, step:], x[:, :step]], axis=1)


class CyclicShuffle(nn.Layer):
    """``x + relu(bn(grouped quantized 1x1 conv(cyclic_permute(x))))`` over ``channels``."""

    def __init__(self, channels, groups=1, weight_levels=4, act_levels=4):
        super().__init__()
        self.channels, self.groups = channels, groups
        self.conv1 = nn.Sequential(
            QConv1x1(channels, channels, groups=groups, weight_levels=weight_levels,
                     act_levels=act_levels),
            nn.BatchNorm2D(channels, momentum=0.9, epsilon=1e-5),
            nn.ReLU())

    def forward(self, x):
        return self.conv1(cyclic_permute(x, self.groups)) + x

    def extra_repr(self):
        return "channels={}, groups={}".format(self.channels, self.groups)
