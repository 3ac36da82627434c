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
