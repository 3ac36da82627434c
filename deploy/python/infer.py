"""Paddle Inference runner: CPU (oneDNN and OpenVINO: fp32, bf16, int8), GPU, TensorRT (fp32/fp16,
dynamic-shape ranges).

    python deploy/python/infer.py --model_dir output/export --image_path images/ --save_dir out \
        [--device cpu|gpu] [--cpu_threads 4] [--enable_mkldnn true|false] [--use_openvino] \
        [--precision fp32|bf16|int8|fp16] [--use_trt] \
        [--min_shape 1 3 256 256 --opt_shape 1 3 512 1024 --max_shape 1 3 1024 2048]

CPU precisions: bf16 needs AVX512-BF16 or AMX-BF16, int8 needs AVX512-VNNI/AVX-VNNI or AMX-INT8
(the runner says which the CPU lacks) and a post-training-quantized model: ``--model_dir
Q/ptq_int8`` from ``python -m paddle_rtseg.quantize ... --save_dir Q``. fp16 is TensorRT's (GPU).
``--use_openvino`` runs the program in Paddle Inference's OpenVINO engine instead of oneDNN (Paddle
>= 3.0; fp32, bf16, or int8 on the same ``Q/ptq_int8``, whose ``model_qdq.*`` it reads): measured
against oneDNN and ONNX Runtime in docs/deployment.md, sections 5 and 5b.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def main(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--cpu_threads", type=int, default=2)
    parser.add_argument("--enable_mkldnn", default="true", choices=["true", "false"],
                        help="oneDNN on CPU (default true)")
    parser.add_argument("--use_openvino", action="store_true",
                        help="CPU: Paddle Inference's OpenVINO engine instead of oneDNN "
                             "(fp32, bf16, int8)")
    parser.add_argument("--use_trt", action="store_true", help="TensorRT subgraphs (GPU only)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8", "fp16"],
                        help="CPU: fp32, bf16, int8 (oneDNN or --use_openvino; int8 reads "
                             "the ptq_int8/ of paddle_rtseg.quantization.ptq); GPU: fp32, fp16 with "
                             "--use_trt")
    for name in ("min", "opt", "max"):
        parser.add_argument("--{}_shape".format(name), nargs=4, type=int, default=None,
                            metavar=("N", "C", "H", "W"),
                            help="TensorRT dynamic-shape range ({}); needed with --use_trt when "
                                 "the export is dynamic".format(name))
    args = parser.parse_args(argv)
    if args.use_trt and args.device != "gpu":
        parser.error("--use_trt needs --device gpu")

    def make_predictor(info):
        dynamic = any(d == -1 for d in info["input_shape"][2:])
        if args.use_trt and dynamic and not (args.min_shape and args.max_shape):
            raise common.du.DeployError(
                "The model was exported with dynamic H/W; TensorRT needs the range: pass "
                "--min_shape, --opt_shape and --max_shape (e.g. 1 3 256 256 / 1 3 512 1024 / "
                "1 3 1024 2048), or export with a fixed --input_shape.")
        shape = info["input_shape"]
        fixed = None if dynamic else [1 if shape[0] == -1 else shape[0]] + list(shape[1:])
        predictor = common.du.PaddleInferencePredictor(
            args.model_dir, device=args.device, use_mkldnn=args.enable_mkldnn == "true",
            threads=args.cpu_threads, use_trt=args.use_trt, precision=args.precision,
            use_openvino=args.use_openvino,
            min_shape=args.min_shape or fixed, opt_shape=args.opt_shape or fixed,
            max_shape=args.max_shape or fixed)
        if args.precision != "fp32" and args.device == "cpu":
            print("precision: {}; {}".format(predictor.precision_reason,
                                             common.du.cpu_features.summary()))
        return predictor

    return common.run(args, make_predictor)


if __name__ == "__main__":
    sys.exit(main())
