"""How much of a Paddle Inference (oneDNN) run is spent inside oneDNN's primitives.

    python scripts/onednn_time_share.py --model_dir EXPORT [--shape 1 3 512 512] [--threads 2]

Runs the export with the runners' settings (``PaddleInferencePredictor``) in a child process with
``ONEDNN_VERBOSE=1``, warms it up, times one call, and sums the exec times oneDNN prints for that
call, per primitive kind. What the primitives do not account for is Paddle's own per-operator work
(kernel selection, shape inference, layout bookkeeping) and its non-oneDNN kernels. The verbose
printing itself slows the call a little, so the share is a lower bound.
"""
import argparse
import collections
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "ONEDNN_TIME_SHARE_CALL"
CHILD = """
import sys, time
import numpy as np
sys.path.insert(0, {root!r})
from paddle_rtseg_runtime import PaddleInferencePredictor
predictor = PaddleInferencePredictor({model_dir!r}, threads={threads})
x = np.random.RandomState(0).rand(*{shape!r}).astype("float32")
for _ in range(3):
    predictor(x)
time.sleep(0.3)
print({mark!r}, flush=True)
start = time.perf_counter()
predictor(x)
print({mark!r}, 1000 * (time.perf_counter() - start), flush=True)
"""


def parse(lines):
    """``(call ms, {(kind, implementation): [count, ms]})`` from the child's output."""
    marks = [i for i, line in enumerate(lines) if line.startswith(MARK)]
    if len(marks) != 2:
        raise SystemExit("error: the child did not finish its timed call:\n" + "\n".join(lines[-20:]))
    per_kind = collections.defaultdict(lambda: [0, 0.0])
    for line in lines[marks[0] + 1:marks[1]]:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        entry = per_kind[(fields[at + 2], fields[at + 3])]
        entry[0] += 1
        entry[1] += float(fields[-1])
    return float(lines[marks[1]].split()[1]), per_kind


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="a `python -m paddle_rtseg.export` directory")
    parser.add_argument("--shape", nargs=4, type=int, default=[1, 3, 512, 512])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "deploy"))
    import common  # the runners' stand-alone deployment package: no Paddle import here
    try:
        common.du.read_deploy_yaml(args.model_dir)  # a missing or incomplete export: one line
    except common.du.DeployError as e:
        print("error: {}".format(e), file=sys.stderr)
        return 2
    code = CHILD.format(root=ROOT, model_dir=os.path.abspath(args.model_dir),
                        threads=args.threads, shape=tuple(args.shape), mark=MARK)
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, ONEDNN_VERBOSE="1"))
    if proc.returncode:
        print("error: the child failed:\n" + proc.stdout[-3000:], file=sys.stderr)
        return 2
    call_ms, per_kind = parse(proc.stdout.splitlines())
    total = sum(ms for _, ms in per_kind.values())
    for (kind, impl), (count, ms) in sorted(per_kind.items(), key=lambda kv: -kv[1][1]):
        print("{:<14}{:<28}{:>5} calls {:>9.2f} ms".format(kind, impl, count, ms))
    print("one call: {:.1f} ms; oneDNN primitives: {:.1f} ms ({:.0%}); the rest: {:.1f} ms".format(
        call_ms, total, total / call_ms, call_ms - total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
