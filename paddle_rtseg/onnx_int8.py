"""Static int8 quantization of an ONNX model for ONNX Runtime's CPU int8 kernels.

``onnxruntime.quantization.quantize_static``: QDQ format, weights int8 per output channel
(symmetric), activations uint8 with min/max ranges calibrated on training images (preprocessed like
the runners do). ONNX Runtime fuses each DQ -> op -> Q into an integer kernel; what is not
quantized stays fp32 between QuantizeLinear / DequantizeLinear pairs. What is quantized, and why,
is at :data:`OPS` and :func:`score_matmuls`.
The written model carries ``paddle_rtseg_precision: int8`` in its metadata, which the runners check.
"""
import os
import tempfile

from .deployment.files import default_mode
from .deployment.onnx_runtime import PRECISION_KEY

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


def quantize_onnx_int8(fp32_onnx, out_path, calibration, input_name="x"):
    """Write the int8 QDQ model of ``fp32_onnx`` to ``out_path`` (atomically); ``calibration`` is a
    list of ``1 x 3 x H x W`` float32 arrays. Returns ``out_path``."""
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
        _name_nodes(model)
        onnx.save(model, pre)
        tmp = os.path.join(scratch, "int8.onnx")
        quantize_static(pre, tmp, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=OPS,
                        nodes_to_exclude=score_matmuls(model), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(tmp)
        onnx.helper.set_model_props(model, {PRECISION_KEY: "int8"})
        onnx.save(model, tmp)
        default_mode(tmp)
        os.replace(tmp, out_path)
    return out_path
