"""Where ONNX Runtime spends one call of a model: kernel time per operator type, from its profiler.

    python scripts/ort_op_profile.py --model Q/ptq_int8/model_int8.onnx --shape 1 3 512 512 \
        [--runs 8] [--threads 2] [--top 15]

Opens the model with the runners' session settings (``OnnxPredictor``: intra-op threads, denormals
flushed), calls it twice to warm up and ``--runs`` times on one random input with ONNX Runtime's
profiler on, and prints the median call time and, per operator type of its optimized graph (fused
and int8 kernels under their own names: ``QLinearConv``, ``Gelu``, ``QLinearSoftmax``...), the
kernel milliseconds per call, the nodes per call and the share of all kernel time.
"""
import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_rtseg_runtime.onnx_runtime import session_options  # noqa: E402
from paddle_rtseg.cli.errors import run_cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="an .onnx file (fp32 or quantize's int8)")
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 3, 512, 512],
                        metavar=("N", "C", "H", "W"))
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=15, help="operator types to print")
    args = parser.parse_args(argv)
    if min(args.runs, args.threads, args.top, *args.shape) < 1:
        parser.error("--runs, --threads, --top and --shape must be positive")
    if not os.path.isfile(args.model):
        parser.error("--model {} is not a file: convert an export first (deploy/onnx/infer.py "
                     "or python -m paddle_rtseg.quantize)".format(args.model))
    return args


def profile(model, shape, runs=8, threads=2):
    """``(median call ms, {op type: (kernel ms per call, nodes per call)})``."""
    import onnxruntime as ort
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as scratch:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(scratch, "profile")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(2):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(1000.0 * (time.perf_counter() - start))
        with open(session.end_profiling()) as f:
            events = json.load(f)
    # the profiler records the warm-up calls too: count only kernels after the second model_run
    runs_start = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    timed_from = runs_start[2] if len(runs_start) > 2 else 0
    kernel_us, nodes = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") \
                and event["ts"] >= timed_from:
            kernel_us[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    return float(np.median(times)), {op: (us / runs / 1000.0, nodes[op] / runs)
                                     for op, us in kernel_us.items()}


def main(argv=None):
    args = parse_args(argv)
    median_ms, ops = profile(args.model, args.shape, args.runs, args.threads)
    total = sum(ms for ms, _ in ops.values()) or 1.0
    print("{}: {} x {} threads, median call {:.1f} ms, kernels {:.1f} ms a call".format(
        args.model, "x".join(map(str, args.shape)), args.threads, median_ms, total))
    print("{:<28} {:>10} {:>7} {:>7}".format("operator", "ms/call", "nodes", "share"))
    for op, (ms, count) in sorted(ops.items(), key=lambda item: -item[1][0])[:args.top]:
        print("{:<28} {:>10.2f} {:>7.0f} {:>6.1f}%".format(op, ms, count, 100.0 * ms / total))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
