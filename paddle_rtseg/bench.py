"""``python -m paddle_rtseg.bench``: dygraph latency of our models, side by side with PaddleSeg's.

RTFormer-Slim at 512x1024, batch 1: ours and ``paddleseg.models.RTFormer`` with the same weights,
called alternately (medians of ``--repeats`` rounds). SeaFormer T/S/B/L at 512x512 (ratios to
Tiny). MixFormer-B0/B1 with the heads considered for the real-time configs (``--only mixformer``).
Prints the table and writes a bar chart PNG. Deployed-model latency is
``python -m paddle_rtseg.bench_deploy``; SegFormer++ token merging is
``python -m paddle_rtseg.bench_segformer_pp``. Numbers are for this machine only.
"""
import argparse
import os

import numpy as np
import paddle

import paddle_rtseg  # noqa: F401
from paddle_rtseg.errors import run_cli, writable_dir
from paddle_rtseg.timing import medians, round_robin


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
    shape = "{}x{}".format(height, width)
    return [dict(model="RTFormer-Slim (paddle_rtseg)", input=shape, ms=ms["ours"],
                 ratio=ms["ours"] / ms["paddleseg"], note="max rel. diff {:.1e}".format(diff)),
            dict(model="RTFormer-Slim (PaddleSeg)", input=shape, ms=ms["paddleseg"], ratio=1.0,
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
        params[name] = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
        candidates[name] = _infer(model)
        candidates[name + " (network)"] = _network_only(model)
    ms = medians(round_robin(candidates, x, repeats))
    tiny = ms["SeaFormer-Tiny"]
    return [dict(model=name, input="{}x{}".format(height, width), ms=value, ratio=value / tiny,
                 note="ratio to SeaFormer-Tiny; {:.2f}M params".format(params[name.split(" ")[0]] / 1e6)
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
        params[name] = "{:.2f}M params, {:.1f} GFLOPs".format(
            sum(int(np.prod(p.shape)) for p in model.parameters()) / 1e6,
            paddle.flops(model, [1, 3, height, width], print_detail=False) / 1e9)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--save_dir", default="output/bench")
    parser.add_argument("--only", choices=sorted(FAMILIES), default=None,
                        help="benchmark one family only")
    args = parser.parse_args(argv)
    writable_dir(args.save_dir)
    rows = [r for name in ([args.only] if args.only else ["rtformer", "seaformer", "mixformer"])
            for r in FAMILIES[name](args.repeats)]
    print_table(rows)
    print("\nplot: " + plot(rows, os.path.join(args.save_dir, "bench_dygraph.png")))
    return rows


FAMILIES = {"rtformer": rtformer_rows, "seaformer": seaformer_rows, "mixformer": mixformer_rows}

if __name__ == "__main__":
    run_cli(main)
