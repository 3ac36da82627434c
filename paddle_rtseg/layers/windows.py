"""Non-overlapping local windows on channels-last maps (Swin, Liu et al., ICCV 2021, Sec. 3.2; used
by MixFormer's window attention), written so that an exported graph takes any H/W.

``pad_to_multiple`` pads bottom/right with zeros, as PaddleClas's Swin and MixFormer blocks do. With a
known size the padding is exact; with a runtime size it pads a constant ``m - 1`` and slices to the
next multiple of ``m`` (integer ``+``, ``//``, ``*`` on the shape: ops with integer kernels on Paddle
Lite ARM). Partition and reverse use only reshapes with constant ``0``/``-1`` entries, transposes
and flattens: the window grid stays two axes, so no shape tensor feeds a reshape (see
:func:`window_partition` for the Paddle Lite defect that makes this matter).
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


def window_partition(x, window_size):
    """``(B, H, W, C)`` with H, W multiples of ``window_size`` -> windows ``(B, H/ws, W/ws, ws * ws,
    C)``: window ``(b, i, j)`` holds rows ``i*ws..``, columns ``j*ws..`` of image ``b``, row-major.

    The window grid stays two axes of the tensor, so :func:`window_reverse` needs no shape
    (every reshape here has constant ``0``/``-1``/``ws``/``C`` entries). Why not flatten the windows
    to ``(B * nh * nw, ws * ws, C)`` and reshape back with the recorded grid: Paddle Lite 2.13
    caches a ``reshape2``'s output shape keyed by its ``X`` dims only and does not check a ``Shape``
    tensor input's values (``lite/operators/reshape_op.cc``), so on one predictor a second input
    with the same window count but another grid (1x3x96x128 then 1x3x160x96: 6 windows at 1/8,
    2x3 then 3x2) got the first input's grid, and the next elementwise op aborted the process
    (``elementwise_op_func.h:340 Wrong broadcast type``, tests/test_arm.py)."""
    ws = window_size
    c = x.shape[-1]
    x = x.reshape([0, 0, -1, ws, c])                   # B, H, nw, ws, C
    x = x.transpose([0, 2, 1, 3, 4])                   # B, nw, H, ws, C
    x = x.reshape([0, 0, -1, ws, ws, c])               # B, nw, nh, ws, ws, C
    x = x.transpose([0, 2, 1, 3, 4, 5])                # B, nh, nw, ws(row), ws(col), C
    return x.reshape([0, 0, 0, ws * ws, c])


def window_reverse(windows, window_size):
    """Inverse of :func:`window_partition`: ``(B, nh, nw, ws * ws, C)`` -> ``(B, nh * ws, nw * ws,
    C)``; any channel count ``C``."""
    ws = window_size
    x = windows.reshape([0, 0, 0, ws, ws, -1])                  # B, nh, nw, ws, ws, C
    x = x.transpose([0, 1, 3, 2, 4, 5])                         # B, nh, ws, nw, ws, C
    return x.flatten(3, 4).flatten(1, 2)
