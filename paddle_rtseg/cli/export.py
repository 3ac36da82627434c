"""``python -m paddle_rtseg.export``: a model to a static graph plus PaddleSeg's ``deploy.yaml``.

    python -m paddle_rtseg.export --config CFG --model_path model.pdparams --save_dir output/export \
        [--input_shape N 3 H W] [--output_op argmax|softmax|none] [--format legacy|pir]

What is written and how: :mod:`paddle_rtseg.exporting.static_graph`.
"""
import argparse
import sys

from paddle_rtseg.exporting.static_graph import export


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="PaddleSeg YAML config of the model")
    parser.add_argument("--model_path", default=None, help=".pdparams (or authors' .pth) weights")
    parser.add_argument("--save_dir", default="output/inference_model")
    parser.add_argument("--input_shape", nargs=4, type=int, default=None, metavar=("N", "C", "H", "W"),
                        help="fixed input shape; -1 = dynamic (default: -1 3 -1 -1)")
    parser.add_argument("--output_op", default="argmax",
                        help="argmax (default), softmax or none (logits)")
    parser.add_argument("--format", default="legacy", dest="fmt",
                        help="legacy (model.pdmodel; Paddle Lite needs it) or pir (model.json)")
    parser.add_argument("--opts", nargs="+", action="extend", default=None,
                        help="config overrides key=value")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from paddle_rtseg.cli.errors import run_cli

    path = run_cli(lambda: export(args.config, args.save_dir, args.model_path, args.input_shape,
                                  args.output_op, args.fmt, args.opts))
    print("Exported to {} (deploy.yaml: {})".format(args.save_dir, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
