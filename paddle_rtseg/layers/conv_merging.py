"""Convolutional patch merging of MixFormer (Chen et al., CVPR 2022, Sec. 3.2 / Fig. 3; PaddleClas
``ConvMerging``): BatchNorm, then a 2x2 stride-2 conv to the next stage's width, replacing Swin's
concatenate-and-linear patch merging.

PaddleClas requires even H and W. Here an odd side gets one zero row/column of padding after the
BN (the conv's own bottom/right padding), so any size works and the output is ``ceil(H/2)``; on even
sizes the pad is never read and the result is PaddleClas's.
"""
import paddle.nn as nn
from paddleseg.models import layers


class ConvMerging(nn.Layer):
    """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), out_dim)``, channels last.

    Args:
        dim: input channels.
        out_dim: output channels.
    """

    def __init__(self, dim, out_dim):
        super().__init__()
        self.norm = layers.SyncBatchNorm(dim)
        self.reduction = nn.Conv2D(dim, out_dim, 2, stride=2, padding=[0, 1, 0, 1])

    def forward(self, x):
        x = self.norm(x.transpose([0, 3, 1, 2]))
        return self.reduction(x).transpose([0, 2, 3, 1])
