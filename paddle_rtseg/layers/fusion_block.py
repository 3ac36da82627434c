"""SeaFormer light head's fusion block (Wang et al., ICLR 2023, Sec. 3.3, Fig. 2 left).

Semantic context from a low-resolution transformer stage gates the high-resolution detail feature:
``Conv-BN(detail) * upsample(hard_sigmoid(Conv-BN(context)))``, the sigmoid taken before the
bilinear upsample (``align_corners=False``), as in the authors' code.
"""
import paddle.nn as nn
import paddle.nn.functional as F

from .conv_bn import ConvBN
from .hard_sigmoid import hard_sigmoid
from .shape import spatial_size


class FusionBlock(nn.Layer):
    """Args: detail_channels, context_channels, out_channels (both 1x1 embeddings' width)."""

    def __init__(self, detail_channels, context_channels, out_channels):
        super().__init__()
        self.local_embedding = ConvBN(detail_channels, out_channels)
        self.global_embedding = ConvBN(context_channels, out_channels)

    def forward(self, detail, context):
        gate = hard_sigmoid(self.global_embedding(context))
        gate = F.interpolate(gate, size=spatial_size(detail), mode="bilinear", align_corners=False)
        return self.local_embedding(detail) * gate
