"""ONNX Runtime fp32 latency of one export converted at several opsets, side by side.

    python scripts/onnx_opset_speed.py --model_dir EXPORT --shape 1 3 512 512 \
        [--opsets 13 17] [--repeats 11] [--threads 2] [--fold_constants]

Converts ``EXPORT`` (a ``python -m paddle_rtseg.export`` folder) with ``paddle2onnx`` at each opset into a
scratch folder, checks the outputs agree, then times the sessions in turn (``timing.round_robin``:
alternating calls with a pause before each) on one random input and prints each median and its
ratio to the first opset, with the ops ONNX Runtime does not fuse (the ReduceMean count of its
optimized graph: each unfused layer_norm leaves two). ``--fold_constants`` adds the default
opset converted with paddle2onnx's Polygraphy constant folding (what ``convert_onnx`` leaves off)
as one more variant. Each variant's conversion time is printed too.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle_rtseg_runtime as du  # noqa: E402
from paddle_rtseg.cli.errors import run_cli  # noqa: E402
from paddle_rtseg.benchmarks.timing import medians, round_robin  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="a `python -m paddle_rtseg.export` folder")
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 3, 512, 512],
                        metavar=("N", "C", "H", "W"))
    parser.add_argument("--opsets", type=int, nargs="+", default=[13, du.DEFAULT_OPSET])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fold_constants", action="store_true",
                        help="also convert at opset {} with Polygraphy's constant folding".format(
                            du.DEFAULT_OPSET))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or min(args.shape) < 1:
        parser.error("--repeats, --threads and --shape must be positive")
    if not os.path.isdir(args.model_dir):
        parser.error("--model_dir {} is not a folder: export first (python -m paddle_rtseg.export)"
                     .format(args.model_dir))
    return args


def reduce_means(session_path, scratch):
    """ReduceMean nodes left in ONNX Runtime's optimized graph of ``session_path``."""
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.optimized_model_filepath = os.path.join(scratch, "optimized.onnx")
    ort.InferenceSession(session_path, options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(options.optimized_model_filepath).graph.node
    return sum(node.op_type == "ReduceMean" for node in nodes)


def main(argv=None):
    args = parse_args(argv)
    x = np.random.default_rng(0).random(args.shape, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="opset-speed-") as scratch:
        predictors, unfused, seconds = {}, {}, {}
        variants = [(opset, False) for opset in args.opsets]
        variants += [(du.DEFAULT_OPSET, True)] if args.fold_constants else []
        for opset, fold in variants:
            name = "opset {}{}".format(opset, " folded" if fold else "")
            start = time.perf_counter()
            path = du.convert_onnx(args.model_dir, os.path.join(scratch, "op{}{}.onnx".format(
                opset, "f" if fold else "")), opset=opset, fold_constants=fold)
            seconds[name] = time.perf_counter() - start
            predictors[name] = du.OnnxPredictor(path, args.threads)
            unfused[name] = reduce_means(path, scratch)
        outputs = {name: predictor(x) for name, predictor in predictors.items()}
        first = next(iter(outputs.values()))
        for name, out in outputs.items():
            print("{}: max |difference| to {} {:.2e}".format(name, next(iter(outputs)),
                                                            float(np.abs(out - first).max())))
        times = medians(round_robin(predictors, x, args.repeats))
    base = next(iter(times.values()))
    for name, ms in times.items():
        print("{:16s} {:8.1f} ms  {:.2f}x  (ReduceMean nodes after ORT's fusions: {}; converted "
              "in {:.1f} s)".format(name, ms, ms / base, unfused[name], seconds[name]))


if __name__ == "__main__":
    run_cli(main)
