"""Convert an exported model directory to Paddle Lite ``.nb`` files and check op support.

    python deploy/lite/convert.py --model_dir output/export [--target arm|x86|arm,x86] \
        [--quant_type QUANT_INT8|QUANT_INT16]

Writes ``<model_dir>/model_<target>.nb`` (naive_buffer, what the light runtime loads) after
``paddle_lite_opt --print_model_ops=true`` confirmed that every op has a kernel on the target.
The export must be ``--format legacy`` (Lite reads only model.pdmodel).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--target", default="arm", help="arm, x86 or a comma-separated list")
    parser.add_argument("--quant_type", default=None, choices=["QUANT_INT8", "QUANT_INT16"],
                        help="store weights as int8/int16 (Lite's dynamic weight quantization)")
    args = parser.parse_args(argv)
    du = common.du
    try:
        for target in args.target.split(","):
            ops, supported = du.lite_model_ops(args.model_dir, target)
            missing = [op for op, kernels in ops.items() if not kernels]
            if not supported or missing:
                raise du.DeployError("Paddle Lite has no {} kernel for: {}".format(
                    target, ", ".join(missing) or "(see paddle_lite_opt output)"))
            suffix = "_" + args.quant_type.lower() if args.quant_type else ""
            out = os.path.join(args.model_dir, "model_{}{}".format(target, suffix))
            nb = du.convert_lite(args.model_dir, out, target, args.quant_type)
            print("{}: {} ops, all supported -> {} ({:.1f} MB)".format(
                target, len(ops), nb, os.path.getsize(nb) / 2 ** 20))
    except du.DeployError as e:
        print("error: {}".format(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
