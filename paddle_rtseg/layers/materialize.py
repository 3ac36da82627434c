"""Parameters computed from other parameters, materialized for export.

Some layers compute a weight from their parameters in dygraph (SegFormer++'s per-stage decoder
filters, Mix-FFN's Linear weights used as 1x1 conv filters). Traced as is, the exported graph would
compute the filter at run time, and ``paddle_lite_opt --valid_targets=arm`` crashes (signal 11) on
a ``conv2d`` whose filter is not a persistable variable. Such layers define ``prepare_export()``
(called by :func:`paddle_rtseg.exporting.static_graph.prepare_export` on the loaded model just before tracing),
which stores the computed values here as parameters of their own. Checkpoint keys are untouched: the
new parameters exist only on the model being exported.
"""
import paddle
import paddle.nn as nn


def materialize(layer, name, value, global_name=None):
    """Register ``value`` (a tensor, computed from ``layer``'s parameters) as a frozen parameter
    ``name`` of ``layer`` and return it; ``global_name``: the variable's name in the exported
    program (default: Paddle's generated one)."""
    value = value.detach()
    param = layer.create_parameter(value.shape, dtype=value.dtype,
                                   attr=paddle.ParamAttr(name=global_name) if global_name else None,
                                   default_initializer=nn.initializer.Assign(value.numpy()))
    param.stop_gradient = True
    layer.add_parameter(name, param)
    return param


def exporting(layer):
    """True while tracing a layer whose ``prepare_export()`` ran (static graph, materialized
    parameters present)."""
    return not paddle.in_dynamic_mode() and getattr(layer, "_exported", None) is not None
