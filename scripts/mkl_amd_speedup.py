"""What MKL's AVX2 path (``paddle_rtseg.deployment.mkl_dispatch``) changes: dygraph inference and a training
step per family, and ``paddle.matmul`` sgemm, with MKL's own choice against ``MKL_DEBUG_CPU_TYPE=5``.

    python scripts/mkl_amd_speedup.py [--models rtformer_slim segformer_pp_b0 ...] [--rounds 2]
        [--repeats 3] [--threads 2]

MKL reads the variable once per process, so each setting runs in its own child process; the
children alternate (default, AVX2, default, AVX2, ...) and each reports its medians; the table
gives the median over the rounds and the ratio AVX2 / default. Inference runs at the shapes of
``bench_deploy`` (batch 1) with the demo-trained weights where present (``bench_deploy.trained``);
the training step is forward + backward + AdamW on a batch of 4 random 3x256x256 images.
On a CPU whose vendor is not AMD/Hygon both settings run MKL's own path (the script says so).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = ["rtformer_slim", "seaformer_tiny", "segformer_pp_b0", "mixformer_b1"]
SETTINGS = {"MKL default": "", "MKL AVX2": "5"}  # "" keeps MKL's own choice (mkl_dispatch)
CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import paddle_rtseg
import paddle
import paddle.nn.functional as F
from paddle_rtseg import bench_deploy as bd
from paddle_rtseg import load_checkpoint
paddle.set_device("cpu")
paddle.set_num_threads({threads}) if hasattr(paddle, "set_num_threads") else None
repeats = {repeats}

def median_ms(fn):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))

out = {{}}
a = paddle.randn([2048, 2048])
out["sgemm GFLOP/s"] = 2 * 2048 ** 3 / 1e6 / median_ms(lambda: paddle.matmul(a, a).numpy())
for name in {models!r}:
    paddle.seed(0)
    config, shape = bd.MODELS[name][0], bd.MODELS[name][1]
    trained_config, weights = bd.trained(name)
    model = bd._build(trained_config or bd.os.path.join(bd.ROOT, config))
    if weights:
        load_checkpoint(model, weights)
    x = paddle.to_tensor(np.random.RandomState(0).rand(*shape).astype("float32"))
    def infer():
        with paddle.no_grad():
            model(x)[0].numpy()
    out[name + " inference ms"] = median_ms(infer)
    model.train()
    opt = paddle.optimizer.AdamW(1e-4, parameters=model.parameters())
    xb = paddle.randn([4, 3, 256, 256])
    yb = paddle.randint(0, 2, [4, 256, 256])
    def step():
        logits = model(xb)[0]
        loss = F.cross_entropy(logits, yb, axis=1)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
    out[name + " train step ms"] = median_ms(step)
    out[name + " weights"] = "trained" if weights else "random"
print("RESULT " + json.dumps(out), flush=True)
"""


def fail(message):
    """A user error: one paragraph on stderr, exit status 2 (the project's CLI convention)."""
    print("error: " + message, file=sys.stderr)
    sys.exit(2)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more, got {}".format(value))
    return value


def run_child(value, args):
    env = dict(os.environ, MKL_DEBUG_CPU_TYPE=value, OMP_NUM_THREADS=str(args.threads))
    code = CHILD.format(root=ROOT, threads=args.threads, repeats=args.repeats, models=args.models)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        fail("the child with MKL_DEBUG_CPU_TYPE={!r} failed:\n{}".format(
            value, (proc.stdout + proc.stderr)[-3000:]))
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--rounds", type=positive, default=2,
                   help="child processes per setting, alternating")
    p.add_argument("--repeats", type=positive, default=3, help="timed calls per child and row")
    p.add_argument("--threads", type=positive, default=2)
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    from paddle_rtseg import bench_deploy
    from paddle_rtseg.deployment import mkl_dispatch
    unknown = [m for m in args.models if m not in bench_deploy.MODELS]
    if unknown:
        fail("unknown model(s) {}; choose from {}".format(", ".join(unknown),
                                                          ", ".join(bench_deploy.MODELS)))
    environ = {k: v for k, v in os.environ.items() if k != mkl_dispatch.VARIABLE}
    print("this CPU:", mkl_dispatch.decide(environ)[1])
    results = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for name, value in SETTINGS.items():
            print("round {}/{}: {} ...".format(r + 1, args.rounds, name), flush=True)
            results[name].append(run_child(value, args))
    keys = list(results["MKL default"][0])
    rows = [("", "MKL default", "MKL AVX2", "AVX2 / default")]
    for key in keys:
        if key.endswith(" weights"):
            continue
        a, b = (float(np.median([res[key] for res in results[n]])) for n in SETTINGS)
        rows.append((key, "{:.1f}".format(a), "{:.1f}".format(b), "{:.2f}".format(b / a)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("weights: " + ", ".join("{} {}".format(m, results["MKL default"][0][m + " weights"])
                                  for m in args.models))


if __name__ == "__main__":
    main()
