"""Shape helpers that keep exported graphs free of unknown (-1) dimensions where they can."""
import paddle


@paddle.jit.not_to_static  # plain Python at export (no control-flow ops in the graph)
def dim(x, axis):
    """Size of ``x`` along ``axis``: a Python int when known (dygraph, fixed-shape export), else a
    0-D int tensor read from ``paddle.shape`` at run time (dynamic-shape export)."""
    size = x.shape[axis]
    if isinstance(size, int) and size >= 0:
        return size
    return paddle.shape(x)[axis]


@paddle.jit.not_to_static
def spatial_size(x):
    """``[H, W]`` of an NCHW tensor, for ``F.interpolate(size=...)``: ints when known."""
    h, w = dim(x, 2), dim(x, 3)
    if isinstance(h, int) and isinstance(w, int):
        return [h, w]
    return paddle.shape(x)[2:]


@paddle.jit.not_to_static
def broadcast_explicitly(t, like):
    """``t`` repeated along its size-1 axes to ``like``'s shape: unchanged in dygraph (operators
    broadcast), an explicit ``tile`` in a static graph (export). Same values either way.

    Why: Paddle Inference's oneDNN runs an add whose operand broadcasts over a spatial axis of an
    NHWC tensor (``(B, C, H, W) + (B, C, H, 1)``) with oneDNN's reference kernel (``binary ref:any``
    in ``ONEDNN_VERBOSE=1``), many times slower than its JIT add of equal shapes; its ``expand_v2``
    kernel is the same reference broadcast. ``tile`` runs in every backend (Paddle Lite: a Host
    kernel)."""
    if paddle.in_dynamic_mode():
        return t
    repeats = [dim(like, axis) if t.shape[axis] == 1 and like.shape[axis] != 1 else 1
               for axis in range(len(like.shape))]
    return paddle.tile(t, repeats)
