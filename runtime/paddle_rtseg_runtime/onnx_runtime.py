"""ONNX Runtime predictor (CPU: fp32, and int8 on a QDQ model written by ``paddle_rtseg.quantization.ptq``)."""
import os

import numpy as np

from . import cpu_features
from .errors import DeployError
from .model_dir import check_onnx_external_data
from .predictor import Predictor

# metadata key that ``paddle_rtseg.quantization.ptq`` writes into the int8 model it makes
PRECISION_KEY = "paddle_rtseg_precision"
WEIGHT_BITS_KEY = "paddle_rtseg_weight_bits"  # "7" for --reduce_range true, 3/5 PalQuant; absent 8
INT8_FILE = "model_int8.onnx"
NO_BF16 = ("ONNX Runtime's CPU execution provider has no bf16 kernels for Conv, MatMul and the "
           "other ops of these models on x86 (its bf16 fast-math GEMM option is ARM64-only), so a "
           "bf16 model would fail to load or run in fp32 with casts. Use --precision int8 here, or "
           "Paddle Inference (deploy/python/infer.py --precision bf16).")


def default_onnx_file(model_dir, precision="fp32"):
    """``<model_dir>/model.onnx``, or ``model_int8.onnx`` (``quantize``'s QDQ model) for int8."""
    return os.path.join(model_dir, INT8_FILE if precision == "int8" else "model.onnx")


def session_options(threads=2):
    """The runners' ONNX Runtime session settings: ``threads`` intra-op threads, denormals flushed."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # flush denormals, as Paddle Inference does: peaked attention leaves probabilities near
    # 1e-29 whose products are denormal, and x86 arithmetic on those is ~20x slower
    # (RTFormer-Slim 512x1024: cross-attention matmuls 62 -> 3.6 ms); results change only
    # for values below 1.2e-38. Unlike Paddle Inference, ONNX Runtime leaves the calling
    # thread in that mode: later numpy and Paddle dygraph code in it flush too (measured).
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


class OnnxPredictor(Predictor):
    """ONNX Runtime (CPU by default) on a ``.onnx`` written by :func:`convert_onnx` (fp32) or by
    ``paddle_rtseg.quantization.ptq`` (int8: per-channel QDQ, activations calibrated on training images)."""
    name = "onnxruntime"

    def __init__(self, onnx_path, threads=2, providers=None, precision="fp32", allow_slow=False):
        import onnxruntime as ort
        if precision == "bf16":
            raise DeployError("--precision bf16 on ONNX Runtime: " + NO_BF16)
        if precision not in ("fp32", "int8"):
            raise DeployError("--precision {} on ONNX Runtime: use fp32 or int8.".format(precision))
        self.precision_reason = cpu_features.require(precision, "ONNX Runtime",
                                                     engine="onnxruntime", allow_slow=allow_slow)
        if not os.path.isfile(onnx_path):
            raise DeployError("ONNX model {} does not exist; {}".format(onnx_path, (
                "make the int8 model with `python -m paddle_rtseg.quantize --config CFG "
                "--model_path W.pdparams --save_dir Q` (writes Q/ptq_int8/{})".format(INT8_FILE)
                if precision == "int8" else
                "convert with paddle2onnx first (docs/deployment.md)")))
        check_onnx_external_data(onnx_path)  # data files outside the model folder: refused
        options = session_options(threads)
        try:
            self.session = ort.InferenceSession(onnx_path, options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # ORT's own Fail / InvalidGraph / InvalidProtobuf / ...
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            raise DeployError("ONNX Runtime cannot load {} ({}). It is not a model ONNX Runtime "
                              "can run: convert the exported folder again with "
                              "deploy/onnx/convert.py.".format(onnx_path, reason)) from None
        stored = self.session.get_modelmeta().custom_metadata_map.get(PRECISION_KEY, "fp32")
        if stored != precision:
            raise DeployError(
                "{} is a{} {} model but --precision {} was asked. {}".format(
                    onnx_path, "n" if stored == "int8" else "", stored, precision,
                    "Pass the int8 model `python -m paddle_rtseg.quantize` wrote "
                    "(<save_dir>/ptq_int8/{}).".format(INT8_FILE) if precision == "int8"
                    else "Pass --precision {} or the fp32 model.onnx.".format(stored)))
        bits = self.session.get_modelmeta().custom_metadata_map.get(WEIGHT_BITS_KEY, "8")
        if cpu_features.needs_7bit_weights(precision, "onnxruntime") and not (
                bits.isdigit() and int(bits) <= 7):
            raise DeployError(
                "--precision int8 on ONNX Runtime on a CPU without VNNI/AMX: its uint8 x int8 "
                "kernels saturate 16-bit pair sums, and {} has {}-bit weights, so its results "
                "would be wrong. Quantize with `--reduce_range true` (7-bit weights) for this CPU."
                .format(onnx_path, bits))
        self.precision = precision
        if precision != "fp32":
            self.name = "onnxruntime-" + precision
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
