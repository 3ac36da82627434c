"""Exact int8 programs for PalQuant's low-bit convolutions (Hu et al., ECCV 2022; issue 27).

A k-bit PalQuant convolution is an int8 convolution whose integers use only k bits. Exported, each
:class:`~paddle_rtseg.layers.palquant_conv.QConv` is already in its integer form (its
``prepare_export``): the activation rounded in the graph to its level index ``k_a`` (0 .. 2**k - 1),
the filter stored as the odd integers ``K`` of its levels (W2: -3 -1 1 3) under the name
:data:`~paddle_rtseg.layers.palquant_conv.INTEGER_WEIGHT_PREFIX`, the output multiplied by one
float scale. So int8 kernels compute it exactly when the quantization scale is "one per integer":
``q = round(x / 1) = x`` for activations and weights alike, accumulated in int32.

* Paddle's programs (:func:`quantize_exact`), in both forms. Fake-quant ops (``model.pdmodel``:
  Paddle Lite's ARM/x86 int8 kernels, Paddle Inference oneDNN): Paddle's PTQ
  (:func:`~paddle_rtseg.quantization.ptq.post_training_quantize`) inserts them on the integer
  convolutions only (every other convolution and matmul is skipped and stays fp32), then
  :func:`set_exact_scales` replaces its calibrated scales by the exact ones (Paddle's scale ``S``
  means ``q = round(x * 127 / S)``: ``S = 127``) and its rounded weights by ``K``.
  quantize_linear/dequantize_linear pairs (``model_qdq.*``: Paddle Inference's OpenVINO engine):
  written by :func:`write_qdq` on the integer convolutions alone (Paddle's PTQ would also put
  8-bit "observer" pairs on every other tensor, which OpenVINO executes).
* ONNX (:func:`onnx_conv_integer`): each integer ``Conv`` becomes ``QuantizeLinear`` (scale 1) ->
  ``ConvInteger`` (uint8 x uint8, weights ``K + 128`` with zero point 128: ONNX Runtime's CPU
  kernel takes no int8 weights) -> ``Cast`` to float: an integer kernel with an int32 result.

Paddle Inference's oneDNN int8 is not exact: its passes dequantize the weights, fold BatchNorm and
re-quantize every filter to 127 / max|w| per channel (``compute_propagate_scales_mkldnn_pass``), and
127 is no multiple of 3 or 15, so W2/W4 levels land between int8 values (measured in
``tests/test_palquant_int8.py``). No Paddle backend has 2-bit kernels: the int8 kernels run the
low-bit networks exactly, not faster than any int8 network.
"""
import numpy as np

from paddle_rtseg.layers.palquant_conv import INTEGER_WEIGHT_PREFIX

CONV_OPS = ("conv2d", "depthwise_conv2d")
QUANTIZABLE = ("conv2d", "depthwise_conv2d", "matmul_v2")
PADDLE_INT8_RANGE = 127.0  # Paddle's quantize ops: q = round(x * 127 / scale)


class NotPalQuantError(ValueError):
    """The program has no integer (PalQuant) convolution."""


def _is_integer_weight(name):
    return name.startswith(INTEGER_WEIGHT_PREFIX)


def load_program(model_dir):
    """``(program, scope)`` of an exported legacy-format model directory (the legacy IR must be
    active: the callers' ``FLAGS_enable_pir_api=0``), read in static mode, which is left as it was."""
    import paddle
    dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        scope = paddle.static.Scope()
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            program, _, _ = paddle.static.load_inference_model(
                model_dir.rstrip("/") + "/model", exe)
    finally:
        if dynamic:
            paddle.disable_static()
    return program, scope


def split_weights(program):
    """``(integer, other)``: the filter names of the integer convolutions, and the weights of every
    other conv/matmul (which PTQ must leave in float)."""
    block = program.global_block()
    integer, other = [], []
    for op in block.ops:
        if op.type not in QUANTIZABLE:
            continue
        for name in op.input_arg_names:
            if block.has_var(name) and block.var(name).persistable:
                (integer if _is_integer_weight(name) else other).append(name)
    return integer, other


def is_palquant(model_dir):
    """True if the legacy-format export ``model_dir`` has PalQuant integer convolutions."""
    program, _ = load_program(model_dir)
    return bool(split_weights(program)[0])


def weight_bits(program, scope):
    """Bits of the signed integers the filters hold (3 for W2's -3 -1 1 3, 5 for W4's -15..15):
    recorded for the runners, which refuse 8-bit weights on CPUs without VNNI."""
    block = program.global_block()
    biggest = 0
    for op in block.ops:
        if op.type in CONV_OPS:
            name = op.input("Filter")[0]
            if _is_integer_weight(name):
                biggest = max(biggest, int(np.abs(np.array(scope.find_var(name).get_tensor())).max()))
    return signed_bits(biggest)


def signed_bits(biggest):
    """Bits of a signed integer type holding -biggest..biggest (3 for 3, 5 for 15)."""
    return int(np.ceil(np.log2(biggest + 1))) + 1


def _producer(block, name, before):
    """The op that last wrote ``name`` before op index ``before`` (PTQ's programs reuse names)."""
    ops = list(block.ops)
    for op in reversed(ops[:before]):
        if name in op.output_arg_names:
            return op
    return None


def _consumer(block, name, op_type, after):
    """The first ``op_type`` op after op index ``after`` that reads ``name``."""
    for op in list(block.ops)[after + 1:]:
        if op.type == op_type and name in op.input_arg_names:
            return op
    return None


def _set(scope, name, value):
    import paddle
    tensor = scope.find_var(name).get_tensor()
    dtype = np.array(tensor).dtype
    tensor.set(np.asarray(value).astype(dtype), paddle.CPUPlace())


def _restore_integers(scope, weight, channel_scales):
    """PTQ stored ``round(K * 127 / max_c)``; ``K = round(q * max_c / 127)`` (the error of that
    rounding is below half a step) and the scale becomes 127: dequantized, ``K`` again."""
    q = np.array(scope.find_var(weight).get_tensor()).astype(np.float64)
    s = np.array(scope.find_var(channel_scales).get_tensor()).astype(np.float64)
    k = np.round(q * s.reshape([-1] + [1] * (q.ndim - 1)) / PADDLE_INT8_RANGE)
    _set(scope, weight, k)
    _set(scope, channel_scales, np.full(s.shape, PADDLE_INT8_RANGE))
    return k


def set_exact_scales(program, scope):
    """Give every integer convolution of Paddle's PTQ ``program`` (fake-quant form) the scale "one
    per integer" on its input and its filter, and its filter the integers ``K``. Returns how many
    convolutions it set; raises :class:`NotPalQuantError` if none."""
    block = program.global_block()
    done = 0
    for index, op in enumerate(list(block.ops)):
        if op.type not in CONV_OPS or not _is_integer_weight(op.input("Filter")[0]):
            continue
        dequant = _consumer(block, op.output("Output")[0], "fake_channel_wise_dequantize_max_abs",
                            index)
        if dequant is None:
            raise NotPalQuantError("integer convolution {} was not quantized".format(
                op.input("Filter")[0]))
        channel_scales, act_scale = dequant.input("Scales")
        _restore_integers(scope, op.input("Filter")[0], channel_scales)
        _set(scope, act_scale, [PADDLE_INT8_RANGE])
        done += 1
    if not done:
        raise NotPalQuantError("no PalQuant integer convolution in this program")
    return done


def _new_var(block, scope, name, value, dtype):
    import paddle
    block.create_var(name=name, shape=list(value.shape), dtype=dtype, persistable=True)
    scope.var(name).get_tensor().set(value, paddle.CPUPlace())


def write_qdq(fp32_dir, out_dir):
    """``out_dir/model_qdq.*``: the export ``fp32_dir`` with a quantize_linear/dequantize_linear
    pair (scale 127: one per integer) on the input of every integer convolution and a
    dequantize_linear on its int8 filter (per channel, scale 127), the form Paddle's PTQ writes
    with ``onnx_format`` (what Paddle Inference's OpenVINO engine runs in int8), without its
    observers on every other tensor. Returns the number of convolutions."""
    import paddle
    dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()  # ops can be inserted into a program only in static mode
    try:
        return _write_qdq(fp32_dir, out_dir)
    finally:
        if dynamic:
            paddle.disable_static()


def _write_qdq(fp32_dir, out_dir):
    import os

    import paddle
    from paddle_rtseg_runtime import openvino_int8_paths
    program, scope = load_program(fp32_dir)
    block = program.global_block()
    convs = [i for i, op in enumerate(block.ops) if op.type in CONV_OPS
             and _is_integer_weight(op.input("Filter")[0])]
    if not convs:
        raise NotPalQuantError("{} has no PalQuant integer convolution".format(fp32_dir))
    for index in reversed(convs):  # inserting before later ops first keeps the indices valid
        op = block.ops[index]
        weight, act = op.input("Filter")[0], op.input("Input")[0]
        k = np.array(scope.find_var(weight).get_tensor())
        scope.find_var(weight).get_tensor().set(k.astype(np.int8), paddle.CPUPlace())
        channels = k.shape[0]
        _new_var(block, scope, weight + "@scale", np.full([channels], PADDLE_INT8_RANGE,
                                                          np.float32), "float32")
        _new_var(block, scope, weight + "@zero_point", np.zeros([channels], np.int32), "int32")
        _new_var(block, scope, act + "@exact_scale", np.full([1], PADDLE_INT8_RANGE, np.float32),
                 "float32")
        _new_var(block, scope, act + "@exact_zero_point", np.zeros([1], np.int32), "int32")
        source = block.var(act)
        for name in (act + ".exact_quantized", act + ".exact_dequantized"):
            block.create_var(name=name, shape=source.shape, dtype=source.dtype)
        block.create_var(name=weight + ".dequantized", shape=list(k.shape), dtype="float32")
        block._insert_op(index, type="dequantize_linear", attrs=dict(quant_axis=0, bit_length=8),
                         inputs=dict(X=weight, Scale=weight + "@scale",
                                     ZeroPoint=weight + "@zero_point"),
                         outputs=dict(Y=weight + ".dequantized"))
        for op_type, x, y in (("dequantize_linear", act + ".exact_quantized",
                               act + ".exact_dequantized"),
                              ("quantize_linear", act, act + ".exact_quantized")):
            block._insert_op(index, type=op_type, attrs=dict(quant_axis=-1, bit_length=8),
                             inputs=dict(X=x, Scale=act + "@exact_scale",
                                         ZeroPoint=act + "@exact_zero_point"),
                             outputs=dict(Y=y))
        op._rename_input(weight, weight + ".dequantized")
        op._rename_input(act, act + ".exact_dequantized")
    model_file, params_file = openvino_int8_paths(out_dir)
    feeds = [block.var(op.output("Out")[0]) for op in block.ops if op.type == "feed"]
    fetches = [block.var(op.input("X")[0]) for op in block.ops if op.type == "fetch"]
    with paddle.static.scope_guard(scope):
        prefix = os.path.join(out_dir, ".exact_qdq")
        paddle.static.save_inference_model(prefix, feeds, fetches,
                                           paddle.static.Executor(paddle.CPUPlace()),
                                           program=program)
    os.replace(prefix + ".pdmodel", model_file)
    os.replace(prefix + ".pdiparams", params_file)
    return len(convs)


def quantize_exact(fp32_dir, out_dir, calib_batches, log=print):
    """The exact int8 programs of the PalQuant export ``fp32_dir`` in ``out_dir``: fake-quant form
    (``model.*``, Paddle's PTQ with :func:`set_exact_scales`; the calibration batches only drive
    its machinery, every scale it computes on the integer convolutions is replaced) and
    quantize_linear/dequantize_linear form (``model_qdq.*``, :func:`write_qdq`), ``deploy.yaml``
    recording the filters' bits. Returns ``out_dir``."""
    from paddle_rtseg.quantization.ptq import _record_weight_bits, post_training_quantize
    program, scope = load_program(fp32_dir)
    integer, other = split_weights(program)
    if not integer:
        raise NotPalQuantError("{} has no PalQuant integer convolution (filters named {}*): "
                               "export a PalQuant model with paddle_rtseg.export".format(
                                   fp32_dir, INTEGER_WEIGHT_PREFIX))
    post_training_quantize(fp32_dir, out_dir, calib_batches, "abs_max", log=log,
                           op_types=CONV_OPS, skip_tensors=other, adjust=set_exact_scales)
    write_qdq(fp32_dir, out_dir)
    _record_weight_bits(out_dir, weight_bits(program, scope))
    return out_dir


def onnx_conv_integer(fp32_onnx, out_path):
    """Write ``fp32_onnx`` (a PalQuant export converted by ``convert_onnx``) with every integer
    convolution as QuantizeLinear -> ConvInteger -> Cast (module docstring) to ``out_path``,
    atomically, marked int8 for the runners. Returns the number of convolutions rewritten."""
    import os
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from paddle_rtseg_runtime.files import default_mode
    from paddle_rtseg_runtime.onnx_runtime import PRECISION_KEY, WEIGHT_BITS_KEY

    model = onnx.load(fp32_onnx)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    nodes, rewritten, biggest = [], 0, 0
    shared = [numpy_helper.from_array(np.array(1.0, np.float32), "palquant_int8.one"),
              numpy_helper.from_array(np.array(0, np.uint8), "palquant_int8.zero"),
              numpy_helper.from_array(np.array(128, np.uint8), "palquant_int8.w_zero")]
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or not _is_integer_weight(node.input[1]):
            nodes.append(node)
            continue
        k = numpy_helper.to_array(inits[node.input[1]])
        if not np.array_equal(k, np.round(k)) or np.abs(k).max() > 127:
            raise NotPalQuantError("{}: filter {} is not integer".format(fp32_onnx, node.input[1]))
        biggest = max(biggest, int(np.abs(k).max()))
        graph.initializer.remove(inits[node.input[1]])
        graph.initializer.append(numpy_helper.from_array((k + 128).astype(np.uint8),
                                                         node.input[1]))
        base = node.name or node.output[0]
        q, acc = base + ".quantized", base + ".int32"
        nodes.append(helper.make_node("QuantizeLinear", [node.input[0], "palquant_int8.one",
                                                         "palquant_int8.zero"], [q],
                                      name=base + ".quantize"))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("ConvInteger", [q, node.input[1], "palquant_int8.zero",
                                                      "palquant_int8.w_zero"], [acc],
                                      name=base + ".integer", **attrs))
        cast_out = acc + ".float" if len(node.input) > 2 and node.input[2] else node.output[0]
        nodes.append(helper.make_node("Cast", [acc], [cast_out], to=TensorProto.FLOAT,
                                      name=base + ".cast"))
        if cast_out != node.output[0]:  # a bias (the integer form has none): added in float
            nodes.append(helper.make_node("Add", [cast_out, node.input[2]], [node.output[0]]))
        rewritten += 1
    if not rewritten:
        raise NotPalQuantError("{} has no PalQuant integer convolution".format(fp32_onnx))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(shared)
    onnx.helper.set_model_props(model, {PRECISION_KEY: "int8",
                                        WEIGHT_BITS_KEY: str(signed_bits(biggest))})
    onnx.checker.check_model(model)
    folder = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-palquant-int8-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        default_mode(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        os.unlink(tmp)
        raise
    return rewritten
