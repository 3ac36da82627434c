"""Where dygraph time goes: the probes behind docs/training_speed.md's per-layer and A/B claims.

    python scripts/dygraph_probes.py rounding            # PalQuant's rounding, fast vs floor-based
    python scripts/dygraph_probes.py layers [--family palquant] [--size 512] [--top 12]
    python scripts/dygraph_probes.py onednn [--family seaformer]

All at one Paddle thread (Paddle's own default), the benchmark's models
(``paddle_rtseg.benchmarks.bench_train.build_ours``), candidates alternating in one process
(``benchmarks.timing.round_robin``, medians of ``--repeats``):

- ``rounding``: 1M values through ``round_to_levels`` and ``round_half_even`` (equal results
  checked), then PalQuant ResNet-18 G2 W2A2 (width 16) inference at ``--size`` and a training
  forward+backward at 2x224x224 with each rounding in turn.
- ``layers``: every convolution of ``--family``'s model timed by forward hooks, eval at
  ``--size``, the ``--top`` slowest with kernel, groups, filter shape and stride.
- ``onednn``: eval at ``--size`` with ``FLAGS_use_mkldnn`` off and on, alternating: the largest
  output difference and both medians (equal outputs mean the flag chose no other kernel).
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _model(family, classes):
    import paddle
    from paddle_rtseg.benchmarks.bench_train import build_ours
    paddle.seed(0)
    model = build_ours(family, classes)
    if family == "palquant":
        from paddle_rtseg.layers.palquant_conv import init_quantizers
        init_quantizers(model, paddle.randn([2, 3, 224, 224]))
    return model


def _logits(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def rounding(args):
    import paddle
    import paddle.nn.functional as F
    import paddle_rtseg.layers.palquant_conv as pq
    from paddle_rtseg.benchmarks.timing import medians, round_robin
    fast, plain = pq.round_to_levels, pq.round_half_even
    v = paddle.to_tensor(np.random.default_rng(0).uniform(0, 3, 10 ** 6).astype("float32"))
    assert np.array_equal(fast(v).numpy(), plain(v).numpy())
    print("1M values, ms:", {k: round(t, 2) for k, t in medians(round_robin(
        {"round_to_levels": lambda _: fast(v).numpy(), "round_half_even": lambda _: plain(v).numpy()},
        None, args.repeats, settle_s=0.05)).items()})
    model = _model("palquant", 1000)
    x = paddle.randn([2, 3, 224, 224])
    y = paddle.randint(0, 1000, [2])
    xi = paddle.randn([1, 3, args.size, args.size])

    def infer(rounder):
        def run(_):
            pq.round_to_levels = rounder
            model.eval()
            with paddle.no_grad():
                return model(xi).numpy()
        return run

    def train(rounder):
        def run(_):
            pq.round_to_levels = rounder
            model.train()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            model.clear_gradients()
            float(loss)
        return run

    try:
        for name, make in (("inference {0}x{0}".format(args.size), infer),
                           ("training forward+backward 2x224x224", train)):
            ms = medians(round_robin({"fast": make(fast), "floor-based": make(plain)}, None,
                                     args.repeats))
            print("PalQuant R18 {}: fast {:.1f} ms, floor-based {:.1f} ms, ratio {:.2f}x".format(
                name, ms["fast"], ms["floor-based"], ms["fast"] / ms["floor-based"]))
    finally:
        pq.round_to_levels = fast


def layers(args):
    import paddle
    import paddle.nn as nn
    model = _model(args.family, 1000 if args.family == "palquant" else 19)
    model.eval()
    times, names = {}, {}

    def pre(layer, _):
        layer._probe_start = time.perf_counter()

    def post(layer, *_):
        times[names[id(layer)]].append(1000.0 * (time.perf_counter() - layer._probe_start))

    for name, layer in model.named_sublayers():
        if isinstance(layer, nn.Conv2D):
            names[id(layer)] = "{} {}x{} groups {} filter {} stride {}".format(
                name, *layer._kernel_size, layer._groups, layer.weight.shape, layer._stride)
            times[names[id(layer)]] = []
            layer.register_forward_pre_hook(pre)
            layer.register_forward_post_hook(post)
    x = paddle.randn([1, 3, args.size, args.size])
    with paddle.no_grad():
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            _logits(model(x)).numpy()
            total = 1000.0 * (time.perf_counter() - start)
    ranked = sorted(((float(np.median(t[1:])), n) for n, t in times.items()), reverse=True)
    print("{} eval {}x{}: last forward {:.1f} ms, its convolutions {:.1f} ms (medians)".format(
        args.family, args.size, args.size, total, sum(t for t, _ in ranked)))
    for t, n in ranked[:args.top]:
        print("  {:7.1f} ms  {}".format(t, n))


def onednn(args):
    import paddle
    from paddle_rtseg.benchmarks.timing import medians, round_robin
    model = _model(args.family, 1000 if args.family == "palquant" else 19)
    model.eval()
    x = paddle.randn([1, 3, args.size, args.size])

    def infer(flag):
        def run(_):
            paddle.set_flags({"FLAGS_use_mkldnn": flag})
            with paddle.no_grad():
                return _logits(model(x)).numpy()
        return run

    diff = float(np.abs(infer(False)(None) - infer(True)(None)).max())
    ms = medians(round_robin({"off": infer(False), "on": infer(True)}, None, args.repeats))
    print("{} eval {}x{}: FLAGS_use_mkldnn off {:.1f} ms, on {:.1f} ms, max |output diff| {:.1e}"
          .format(args.family, args.size, args.size, ms["off"], ms["on"], diff))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=["rounding", "layers", "onednn"])
    parser.add_argument("--family", default="palquant",
                        choices=["seaformer", "segformer", "segformer_pp", "rtformer", "palquant"])
    parser.add_argument("--size", type=int, default=512, help="inference input (square)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    if args.size < 32 or args.repeats < 1:
        parser.error("--size needs at least 32 and --repeats at least 1")
    from paddle.base import core
    core.set_num_threads(1)
    {"rounding": rounding, "layers": layers, "onednn": onednn}[args.probe](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
