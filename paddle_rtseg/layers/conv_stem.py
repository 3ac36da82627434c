"""Convolutional stem of MixFormer (Chen et al., CVPR 2022, Sec. 3.2 "MixFormer" / Fig. 3; PaddleClas
``ConvEmbed``): three 3x3 Conv-BN-GELU (the first with stride 2) at ``C/2`` channels, then a
``p/2 x p/2`` stride-``p/2`` conv to ``C`` channels and a LayerNorm over channels, i.e. a 1/``p``
patch embedding (``p = 4``) whose early layers see overlapping 3x3 context instead of a linear
patchify. The image is zero-padded bottom/right to a multiple of ``p`` first, as in PaddleClas.
"""
import paddle.nn as nn
from paddleseg.models import layers

from .windows import pad_to_multiple


class ConvStem(nn.Layer):
    """Conv stem + patch projection (+ LayerNorm); ``(B, 3, H, W)`` -> ``(B, H/p, W/p, C)``
    (channels last), ``H/p`` rounded up.

    Args:
        in_channels: image channels.
        embed_dim: output channels ``C``.
        patch_size: total stride ``p`` (even).
        norm: LayerNorm after the projection (PaddleClas ``patch_norm``, True).
    """

    def __init__(self, in_channels=3, embed_dim=96, patch_size=4, norm=True):
        super().__init__()
        if patch_size % 2:
            raise ValueError("patch_size must be even, got {}".format(patch_size))
        self.patch_size = patch_size
        half = embed_dim // 2
        blocks = []
        for i in range(3):
            blocks += [nn.Conv2D(in_channels if i == 0 else half, half, 3,
                                 stride=patch_size // 2 if i == 0 else 1, padding=1),
                       layers.SyncBatchNorm(half), nn.GELU()]
        self.stem = nn.Sequential(*blocks)
        self.proj = nn.Conv2D(half, embed_dim, patch_size // 2, stride=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x):
        x = pad_to_multiple(x, self.patch_size, data_format="NCHW")
        x = self.proj(self.stem(x)).transpose([0, 2, 3, 1])
        return self.norm(x) if self.norm is not None else x
