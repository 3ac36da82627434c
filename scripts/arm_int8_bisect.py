"""Which int8 layers make a PTQ ``.nb`` crash Paddle Lite's ARM kernels: quantize an fp32 export with a
chosen subset of layers in int8, convert it for ARM and run one input through the real kernels.

    PADDLE_LITE_ARM_DIR=../shared/paddle-lite-armv8 python scripts/arm_int8_bisect.py \
        --model_dir output/camvid_deploy/mixformer/quantize/fp32 --shape 1 3 360 480 \
        [--op_types conv2d depthwise_conv2d matmul_v2] [--attention_matmuls true|false] \
        [--linears 0-90] [--save_dir output/arm_int8_bisect]

``--model_dir``: a legacy-format fp32 export (``quantize``'s ``fp32/``). Paddle's static PTQ (avg,
2 random calibration batches at ``--calib_shape``: a crash does not need calibrated scales) puts
``--op_types`` in int8, except the ``matmul_v2`` ops left out: the activation x activation ones
(attention scores and mixing) unless ``--attention_matmuls true``, and the linear layers (``matmul_v2``
with a weight, counted in program order) outside ``--linears A-B``. The ``.nb`` then runs one
random input of ``--shape`` in one emulated process (``lite_arm.run_raw``). Prints one line:
``ok`` with the output shape, or ``CRASH`` with the runner's exit; exits 0 either way (2 on bad input).
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("FLAGS_enable_pir_api", "0")  # PTQ reads and writes the legacy program


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="a legacy-format fp32 export")
    parser.add_argument("--shape", type=int, nargs=4, required=True, metavar=("N", "C", "H", "W"))
    parser.add_argument("--calib_shape", type=int, nargs=4, default=[1, 3, 96, 128],
                        metavar=("N", "C", "H", "W"))
    parser.add_argument("--op_types", nargs="+", default=["conv2d", "depthwise_conv2d", "matmul_v2"],
                        choices=["conv2d", "depthwise_conv2d", "matmul_v2"])
    parser.add_argument("--attention_matmuls", default="false", choices=["true", "false"])
    parser.add_argument("--linears", default=None, help="A-B: linear layers A..B-1 in int8 "
                        "(default: all)")
    parser.add_argument("--save_dir", default=os.path.join("output", "arm_int8_bisect"))
    args = parser.parse_args(argv)
    if args.linears is not None:
        try:
            args.linears = tuple(int(v) for v in args.linears.split("-"))
            assert len(args.linears) == 2 and 0 <= args.linears[0] < args.linears[1]
        except (ValueError, AssertionError):
            parser.error("--linears takes A-B with 0 <= A < B, e.g. 0-45")
    if not os.path.isfile(os.path.join(args.model_dir, "model.pdmodel")):
        parser.error("--model_dir {} has no model.pdmodel: pass a legacy-format export "
                     "(python -m paddle_rtseg.export --format legacy)".format(args.model_dir))
    return args


def matmuls(model_file):
    """``(X input, Y input, Y is a weight)`` of every ``matmul_v2`` in program order."""
    from paddle_rtseg_runtime.program import read_program
    block = read_program(model_file).blocks[0]
    weights = {v.name for v in block.vars if v.persistable}
    found = []
    for op in block.ops:
        if op.type == "matmul_v2":
            ins = {a.parameter: a.arguments[0] for a in op.inputs if a.arguments}
            found.append((ins["X"], ins["Y"], ins["Y"] in weights))
    return found


def skip_list(args):
    """Tensor names whose reading ops Paddle's PTQ leaves in float (``skip_tensor_list``)."""
    ops = matmuls(os.path.join(args.model_dir, "model.pdmodel"))
    skip = [] if args.attention_matmuls == "true" else [x for x, _, weight in ops if not weight]
    if args.linears:
        a, b = args.linears
        skip += [y for i, y in enumerate(y for _, y, weight in ops if weight) if not a <= i < b]
    return skip


def quantize(args, out):
    from paddle_rtseg.quantization.ptq import post_training_quantize
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=args.calib_shape).astype("float32") for _ in range(2)]
    post_training_quantize(args.model_dir, out, batches, "avg", op_types=args.op_types,
                           skip_tensors=skip_list(args))


def main(argv=None):
    args = parse_args(argv)
    import paddle_rtseg_runtime as du
    from paddle_rtseg_runtime import lite_arm
    reason = lite_arm.unavailable_reason()
    if reason:
        raise du.DeployError("The ARM kernels cannot run here: {}".format(reason))
    name = "{}_attn-{}_lin-{}".format("+".join(args.op_types), args.attention_matmuls,
                                      "-".join(map(str, args.linears)) if args.linears else "all")
    out = os.path.abspath(os.path.join(args.save_dir, name))
    quantize(args, out)
    nb = du.convert_lite(out, os.path.join(out, "model_arm"), "arm")
    x = np.random.default_rng(1).normal(size=args.shape).astype("float32")
    try:
        y = lite_arm.run_raw(nb, [x])[0]
        print("{} at {}: ok, output {}".format(name, "x".join(map(str, args.shape)), list(y.shape)))
    except du.DeployError as e:
        print("{} at {}: CRASH {}".format(name, "x".join(map(str, args.shape)),
                                          " ".join(str(e).split())[:160]))
    return 0


if __name__ == "__main__":
    from paddle_rtseg.cli.errors import run_cli
    run_cli(main)
