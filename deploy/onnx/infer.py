"""ONNX Runtime runner, same interface as deploy/python/infer.py.

    paddle2onnx --model_dir output/export --model_filename model.pdmodel \
        --params_filename model.pdiparams --save_file output/export/model.onnx --opset_version 17
    python deploy/onnx/infer.py --model_dir output/export --image_path images/ --save_dir out \
        [--onnx_file output/export/model.onnx] [--cpu_threads 4] [--precision fp32|int8]

``--precision int8`` runs the QDQ model ``python -m paddle_rtseg.quantize ... --save_dir Q`` writes
(``--model_dir Q/ptq_int8``, whose ``model_int8.onnx`` is the default ``--onnx_file`` then); it needs
AVX512-VNNI/AVX-VNNI or AMX-INT8. ``bf16`` is refused with the reason: ONNX Runtime's x86 CPU
kernels have no bf16 path for these models.

``--model_dir`` supplies deploy.yaml (pre/post-processing); the network comes from ``--onnx_file``.
On a device the folder may hold only ``deploy.yaml`` and ``model.onnx``.
Needs only onnxruntime, numpy, opencv-python, pyyaml and pillow (no Paddle).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def main(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--onnx_file", default=None,
                        help="default: <model_dir>/model.onnx (model_int8.onnx with --precision int8)")
    parser.add_argument("--cpu_threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    args = parser.parse_args(argv)
    onnx_file = args.onnx_file or common.du.default_onnx_file(args.model_dir, args.precision)

    def make_predictor(info):
        predictor = common.du.OnnxPredictor(onnx_file, args.cpu_threads, precision=args.precision)
        if args.precision != "fp32":
            print("precision: {}; {}".format(predictor.precision_reason,
                                             common.du.cpu_features.summary()))
        return predictor

    return common.run(args, make_predictor, program_files=False)


if __name__ == "__main__":
    sys.exit(main())
