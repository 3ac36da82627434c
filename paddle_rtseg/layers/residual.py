"""ResNet basic block (two 3x3 convs), the convolutional stages of RTFormer/DDRNet."""
import paddle.nn as nn

from .norm import bn2d, conv2d


class BasicBlock(nn.Layer):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; ``final_relu=False`` omits the last ReLU
    (the last block of a stage, whose output feeds another branch first)."""

    def __init__(self, in_channels, out_channels, stride=1, final_relu=True):
        super().__init__()
        self.conv1 = conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = bn2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = conv2d(out_channels, out_channels, 3, 1, 1)
        self.bn2 = bn2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(conv2d(in_channels, out_channels, 1, stride),
                                            bn2d(out_channels))
        self.final_relu = final_relu

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out) if self.final_relu else out


def make_stage(in_channels, out_channels, num_blocks, stride=1):
    """A stage of ``num_blocks`` BasicBlocks; the first may downsample; after the first, the last
    block has no final ReLU (PaddleSeg/DDRNet's ``_make_layer``)."""
    blocks = [BasicBlock(in_channels, out_channels, stride)]
    blocks += [BasicBlock(out_channels, out_channels, 1, final_relu=i < num_blocks - 1)
               for i in range(1, num_blocks)]
    return nn.Sequential(*blocks)
