"""``python -m paddle_rtseg.bench``: dygraph latency of our models, side by side with PaddleSeg's.

RTFormer-Slim at 512x1024 and SegFormer-B0 at 1024x1024, batch 1: ours and PaddleSeg's
(``paddleseg.models.RTFormer`` / ``SegFormer``) with the same weights, called alternately (medians of
``--repeats`` rounds). SeaFormer T/S/B/L at 512x512 (ratios to Tiny). MixFormer-B0/B1 with the heads
considered for the real-time configs. MACs from :func:`paddle_rtseg.benchmarks.flops.count_macs` (matmuls and
functional convs included). Prints the table and writes a bar chart PNG. Deployed-model latency is
``python -m paddle_rtseg.bench_deploy``; SegFormer++ token merging is
``python -m paddle_rtseg.bench_segformer_pp``. Numbers are for this machine only.
"""
import argparse
import os

import numpy as np

from paddle_rtseg import MKL_DISPATCH  # first: sets MKL's code path before Paddle loads
import paddle  # noqa: E402

from paddle_rtseg.cli import malloc_tuning
from paddle_rtseg.cli.errors import run_cli, writable_dir
from paddle_rtseg.benchmarks.flops import count_macs
from paddle_rtseg.benchmarks.timing import medians, round_robin


def _infer(model):
    model.eval()

    def run(x):
        with paddle.no_grad():
            return model(x)[0].numpy()

    return run


def rtformer_rows(repeats, height=512, width=1024):
    """Ours vs PaddleSeg's RTFormer-Slim on the same weights; returns table rows."""
    from paddleseg.models import RTFormer as PaddleSegRTFormer

    from paddle_rtseg.models import RTFormer

    settings = dict(base_channels=32, head_channels=64, use_injection=[True, True])
    ours, theirs = RTFormer(19, **settings), PaddleSegRTFormer(19, **settings)
    ours.set_state_dict(theirs.state_dict())
    x = paddle.randn([1, 3, height, width])
    a, b = _infer(ours)(x), _infer(theirs)(x)
    diff = float(np.abs(a - b).max() / np.abs(b).max())
    ms = medians(round_robin({"ours": _infer(ours), "paddleseg": _infer(theirs)}, x, repeats))
    return _pair_rows("RTFormer-Slim", ours, ms, diff, height, width)


def segformer_rows(repeats, height=1024, width=1024):
    """Ours (SegFormer++ with merging off) vs PaddleSeg's SegFormer-B0 on the same weights."""
    from paddleseg.models import SegFormer
    from paddleseg.models.backbones.mix_transformer import MixVisionTransformer_B0

    from paddle_rtseg.models.mit import MiT_B0
    from paddle_rtseg.models.segformer_pp import SegFormerPP

    theirs = SegFormer(19, MixVisionTransformer_B0(), embedding_dim=256)
    ours = SegFormerPP(19, MiT_B0(), embedding_dim=256)
    ours.set_state_dict(theirs.state_dict())
    x = paddle.randn([1, 3, height, width])
    a, b = _infer(ours)(x), _infer(theirs)(x)
    diff = float(np.abs(a - b).max() / np.abs(b).max())
    ms = medians(round_robin({"ours": _infer(ours), "paddleseg": _infer(theirs)}, x, repeats))
    return _pair_rows("SegFormer-B0", ours, ms, diff, height, width)


def _pair_rows(name, ours, ms, diff, height, width):
    shape = "{}x{}".format(height, width)
    gmacs = count_macs(ours, [1, 3, height, width]) / 1e9
    return [dict(model=name + " (paddle_rtseg)", input=shape, ms=ms["ours"],
                 ratio=ms["ours"] / ms["paddleseg"],
                 note="ours/PaddleSeg latency; max rel. logit diff {:.1e}; {:.2f} GMACs".format(
                     diff, gmacs)),
            dict(model=name + " (PaddleSeg)", input=shape, ms=ms["paddleseg"], ratio=1.0,
                 note="reference for the ratio above")]


def seaformer_rows(repeats, height=512, width=512):
    """Each SeaFormer variant (150 classes), called in turn: full forward (logits resized to the
    input) and network only (logits at 1/8, before the final bilinear resize)."""
    from paddle_rtseg.models import seaformer

    x = paddle.randn([1, 3, height, width])
    candidates, params = {}, {}
    for variant in ("tiny", "small", "base", "large"):
        model = seaformer.SeaFormerSeg(150, getattr(seaformer, "SeaFormer_" + variant)(),
                                       **seaformer.HEADS[variant])
        model.eval()
        name = "SeaFormer-" + variant.capitalize()
        params[name] = (sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient),
                        count_macs(model, [1, 3, height, width]))
        candidates[name] = _infer(model)
        candidates[name + " (network)"] = _network_only(model)
    ms = medians(round_robin(candidates, x, repeats))
    tiny = ms["SeaFormer-Tiny"]
    return [dict(model=name, input="{}x{}".format(height, width), ms=value, ratio=value / tiny,
                 note="ratio to SeaFormer-Tiny; {:.2f}M params, {:.2f} GMACs".format(
                     params[name.split(" ")[0]][0] / 1e6, params[name.split(" ")[0]][1] / 1e9)
                 + ("; without the final resize" if "network" in name else ""))
            for name, value in ms.items()]


def mixformer_rows(repeats, height=256, width=512):
    """MixFormer B1 (19 classes): backbone alone and with each candidate head, called in turn; B0 with
    the chosen All-MLP head. Ratios are to the B1 backbone alone."""
    from paddle_rtseg.models import SegFormerPP, UPerNet
    from paddle_rtseg.models import mixformer

    x = paddle.randn([1, 3, height, width])
    models = {
        "MixFormer-B1 backbone": mixformer.MixFormer_B1(),
        "MixFormer-B1 + All-MLP-128": SegFormerPP(19, mixformer.MixFormer_B1(), embedding_dim=128),
        "MixFormer-B1 + UperNet-128": UPerNet(19, mixformer.MixFormer_B1(), channels=128,
                                               aux_channels=0),
        "MixFormer-B1 + UperNet-512": UPerNet(19, mixformer.MixFormer_B1(), channels=512),
        "MixFormer-B0 + All-MLP-128": SegFormerPP(19, mixformer.MixFormer_B0(), embedding_dim=128),
    }
    candidates, params = {}, {}
    for name, model in models.items():
        model.eval()
        params[name] = "{:.2f}M params, {:.2f} GMACs".format(
            sum(int(np.prod(p.shape)) for p in model.parameters()) / 1e6,
            count_macs(model, [1, 3, height, width]) / 1e9)
        candidates[name] = _infer(model) if "+" in name else _backbone_only(model)
    ms = medians(round_robin(candidates, x, repeats))
    base = ms["MixFormer-B1 backbone"]
    return [dict(model=name, input="{}x{}".format(height, width), ms=value, ratio=value / base,
                 note="ratio to the B1 backbone; " + params[name])
            for name, value in ms.items()]


def _backbone_only(model):
    def run(x):
        with paddle.no_grad():
            return [t.numpy() for t in model(x)]

    return run


def _network_only(model):
    def run(x):
        with paddle.no_grad():
            return model.head(model.backbone(x)).numpy()

    return run


def print_table(rows):
    print("\n{:<34} {:>10} {:>12} {:>16}  {}".format("model", "input", "median ms",
                                                      "ratio", "note"))
    for r in rows:
        print("{:<34} {:>10} {:>12.1f} {:>15.2f}x  {}".format(r["model"], r["input"], r["ms"],
                                                             r["ratio"], r["note"]))


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.5))
    names = ["{} @{}".format(r["model"], r["input"]) for r in rows]
    ax.barh(names, [r["ms"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(r["ms"], i, " {:.0f} ms ({:.2f}x)".format(r["ms"], r["ratio"]), va="center")
    ax.set_xlabel("dygraph latency, batch 1, median (ms); lower is better")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


BENCHES = {"rtformer": rtformer_rows, "segformer": segformer_rows, "seaformer": seaformer_rows,
           "mixformer": mixformer_rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", nargs="+", choices=sorted(BENCHES), default=sorted(BENCHES),
                        help="which comparisons to run (default: all)")
    parser.add_argument("--save_dir", default="output/bench")
    args = parser.parse_args(argv)
    writable_dir(args.save_dir)
    rows = [row for name in args.models for row in BENCHES[name](args.repeats)]
    print_table(rows)
    print("\nMKL (dygraph's matmul/conv): " + MKL_DISPATCH)
    print("malloc (dygraph's tensors): " + malloc_tuning.current())
    print("plot: " + plot(rows, os.path.join(args.save_dir, "bench_dygraph.png")))
    return rows



if __name__ == "__main__":
    run_cli(main)
