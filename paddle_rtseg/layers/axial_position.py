"""Squeeze-axial positional embedding (SeaFormer, Wang et al., ICLR 2023, Sec. 3.2, Eq. 3).

After the squeeze (mean over one axis), queries and keys are sequences along the other axis. Each
gets a learned embedding of fixed length (16) that is linearly resampled (``align_corners=False``) to
the sequence length and added, so one set of weights serves every input size.

Deployability: 1-D ``linear`` interpolation exports as ``linear_interp_v2``, which Paddle Lite has no
ARM kernel for (PP-MobileSeg's export failure). The embedding is kept as a ``(1, C, 16, 1)`` or
``(1, C, 1, 16)`` image and resized with *bilinear* interpolation along one axis only: with the other
axis at size 1 -> 1 its weight is exactly 1, so this is the same function as 1-D linear interpolation
(same half-pixel source coordinates, same clamping), and it exports as ``bilinear_interp_v2``, which
every backend runs. The length may be a Python int or a run-time shape tensor (dynamic-size export).
One exception is handled apart: for an output of length 1 Paddle's kernels return the first sample,
not the centre one PyTorch (and the definition) gives.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .shape import broadcast_explicitly, dim


class SqueezeAxialPositionalEmbedding(nn.Layer):
    """Adds a learned, length-resampled positional embedding to a squeezed sequence.

    Args:
        channels: channels of the sequence (all heads' query or key channels).
        axis: 2 for sequences along H (input ``(B, C, H, 1)``), 3 along W (input ``(B, C, 1, W)``).
        length: length of the learned embedding (16 in the paper).

    The parameter ``pos_embed`` has the authors' shape ``(1, channels, length)``.
    """

    def __init__(self, channels, axis, length=16):
        super().__init__()
        if axis not in (2, 3):
            raise ValueError("axis must be 2 (H) or 3 (W), got {}".format(axis))
        self.axis = axis
        self.pos_embed = self.create_parameter(
            shape=[1, channels, length], default_initializer=nn.initializer.Normal(std=1.0))

    def embedding(self, length):
        """The embedding resampled to ``length`` (int or 0-D int tensor), shaped like the input."""
        channels, size = self.pos_embed.shape[1], self.pos_embed.shape[2]
        image = self.pos_embed.reshape(
            [1, channels, size, 1] if self.axis == 2 else [1, channels, 1, size])
        if isinstance(length, int) and length == 1:
            return self._centre(image, size)
        out_size = [length, 1] if self.axis == 2 else [1, length]
        resampled = F.interpolate(image, size=out_size, mode="bilinear", align_corners=False)
        if isinstance(length, int):
            return resampled
        # dynamic length, decided at run time: the centre sample when it is 1. A blend of equal
        # shapes rather than ``paddle.where``, whose broadcasting adds ~10 small ops per embedding
        # (oneDNN runs broadcasts over H/W with its slow reference kernel: shape.py)
        is_one = (length == 1).astype(resampled.dtype)
        centre = broadcast_explicitly(self._centre(image, size), resampled)
        return resampled + (centre - resampled) * is_one

    def _centre(self, image, size):
        """Length-1 resampling: the sample at source coordinate ``size / 2 - 0.5``. Paddle's
        interpolation kernels take the first sample for an output of size 1; PyTorch, like the
        definition, takes the centre."""
        centre = paddle.slice(image, [self.axis], [(size - 1) // 2], [size // 2 + 1])
        return paddle.mean(centre, axis=self.axis, keepdim=True)

    def forward(self, x):
        return x + self.embedding(dim(x, self.axis))
