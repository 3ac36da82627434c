"""Static int8 quantization of an ONNX model for ONNX Runtime's CPU int8 kernels.

``onnxruntime.quantization.quantize_static``: QDQ format, weights int8 per output channel
(symmetric), activations uint8 with min/max ranges calibrated on training images (preprocessed like
the runners do), Conv and MatMul quantized (everything else stays fp32 between QuantizeLinear /
DequantizeLinear pairs; ONNX Runtime fuses each DQ -> Conv/MatMul -> Q into an integer kernel).
The written model carries ``paddle_rtseg_precision: int8`` in its metadata, which the runners check.
"""
import os
import tempfile

from .deployment.files import default_mode
from .deployment.onnx_runtime import PRECISION_KEY

OPS = ["Conv", "MatMul"]


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
        # dynamic H/W reshapes of these models, and is not needed for Conv/MatMul)
        quant_pre_process(fp32_onnx, pre, skip_symbolic_shape=True)
        tmp = os.path.join(scratch, "int8.onnx")
        quantize_static(pre, tmp, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=OPS,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(tmp)
        onnx.helper.set_model_props(model, {PRECISION_KEY: "int8"})
        onnx.save(model, tmp)
        default_mode(tmp)
        os.replace(tmp, out_path)
    return out_path
