"""ONNX Runtime predictor."""
import os

import numpy as np

from .errors import DeployError
from .predictor import Predictor


class OnnxPredictor(Predictor):
    """ONNX Runtime (CPU by default) on a ``.onnx`` written by :func:`convert_onnx`."""
    name = "onnxruntime"

    def __init__(self, onnx_path, threads=2, providers=None):
        import onnxruntime as ort
        if not os.path.isfile(onnx_path):
            raise DeployError("ONNX model {} does not exist; convert with paddle2onnx first "
                              "(deploy/onnx/README in docs/deployment.md).".format(onnx_path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # flush denormals, as Paddle Inference does: peaked attention leaves probabilities near
        # 1e-29 whose products are denormal, and x86 arithmetic on those is ~20x slower
        # (RTFormer-Slim 512x1024: cross-attention matmuls 62 -> 3.6 ms); results change only
        # for values below 1.2e-38. Unlike Paddle Inference, ONNX Runtime leaves the calling
        # thread in that mode: later numpy and Paddle dygraph code in it flush too (measured).
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        self.session = ort.InferenceSession(onnx_path, options,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
