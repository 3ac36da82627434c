"""ONNX Runtime runner, same interface as deploy/python/infer.py.

    paddle2onnx --model_dir output/export --model_filename model.pdmodel \
        --params_filename model.pdiparams --save_file output/export/model.onnx --opset_version 13
    python deploy/onnx/infer.py --model_dir output/export --image_path images/ --save_dir out \
        [--onnx_file output/export/model.onnx] [--cpu_threads 4]

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
    parser.add_argument("--onnx_file", default=None, help="default: <model_dir>/model.onnx")
    parser.add_argument("--cpu_threads", type=int, default=2)
    args = parser.parse_args(argv)
    onnx_file = args.onnx_file or os.path.join(args.model_dir, "model.onnx")
    return common.run(args, lambda info: common.du.OnnxPredictor(onnx_file, args.cpu_threads),
                      program_files=False)


if __name__ == "__main__":
    sys.exit(main())
