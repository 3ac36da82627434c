"""Non-overlapping local windows on channels-last maps (Swin, Liu et al., ICCV 2021, Sec. 3.2; used
by MixFormer's window attention), written so that an exported graph takes any H/W.

``pad_to_multiple`` pads bottom/right with zeros, as PaddleClas's Swin and MixFormer blocks do. With a
known size the padding is exact; with a runtime size it pads a constant ``m - 1`` and slices to the
next multiple of ``m`` (integer ``+``, ``//``, ``*`` on the shape: ops with integer kernels on Paddle
Lite ARM). Partition and reverse use only reshapes, transposes and flattens; the reverse reshape
takes the window grid as a list of scalars (see :func:`window_partition` for the Paddle Lite
defect that makes this matter).
"""
import paddle
import paddle.nn.functional as F

from .shape import dim


@paddle.jit.not_to_static
def pad_to_multiple(x, multiple, data_format="NHWC"):
    """Zero-pad the H and W of a 4-D ``x`` after their end to multiples of ``multiple``.

    Always pads ``multiple - 1`` at the end of both axes and slices to the next multiple: Paddle
    Lite's ``pad3d`` (NHWC, x86 runtime) applied unequal H and W amounts swapped (a fixed-size
    export failed), and oneDNN's kernel for the general ``pad`` op crashes, so only ``pad3d`` with
    equal amounts is used. With known sizes the slice ends are constants, otherwise ``+ // *`` on
    the runtime shape.
    """
    axes = (1, 2) if data_format == "NHWC" else (2, 3)
    h, w = dim(x, axes[0]), dim(x, axes[1])
    if isinstance(h, int) and isinstance(w, int) and h % multiple == 0 and w % multiple == 0:
        return x
    x = F.pad(x, [0, multiple - 1, 0, multiple - 1], data_format=data_format)
    ends = [(s + multiple - 1) // multiple * multiple for s in (h, w)]
    return paddle.slice(x, axes=list(axes), starts=[0, 0], ends=ends)


def crop(x, sizes, axes=(1, 2)):
    """``x`` cut back to ``sizes`` (ints or runtime 0-D tensors) along ``axes``."""
    if all(isinstance(s, int) for s in sizes) and all(x.shape[a] == s for a, s in zip(axes, sizes)):
        return x
    return paddle.slice(x, axes=list(axes), starts=[0] * len(axes), ends=list(sizes))


@paddle.jit.not_to_static
def _grid(x):
    """``[B, nh, nw]`` of a ``(B, nh, nw, ws, ws, C)`` tensor: ints when known, else three 0-D int
    tensors (a list: a reshape then takes them as a ``ShapeTensor`` list, not a ``Shape`` tensor)."""
    return [dim(x, axis) for axis in range(3)]


def window_partition(x, window_size):
    """``(B, H, W, C)`` with H, W multiples of ``window_size`` -> ``(windows, grid)``: windows
    ``(B * H/ws * W/ws, ws * ws, C)`` in row-major window order (batch, window row, window column),
    and ``grid``, ``[B, H/ws, W/ws]``, that :func:`window_reverse` needs.

    Why ``grid`` is a list of scalars and not ``paddle.shape`` of the grid tensor: Paddle Lite 2.13
    reuses a ``reshape2``'s output shape while its ``X`` dims equal the previous run's, and compares
    the values of a ``ShapeTensor`` list but never those of a ``Shape`` tensor input
    (``lite/operators/reshape_op.cc``). With a ``Shape`` tensor, a second input on one predictor
    with the same window count but another grid (1x3x96x128 then 1x3x160x96: 6 windows at 1/8, 2x3
    then 3x2) got the first input's grid, and the next elementwise op aborted the process
    (``elementwise_op_func.h:340 Wrong broadcast type``, issue 30, tests/test_arm.py). Keeping the
    grid as tensor axes instead (``(B, nh, nw, ws * ws, C)`` windows) needs no shape at all, but
    the attention's matmuls then run on 6-D tensors, which Paddle Inference's oneDNN ran 7x slower
    (MixFormer-B1 at 512x1024)."""
    ws = window_size
    c = x.shape[-1]
    x = x.reshape([0, 0, -1, ws, c])                   # B, H, nw, ws, C
    x = x.transpose([0, 2, 1, 3, 4])                   # B, nw, H, ws, C
    x = x.reshape([0, 0, -1, ws, ws, c])               # B, nw, nh, ws, ws, C
    x = x.transpose([0, 2, 1, 3, 4, 5])                # B, nh, nw, ws(row), ws(col), C
    return x.reshape([-1, ws * ws, c]), _grid(x)


def window_reverse(windows, grid, window_size):
    """Inverse of :func:`window_partition`: ``(B * nh * nw, ws * ws, C)`` -> ``(B, nh * ws,
    nw * ws, C)``, ``grid`` = ``[B, nh, nw]``; any channel count ``C``."""
    ws = window_size
    x = windows.reshape(list(grid) + [ws, ws, -1])     # B, nh, nw, ws, ws, C
    x = x.transpose([0, 1, 3, 2, 4, 5])                # B, nh, ws, nw, ws, C
    return x.flatten(3, 4).flatten(1, 2)
