"""What a per-process setting changes, in child processes on the same machine: MKL's AVX2 path on
AMD (``paddle_rtseg_runtime.mkl_dispatch``) or the command-line tools' malloc settings
(``paddle_rtseg.cli.malloc_tuning``), for dygraph inference and a training step per family, and
``paddle.matmul`` sgemm.

    python scripts/process_setting_speedup.py [--setting mkl|malloc]
        [--models rtformer_slim segformer_pp_b0 ...] [--rounds 2] [--repeats 3] [--threads 2]

``--setting mkl`` compares MKL's own choice (``MKL_DEBUG_CPU_TYPE=``) with ``MKL_DEBUG_CPU_TYPE=5``,
both with glibc's default malloc; ``--setting malloc`` compares glibc's default malloc
(``PADDLE_RTSEG_MALLOC=system``) with :func:`paddle_rtseg.cli.malloc_tuning.apply`, both with the MKL
path that importing ``paddle_rtseg`` picks. Both settings are read once per process, so each runs
in its own child process; the children alternate (A, B, A, B, ...) and each reports its medians;
the table gives the median over the rounds and the ratio B / A. Inference runs at the shapes of
``bench_deploy`` (batch 1) with the demo-trained weights where present (``bench_deploy.trained``);
the training step is forward + backward + AdamW on a batch of 4 random 3x256x256 images. Besides
the times, each child reports the minor page faults and the system CPU seconds per inference call
and its peak resident memory (``getrusage``). On a CPU whose vendor is not AMD/Hygon both MKL
settings run MKL's own path, and where the C library is not glibc both malloc settings run the
system's malloc (the script says so).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = ["rtformer_slim", "seaformer_tiny", "segformer_pp_b0", "mixformer_b1"]
# Each setting: (label, environment for the child); "" keeps MKL's own choice (mkl_dispatch).
SETTINGS = {
    "mkl": [("MKL default", {"MKL_DEBUG_CPU_TYPE": "", "PADDLE_RTSEG_MALLOC": "system"}),
            ("MKL AVX2", {"MKL_DEBUG_CPU_TYPE": "5", "PADDLE_RTSEG_MALLOC": "system"})],
    "malloc": [("glibc default", {"PADDLE_RTSEG_MALLOC": "system"}),
               ("tuned malloc", {"PADDLE_RTSEG_MALLOC": ""})],
}
CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import paddle_rtseg
from paddle_rtseg.cli import malloc_tuning
malloc_state = malloc_tuning.apply()
import paddle
import paddle.nn.functional as F
from paddle_rtseg.benchmarks import bench_deploy as bd
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
    before = resource.getrusage(resource.RUSAGE_SELF)
    out[name + " inference ms"] = median_ms(infer)
    after = resource.getrusage(resource.RUSAGE_SELF)
    calls = repeats + 1
    out[name + " inference minor faults"] = (after.ru_minflt - before.ru_minflt) / calls
    out[name + " inference system s"] = (after.ru_stime - before.ru_stime) / calls
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
out["peak RSS MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["malloc"] = malloc_state
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


def run_child(label, setting, args):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.update(setting)
    code = CHILD.format(root=ROOT, threads=args.threads, repeats=args.repeats, models=args.models)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        fail("the child for {!r} ({}) failed:\n{}".format(
            label, ", ".join("{}={}".format(k, v) for k, v in setting.items()),
            (proc.stdout + proc.stderr)[-3000:]))
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="mkl",
                   help="mkl: MKL's AVX2 path on AMD; malloc: the CLI tools' malloc settings")
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--rounds", type=positive, default=2,
                   help="child processes per setting, alternating")
    p.add_argument("--repeats", type=positive, default=3, help="timed calls per child and row")
    p.add_argument("--threads", type=positive, default=2)
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    from paddle_rtseg.benchmarks import bench_deploy
    from paddle_rtseg.cli import malloc_tuning
    from paddle_rtseg_runtime import mkl_dispatch
    unknown = [m for m in args.models if m not in bench_deploy.MODELS]
    if unknown:
        fail("unknown model(s) {}; choose from {}".format(", ".join(unknown),
                                                          ", ".join(bench_deploy.MODELS)))
    if args.setting == "mkl":
        environ = {k: v for k, v in os.environ.items() if k != mkl_dispatch.VARIABLE}
        print("this CPU:", mkl_dispatch.decide(environ)[1])
    else:
        environ = {k: v for k, v in os.environ.items() if k != malloc_tuning.OPT_OUT}
        print("this system:", malloc_tuning.decide(environ)[1])
    settings = SETTINGS[args.setting]
    labels = [label for label, _ in settings]
    results = {label: [] for label in labels}
    for r in range(args.rounds):
        for label, setting in settings:
            print("round {}/{}: {} ...".format(r + 1, args.rounds, label), flush=True)
            results[label].append(run_child(label, setting, args))
    rows = [("", labels[0], labels[1], "{} / {}".format(labels[1], labels[0]))]
    for key in results[labels[0]][0]:
        if key.endswith(" weights") or key == "malloc":
            continue
        a, b = (float(np.median([res[key] for res in results[label]])) for label in labels)
        fmt = "{:.3f}" if key.endswith(" s") else "{:.0f}" if "faults" in key else "{:.1f}"
        ratio = "{:.2f}".format(b / a) if a else "-"
        rows.append((key, fmt.format(a), fmt.format(b), ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    first = results[labels[0]][0]
    print("weights: " + ", ".join("{} {}".format(m, first[m + " weights"]) for m in args.models))
    for label in labels:
        print("malloc in '{}': {}".format(label, results[label][0]["malloc"]))


if __name__ == "__main__":
    main()
