"""Paddle Inference predictor: CPU (oneDNN: fp32, bf16, int8; OpenVINO: fp32, bf16, int8), GPU,
TensorRT (fp32, fp16)."""
import os
import shutil
import tempfile

import numpy as np

from . import cpu_features
from .errors import DeployError
from .model_dir import check_program_files, model_paths, read_deploy_yaml
from .predictor import Predictor
from .program_probe import check_loads
from .program import onednn_resize_is_exact, read_program

# The ops oneDNN runs in int8: the convolutions PTQ calibrated (``quantize``), under the names they
# get after the oneDNN fusion passes. Two measured reasons for the list:
# - With Paddle's default (every op it can quantize) oneDNN also quantizes elementwise_add, whose
#   two inputs then arrive one as uint8 (after a ReLU) and one as int8, and Paddle 3.0 aborts in
#   ``fused_elementwise_add`` ("The type of data we are trying to retrieve (uint8) does not match
#   the type of data (int8)").
# - Adding matmul/matmul_v2/fused_matmul (the attention products) runs but is slower than fp32
#   (demo RTFormer-Slim 256x512: fp32 1291 ms, convs + matmuls 1658 ms, convs only 975 ms, one
#   side-by-side run on a loaded 2-core AVX512-VNNI CPU).
ONEDNN_INT8_OPS = ("conv2d", "fused_conv2d", "depthwise_conv2d")
# int8 runs without oneDNN's conv + residual-add fusion (the name differs between Paddle releases).
# Paddle's int8 fused convolution gives its output the residual's data type (``GetDstType`` in
# phi/kernels/onednn/conv_function.h). A residual that leaves a ReLU is uint8, so ``relu(x) +
# conv(y)`` with no activation after the add is written as uint8: every negative sum becomes 0
# (ONEDNN_VERBOSE: ``dst:u8 ... attr-post-ops:sum``). Measured on the demo models, PTQ ``avg``,
# mIoU change vs fp32 on the 16 synthetic validation images, fused -> unfused: SeaFormer-Tiny
# -3.46 -> +0.10 (its first inverted-residual block adds a 1x1 projection to the stem's ReLU
# output), RTFormer-Slim -1.19 -> -0.03, SegFormer++-B0 +0.04 -> +0.04; the adds then run as
# separate ops (the int8 latencies of docs/deployment.md 5b are measured this way).
ONEDNN_INT8_UNFUSED = ("conv_elementwise_add_onednn_fuse_pass",
                       "conv_elementwise_add_mkldnn_fuse_pass")
# bf16: the convolutions and matmuls. With Paddle's default (every op with a bf16 kernel) SeaFormer
# aborts at run time ("There are no kernels which are registered in the dequantize operator": a
# bf16 -> fp32 reorder inserted where no kernel exists); this list runs on every family.
ONEDNN_BF16_OPS = ("conv2d", "fused_conv2d", "depthwise_conv2d", "matmul", "matmul_v2",
                   "fused_matmul")
QUANT_OP_MARKERS = ("fake_quantize", "fake_channel_wise", "quantize_linear", "fake_dequantize")
CPU_PRECISIONS = ("fp32", "bf16", "int8")
TRT_PRECISIONS = ("fp32", "fp16")
# Paddle Inference 3.0's OpenVINO engine (``Config.enable_openvino_engine``) hands the whole program
# to OpenVINO's CPU plugin. It needs no oneDNN passes and gains most where Paddle's per-op overhead
# dominates (SeaFormer's many small ops): docs/deployment.md, section 5. fp32 and bf16 are its
# ``inference_precision`` hint on the fp32 export. Its Paddle front-end cannot read the fake-quant
# ops of the PTQ program oneDNN and Lite run, so int8 reads the same calibration written as
# ``quantize_linear``/``dequantize_linear`` pairs (``paddle_rtseg.quantization.ptq`` saves it next to the PTQ
# program as ``model_qdq.*``): the front-end turns each pair into a FakeQuantize, which the CPU
# plugin's low-precision transformations run in int8 (OpenVINO's documented behaviour; Paddle does
# not expose the compiled graph), the rest in fp32 (hint f32).
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
OPENVINO_INT8_PREFIX = "model_qdq"
# deploy.yaml key `quantize` writes into ptq_int8/: the bits of the QDQ program's weights (7 with
# --reduce_range true, for CPUs without VNNI/AMX; absent = 8)
WEIGHT_BITS_KEY = "qdq_weight_bits"


def _dims(shape):
    return None if shape is None else [int(d) for d in shape]


def openvino_int8_paths(model_dir):
    """``(program, params)`` of the QDQ int8 program ``quantize`` writes into ``ptq_int8/``."""
    return tuple(os.path.join(model_dir, OPENVINO_INT8_PREFIX + ext)
                 for ext in (".pdmodel", ".pdiparams"))


def openvino_available():
    """Whether this Paddle has Paddle Inference's OpenVINO engine (Paddle >= 3.0 CPU builds)."""
    import paddle.inference as pi
    return hasattr(pi.Config, "enable_openvino_engine")


def is_quantized(model_file):
    """Whether a legacy program carries the fake-quant scales of post-training quantization."""
    if not model_file.endswith(".pdmodel"):
        return False
    return any(op.type.startswith(QUANT_OP_MARKERS) for block in read_program(model_file).blocks
               for op in block.ops)


def check_precision(model_dir, device, precision, use_mkldnn=True, use_trt=False,
                    use_openvino=False, allow_slow=False):
    """:class:`DeployError` naming the fix when ``precision`` cannot run as asked; otherwise the
    reason string (which instructions the CPU uses). ``allow_slow``: accept a precision whose
    kernels exist on this CPU without the instructions that make it fast
    (:func:`cpu_features.kernels`)."""
    if use_openvino:
        if device != "cpu" or use_trt:
            raise DeployError("--use_openvino is a CPU engine (OpenVINO's CPU plugin): use "
                              "--device cpu without --use_trt, or TensorRT alone on GPU.")
        if precision not in OPENVINO_PRECISIONS:
            raise DeployError(
                "--precision {} with --use_openvino: Paddle Inference's OpenVINO engine runs fp32, "
                "bf16 or int8 (fp16 is TensorRT's, with --device gpu --use_trt).".format(precision))
        if not openvino_available():
            import paddle
            raise DeployError(
                "--use_openvino needs Paddle Inference's OpenVINO engine, which Paddle {} lacks "
                "(it came with Paddle 3.0's CPU builds). Install paddlepaddle 3.0, or drop "
                "--use_openvino to run oneDNN.".format(paddle.__version__))
        if precision == "int8":
            if not all(os.path.isfile(f) for f in openvino_int8_paths(model_dir)):
                raise DeployError(
                    "--precision int8 with --use_openvino reads the QDQ program that `python -m "
                    "paddle_rtseg.quantization.ptq` writes next to its PTQ program ({}.pdmodel and "
                    ".pdiparams), and {} has none. Quantize with this version (`python -m "
                    "paddle_rtseg.quantization.ptq --config CFG --model_path W.pdparams --save_dir Q`) and "
                    "pass --model_dir Q/ptq_int8.".format(OPENVINO_INT8_PREFIX, model_dir))
        elif is_quantized(model_paths(model_dir)[0]):
            raise DeployError(
                "{} is an int8 model (fake-quant ops from paddle_rtseg.quantization.ptq): run it with "
                "--precision int8 (with --use_openvino it reads the {}.* program beside it), or "
                "pass the fp32 export.".format(model_dir, OPENVINO_INT8_PREFIX))
        reason = cpu_features.require(precision, "Paddle Inference (OpenVINO)", engine="openvino",
                                      allow_slow=allow_slow)
        if cpu_features.needs_7bit_weights(precision, "openvino"):
            bits = read_deploy_yaml(model_dir, program_files=False).get(WEIGHT_BITS_KEY, 8)
            if not isinstance(bits, int) or bits > 7:  # PalQuant's exact programs: 3 or 5
                raise DeployError(
                    "--precision int8 with --use_openvino on a CPU without VNNI/AMX: OpenVINO's "
                    "uint8 x int8 kernels saturate 16-bit pair sums, and {}'s QDQ program has "
                    "{}-bit weights, so its results would be wrong. Quantize with `--reduce_range "
                    "true` (7-bit weights) for this CPU.".format(model_dir, bits))
        return reason
    if device == "gpu":
        if precision not in TRT_PRECISIONS or (precision != "fp32" and not use_trt):
            raise DeployError("--precision {} on GPU: Paddle Inference runs fp32, or fp16 with "
                              "--use_trt. bf16 and int8 are CPU (oneDNN) paths: use --device cpu."
                              .format(precision))
        return precision
    if precision not in CPU_PRECISIONS:
        raise DeployError("--precision {} on CPU: use fp32, bf16 or int8 (fp16 is TensorRT's, "
                          "with --device gpu --use_trt).".format(precision))
    if precision != "fp32" and not use_mkldnn:
        raise DeployError("--precision {} runs on oneDNN: drop --enable_mkldnn false."
                          .format(precision))
    reason = cpu_features.require(precision, "Paddle Inference (oneDNN)", engine="onednn",
                                  allow_slow=allow_slow)
    if precision == "int8" and not is_quantized(model_paths(model_dir)[0]):
        raise DeployError(
            "--precision int8 needs a post-training-quantized model (fake-quant scales "
            "calibrated on training images), and {} is a plain fp32 export. Make one with "
            "`python -m paddle_rtseg.quantize --config CFG --model_path W.pdparams --save_dir Q` "
            "and pass --model_dir Q/ptq_int8.".format(model_dir))
    return reason


class PaddleInferencePredictor(Predictor):
    """Paddle Inference on an exported directory: CPU (oneDNN on/off, threads; ``precision`` fp32,
    bf16 = ``enable_mkldnn_bfloat16``, int8 = ``enable_mkldnn_int8`` on a PTQ model; or
    ``use_openvino``: the OpenVINO engine, fp32/bf16 hint, int8 on the QDQ program of a PTQ
    directory), GPU, TensorRT (``precision`` fp32/fp16)."""

    def __init__(self, model_dir, device="cpu", use_mkldnn=True, threads=2, use_trt=False,
                 precision="fp32", min_shape=None, opt_shape=None, max_shape=None,
                 ir_optim=True, use_openvino=False, allow_slow=False):
        import paddle.inference as pi
        model_file, params_file = model_paths(model_dir)
        self.precision_reason = check_precision(model_dir, device, precision, use_mkldnn, use_trt,
                                                use_openvino, allow_slow)
        if use_openvino and precision == "int8":
            model_file, params_file = openvino_int8_paths(model_dir)
        check_program_files(model_file, params_file)  # before Paddle's native loader sees them
        # a program that parses can still crash the native loader: unknown ones load in a child
        check_loads(model_file, params_file, dict(
            model_dir=model_dir, device=device, use_mkldnn=use_mkldnn, threads=threads,
            use_trt=use_trt, precision=precision, min_shape=_dims(min_shape),
            opt_shape=_dims(opt_shape), max_shape=_dims(max_shape), ir_optim=ir_optim, use_openvino=use_openvino,
            allow_slow=allow_slow))
        config = pi.Config(model_file, params_file)
        config.switch_ir_optim(ir_optim)
        cache = None
        if use_openvino:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads)  # OpenVINO's inference_num_threads
            # OpenVINO writes its compiled model into the optimisation cache (``./__cache__`` by
            # default): a private folder, removed once the predictor exists, keeps it out of the
            # user's working directory and the model directory.
            cache = tempfile.mkdtemp(prefix="paddle_rtseg_openvino_")
            config.set_optim_cache_dir(cache)
            # int8: the FakeQuantize-d ops run in int8 whatever the hint; f32 for the others
            config.enable_openvino_engine({"fp32": pi.PrecisionType.Float32,
                                           "bf16": pi.PrecisionType.Bfloat16,
                                           "int8": pi.PrecisionType.Float32}[precision])
        elif device == "gpu":
            config.enable_use_gpu(500, 0)
            if use_trt:
                mode = {"fp32": pi.PrecisionType.Float32,
                        "fp16": pi.PrecisionType.Half}[precision]
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1,
                                              min_subgraph_size=3, precision_mode=mode,
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
                    import paddle  # the pass's name before Paddle 3.0 renamed mkldnn to onednn
                    config.pass_builder().append_pass(
                        "interpolate_onednn_pass" if int(paddle.__version__.split(".")[0]) >= 3
                        or paddle.__version__.startswith("0.0") else "interpolate_mkldnn_pass")
                if precision == "bf16":
                    config.enable_mkldnn_bfloat16()
                    config.set_bfloat16_op(set(ONEDNN_BF16_OPS))
                elif precision == "int8":
                    config.enable_mkldnn_int8(set(ONEDNN_INT8_OPS))
                    for name in ONEDNN_INT8_UNFUSED:
                        config.delete_pass(name)
            else:
                config.disable_mkldnn()
        config.disable_glog_info()
        try:
            self.predictor = pi.create_predictor(config)
        except Exception as e:
            if not use_openvino:
                raise DeployError("Paddle Inference cannot load {} with {}: {} Re-export the model "
                                  "or download it again.".format(
                                      model_file, params_file,
                                      " ".join(str(e).split("[Hint")[0].split())[:500])) from None
            raise DeployError(
                "Paddle Inference's OpenVINO engine could not take {}: {} OpenVINO converts the "
                "whole program or nothing; run it with oneDNN (drop --use_openvino) or ONNX Runtime."
                .format(model_file, " ".join(str(e).split("[Hint")[0].split()))) from None
        finally:
            if cache:
                shutil.rmtree(cache, ignore_errors=True)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        self.precision = precision
        backend = ("-trt" if use_trt else "-openvino" if use_openvino
                   else "-onednn" if use_mkldnn and device == "cpu" else "")
        self.name = "paddle-inference-{}{}{}".format(
            device, backend, "" if precision == "fp32" and not use_trt else "-" + precision)

    def __call__(self, x):
        self.input.reshape(list(x.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(x))
        self.predictor.run()
        return self.output.copy_to_cpu()
