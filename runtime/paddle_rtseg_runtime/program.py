"""Reading a legacy ``.pdmodel`` program, and the rule for oneDNN's resize pass."""


def read_program(pdmodel_path):
    """The ``ProgramDesc`` protobuf of a legacy ``.pdmodel`` (needs Paddle)."""
    from paddle.base.proto import framework_pb2
    program = framework_pb2.ProgramDesc()
    with open(pdmodel_path, "rb") as f:
        program.ParseFromString(f.read())
    return program


def tensor_desc(var):
    """The ``TensorDesc`` (``data_type``, ``dims``) of a program variable: ``VarType.dense_tensor``
    in Paddle 3.0's protobuf, ``VarType.lod_tensor`` in Paddle 2.6's."""
    vartype = var.type
    field = "dense_tensor" if "dense_tensor" in vartype.DESCRIPTOR.fields_by_name else "lod_tensor"
    return getattr(vartype, field).tensor


def onednn_resize_is_exact(model_file):
    """Whether Paddle Inference may run this program's resizes with oneDNN resampling.

    Paddle 3.0 leaves ``interpolate_onednn_pass`` out of its default oneDNN passes. It is 4x faster
    than the native kernel (RTFormer-Slim's final 8x upsample at 512x1024: 44 -> 11 ms) and agrees
    with it for bilinear NCHW resizes to a given size with ``align_corners=False, align_mode=0``,
    but not for nearest, ``align_corners=True`` or a ``scale_factor`` resize (wrong values, all
    measured). So: True only for a legacy program whose every resize is of that kind.
    """
    if not model_file.endswith(".pdmodel"):
        return False  # PIR programs do not go through the legacy pass builder
    for block in read_program(model_file).blocks:
        for op in block.ops:
            if "interp" not in op.type:
                continue
            attrs = {a.name: a for a in op.attrs}
            if (op.type not in ("bilinear_interp", "bilinear_interp_v2")
                    or any(name not in attrs for name in ("align_corners", "align_mode",
                                                          "data_layout"))
                    or attrs["align_corners"].b or attrs["align_mode"].i != 0
                    or attrs["data_layout"].s != "NCHW"
                    or ("scale" in attrs and any(v > 0 for v in attrs["scale"].floats))
                    or any(i.parameter == "Scale" and i.arguments for i in op.inputs)):
                return False
    return True
