"""Convert an exported model directory to ONNX for the ONNX runner (``deploy/onnx/infer.py``).

    python deploy/onnx/convert.py --model_dir output/export [--opset_version 17] [--fold_constants]

Writes ``<model_dir>/model.onnx`` with ``paddle2onnx`` (in a subprocess), without paddle2onnx's
Polygraphy constant folding unless ``--fold_constants`` asks for it: the folding costs 3-19x the
conversion time and ONNX Runtime folds the same constants itself (docs/deployment.md).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def main(argv=None):
    du = common.du
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="a `python -m paddle_rtseg.export` folder")
    parser.add_argument("--opset_version", type=int, default=du.DEFAULT_OPSET,
                        help="ONNX opset (default %(default)s: one LayerNormalization per layer norm)")
    parser.add_argument("--fold_constants", action="store_true",
                        help="run paddle2onnx's Polygraphy constant folding too (slow)")
    args = parser.parse_args(argv)
    try:
        du.read_deploy_yaml(args.model_dir)  # the export is complete before anything is written
        path = du.convert_onnx(args.model_dir, os.path.join(args.model_dir, "model.onnx"),
                               opset=args.opset_version, fold_constants=args.fold_constants)
    except du.DeployError as e:
        print("error: {}".format(e), file=sys.stderr)
        return 2
    print("opset {} -> {} ({:.1f} MB)".format(args.opset_version, path,
                                              os.path.getsize(path) / 2 ** 20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
