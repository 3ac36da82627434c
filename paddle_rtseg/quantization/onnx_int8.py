"""Static int8 quantization of an ONNX model for ONNX Runtime's CPU int8 kernels.

``onnxruntime.quantization.quantize_static``: QDQ format, weights int8 per output channel
(symmetric), activations uint8 with min/max ranges calibrated on training images (preprocessed like
the runners do). ONNX Runtime fuses each DQ -> op -> Q into an integer kernel; what is not
quantized stays fp32 between QuantizeLinear / DequantizeLinear pairs. What is quantized, and why,
is at :data:`OPS`, :func:`score_matmuls`, :func:`score_paths` and :func:`shape_arithmetic`; exact
GELUs become one ``com.microsoft.Gelu`` first (:func:`fuse_gelu`), so the int8 model is for ONNX
Runtime only (as its int8 kernels are).
The written model carries ``paddle_rtseg_precision: int8`` in its metadata, which the runners check.
"""
import os
import tempfile

from paddle_rtseg_runtime.files import default_mode
from paddle_rtseg_runtime.onnx_runtime import PRECISION_KEY, WEIGHT_BITS_KEY

# Quantized ops. The element-wise ops, concats and pools too, so that tensors stay int8 between
# quantized convolutions instead of passing DQ -> fp32 op -> Q (SeaFormer-Tiny 512x512, demo
# weights, a throwaway side-by-side check of ORT alone: 1.15x -> 0.82x its fp32 latency, 25
# rounds). Not Resize: ORT's uint8 Resize was slower than its fp32 one (SeaFormer-Tiny: 3.0 against
# 1.7 ms a run, ORT profiler). The bench_deploy --precision runs: docs/deployment.md, section 5b.
OPS = ["Conv", "MatMul", "Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "Relu",
       "Sigmoid"]


def score_matmuls(model):
    """Names of the attention-score MatMuls of ``model`` (an ``onnx.ModelProto``): MatMuls with no
    constant operand that do not read a Softmax output (``q k^T``; ``attn v`` reads the softmax).
    They are not quantized, so the softmax after them keeps an fp32 input; ORT still runs them on
    their int8 inputs, as ``MatMulIntegerToFloat``. Quantizing them puts the softmax between
    DequantizeLinear and QuantizeLinear, which ORT then runs as ``QLinearSoftmax``: SegFormer++-B0
    512x512, 20.8 ms a run against 2.9 ms for the fp32 softmax (ORT profiler). Throwaway checks of
    ORT alone, int8 latency over fp32: SegFormer++-B0 512x512 0.95x with them quantized, 0.79x with
    every product of two activations in fp32, and 0.64x against 0.68x (opset 17, 11 rounds) with
    ``attn v`` quantized again."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants.update(out for node in graph.node if node.op_type == "Constant" for out in node.output)
    softmax_outputs = {out for node in graph.node if node.op_type == "Softmax" for out in node.output}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and not any(name in constants for name in node.input)
            and not any(name in softmax_outputs for name in node.input)]


def _constant_values(graph):
    from onnx import numpy_helper
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _scalar(values, name, expected):
    value = values.get(name)
    return value is not None and value.size == 1 and abs(float(value.reshape(-1)[0]) - expected) < 1e-5


def fuse_gelu(model):
    """Replace each exact GELU that paddle2onnx writes, ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)),
    0.5)``, by ONNX Runtime's ``com.microsoft.Gelu`` (the same function, one kernel) in ``model``
    (an ``onnx.ModelProto``, changed in place); returns how many. ORT fuses the pattern itself in
    fp32 models, but not after quantization: its QDQ transformers give each consumer of a
    DequantizeLinear its own copy, so ``Div`` and the first ``Mul`` no longer read the same ``x``,
    and the Erf, Div and Muls ran as separate kernels, the Muls quantized between Q/DQ pairs
    (SegFormer++-B0 512x512, ``scripts/ort_op_profile.py``: Erf 5.8 ms, Div 1.6 ms and int8 Muls
    2.2 ms of a 64 ms call before, one Gelu 4.5 ms and int8 Muls 0.3 ms of 62 ms after)."""
    from onnx import helper
    graph = model.graph
    values = _constant_values(graph)
    consumers, producer = {}, {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node
    outputs = {o.name for o in graph.output}

    def only_consumer(node):
        users = consumers.get(node.output[0], [])
        return users[0] if len(users) == 1 and node.output[0] not in outputs else None

    def other_input(node, name):
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    fused = []
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not _scalar(values, div.input[1], 2 ** 0.5) \
                or only_consumer(div) is not erf:
            continue
        x = div.input[0]
        add = only_consumer(erf)
        if add is None or add.op_type != "Add" or not _scalar(values, other_input(add, erf.output[0]), 1.0):
            continue
        mul = only_consumer(add)
        if mul is None or mul.op_type != "Mul" or other_input(mul, add.output[0]) != x:
            continue
        half = only_consumer(mul)
        if half is None or half.op_type != "Mul" or \
                not _scalar(values, other_input(half, mul.output[0]), 0.5):
            continue
        fused.append(([div, erf, add, mul, half],
                      helper.make_node("Gelu", [x], [half.output[0]], domain="com.microsoft",
                                       name=(erf.name or "erf_{}".format(len(fused))) + "_gelu")))
    for pattern, gelu in fused:
        position = list(graph.node).index(pattern[-1])
        graph.node.insert(position, gelu)
        for node in pattern:
            graph.node.remove(node)
    if fused and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused)


# ops that may sit between the scores product and its softmax (scale, relative-position bias, mask)
_SCORE_PATH_OPS = ("Add", "Sub", "Mul", "Div", "Identity", "Reshape", "Transpose", "Cast")


def score_paths(model):
    """Names of the nodes between an attention-score MatMul (:func:`score_matmuls`) and the Softmax
    it feeds: the relative-position bias add of MixFormer's window attention, a scale or a mask,
    each with one input from the scores and the others constant. Left in fp32 like the scores, so
    the softmax keeps an fp32 input: quantized, they put the softmax between DequantizeLinear and
    QuantizeLinear again (``QLinearSoftmax``, MixFormer-B1 512x1024: 19.5 ms of a 177 ms call
    against 6.6 ms for the fp32 softmax, ``scripts/ort_op_profile.py``)."""
    graph = model.graph
    scores = set(score_matmuls(model))
    content = _content_tensors(model)
    producer = {out: node for node in graph.node for out in node.output}
    names = []
    for softmax in (node for node in graph.node if node.op_type == "Softmax"):
        path, node = [], producer.get(softmax.input[0])
        while node is not None and node.op_type in _SCORE_PATH_OPS:
            data = [name for name in node.input if name in content]
            if len(data) != 1:
                break
            path.append(node.name)
            node = producer.get(data[0])
        if node is not None and node.name in scores:
            names.extend(path)
    return names


def _content_tensors(model):
    """Tensors whose values derive from a graph input's values (not only from its shape)."""
    # (older exporters also list the initializers among the graph inputs: those are constants)
    content = {value.name for value in model.graph.input} - \
        {init.name for init in model.graph.initializer}
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if node.op_type != "Shape" and any(name in content for name in node.input if name):
            content.update(node.output)
    return content


def shape_arithmetic(model):
    """Names of the nodes of ``model`` that compute on tensor shapes only: none of their inputs
    derives from the values of a graph input (only from ``Shape`` outputs and constants). paddle2onnx
    writes padding amounts and resize sizes of dynamic-shape exports as float arithmetic on shapes
    (``Cast`` of a ``Shape``, then ``Mul``/``Add``/``Div``), and quantizing those with ranges
    calibrated at one input size clips the values every larger size gives. They are left out:
    MixFormer-B1 calibrated at 128x128 and run at 512x1024 otherwise padded its windows wrongly and
    predicted class 0 everywhere (10x "faster" than fp32, computing the wrong thing)."""
    content = _content_tensors(model)
    return [node.name for node in model.graph.node
            if not any(name in content for name in node.output)]


def _name_nodes(model):
    """Give every unnamed node a unique name (``nodes_to_exclude`` matches by name)."""
    taken = {node.name for node in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = "{}_{}".format(node.op_type, i)
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def quantize_onnx_int8(fp32_onnx, out_path, calibration, input_name="x", reduce_range=False):
    """Write the int8 QDQ model of ``fp32_onnx`` to ``out_path`` (atomically); ``calibration`` is a
    list of ``1 x 3 x H x W`` float32 arrays. Returns ``out_path``.

    ``reduce_range=True`` quantizes the weights to 7 bits: ONNX Runtime's uint8 x int8 kernels on
    x86 CPUs without VNNI add pairs of 16-bit products with saturation, which 8-bit weights can
    overflow (its quantization docs); 7-bit weights cannot. The runners refuse ``--precision int8``
    on such CPUs (:mod:`paddle_rtseg_runtime.cpu_features`), so the default keeps 8 bits. The
    model records its weights' bits (``WEIGHT_BITS_KEY``): ``OnnxPredictor(..., allow_slow=True)``
    on such a CPU runs only a 7-bit model.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {input_name: x}

    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-onnx-int8-", dir=folder) as scratch:
        pre = os.path.join(scratch, "pre.onnx")
        # graph optimisation + ONNX shape inference (symbolic inference cannot follow the
        # dynamic H/W reshapes of these models, and the quantizer does not need it)
        quant_pre_process(fp32_onnx, pre, skip_symbolic_shape=True)
        model = onnx.load(pre)
        fuse_gelu(model)
        _name_nodes(model)
        onnx.save(model, pre)
        tmp = os.path.join(scratch, "int8.onnx")
        quantize_static(pre, tmp, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=OPS,
                        nodes_to_exclude=(score_matmuls(model) + score_paths(model) +
                                          shape_arithmetic(model)),
                        per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(tmp)
        onnx.helper.set_model_props(model, {PRECISION_KEY: "int8",
                                            WEIGHT_BITS_KEY: "7" if reduce_range else "8"})
        onnx.save(model, tmp)
        default_mode(tmp)
        os.replace(tmp, out_path)
    return out_path
