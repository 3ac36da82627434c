"""Paddle Inference predictor: CPU (oneDNN), GPU, TensorRT."""
import numpy as np

from .model_dir import model_paths
from .predictor import Predictor
from .program import onednn_resize_is_exact


class PaddleInferencePredictor(Predictor):
    """Paddle Inference on an exported directory: CPU (oneDNN on/off, threads), GPU, TensorRT."""

    def __init__(self, model_dir, device="cpu", use_mkldnn=True, threads=2, use_trt=False,
                 trt_precision="fp32", min_shape=None, opt_shape=None, max_shape=None,
                 ir_optim=True):
        import paddle.inference as pi
        model_file, params_file = model_paths(model_dir)
        config = pi.Config(model_file, params_file)
        config.switch_ir_optim(ir_optim)
        if device == "gpu":
            config.enable_use_gpu(500, 0)
            if use_trt:
                precision = {"fp32": pi.PrecisionType.Float32,
                             "fp16": pi.PrecisionType.Half}[trt_precision]
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1,
                                              min_subgraph_size=3, precision_mode=precision,
                                              use_static=False, use_calib_mode=False)
                if min_shape:
                    name = "x"
                    config.set_trt_dynamic_shape_info({name: list(min_shape)},
                                                      {name: list(max_shape or min_shape)},
                                                      {name: list(opt_shape or min_shape)})
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads)
            if use_mkldnn:
                config.enable_mkldnn()
                if onednn_resize_is_exact(model_file):
                    config.pass_builder().append_pass("interpolate_onednn_pass")
            else:
                config.disable_mkldnn()
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        self.name = "paddle-inference-{}{}".format(
            device, "-trt-" + trt_precision if use_trt else "-onednn" if use_mkldnn and
            device == "cpu" else "")

    def __call__(self, x):
        self.input.reshape(list(x.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(x))
        self.predictor.run()
        return self.output.copy_to_cpu()
