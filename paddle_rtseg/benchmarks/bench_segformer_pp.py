"""SegFormer++ benchmark: speed-up of each token merging strategy over no merging on the same weights,
and how far its predictions move from the unmerged model's.

    python -m paddle_rtseg.bench_segformer_pp [--variants B0 B2] [--size 1024] [--rounds 5]
        [--threads 2] [--calls 1] [--train_iters 400] [--weights W.pdparams] [--paddle_inference]
        [--save_dir output/bench_segformer_pp]

1. Trains SegFormer-B0 (PaddleSeg head) from scratch on the bundled synthetic set
   (configs/segformer_pp/segformer_pp_b0_synthetic_128x128_2k.yml), or loads ``--weights``.
2. Agreement: on the synthetic validation images (128x128, and upsampled to ``--size``), the
   argmax of every strategy is compared with the unmerged model's: pixel accuracy and mIoU between
   the two predictions (and each one's mIoU against the ground truth at 128x128).
3. Speed: dygraph inference (backbone + head, batch 1, no grad) at ``--size`` x ``--size`` for each
   variant; the strategies run alternately, round after round, on the same weights, and the
   speed-up is the ratio of medians. ``--calls N``: each turn is N back-to-back calls timed after
   the first (:func:`paddle_rtseg.benchmarks.timing.round_robin`), the latency of a loop over frames rather
   than of a call that follows another strategy's; dygraph and Paddle Inference alike. B0 uses the
   trained weights; other variants random weights (speed does not depend on the values except
   through bsm's matching, which has a fixed cost).
   With ``--paddle_inference`` the trained B0 is also exported once per strategy (fixed size) and
   timed the same way in Paddle Inference (CPU: oneDNN, and the OpenVINO engine where Paddle has
   it; columns ``B0-PI``, ``B0-PI-OpenVINO``), and whether each export keeps oneDNN's bilinear
   resize pass on (:func:`paddle_rtseg_runtime.onednn_resize_is_exact`).
4. MACs of B0 per strategy (:func:`paddle_rtseg.benchmarks.flops.count_macs`) and the achieved GFLOP/s of
   each timing, next to ``paddle.matmul`` sgemm GFLOP/s measured in the same run.
Prints a table, writes ``results.json`` and ``segformer_pp_bench.png`` in ``--save_dir``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from paddle_rtseg import MKL_DISPATCH
from paddle_rtseg.cli import malloc_tuning
from paddle_rtseg.benchmarks.timing import medians, round_robin

STRATEGIES = ("none", "hq", "fast", "2x2", "downsample")
PAPER_GPU_SPEEDUP = {"hq": 1.61, "fast": 1.94, "2x2": 1.90, "downsample": 6.51}  # B5, Cityscapes
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["B0"], help="MiT variants to time (B0..B5)")
    p.add_argument("--size", type=int, default=1024, help="square input size for timing")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (each runs every strategy)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--calls", type=int, default=1,
                   help="back-to-back calls per turn; >1 times all but the first (steady loop)")
    p.add_argument("--config", default=CONFIG, help="synthetic training config")
    p.add_argument("--train_iters", type=int, default=400)
    p.add_argument("--weights", default=None, help="trained B0 .pdparams (skips training)")
    p.add_argument("--paddle_inference", action="store_true",
                   help="also time B0 exported per strategy in Paddle Inference (oneDNN, OpenVINO)")
    p.add_argument("--save_dir", default="output/bench_segformer_pp")
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error("--calls must be at least 1 (1: single calls), got {}".format(args.calls))
    return args


def train(model, dataset, iters, batch_size=8, lr=1e-3, log=print):
    """A plain AdamW + poly loop (the config's data, cross-entropy ignoring 255)."""
    import paddle
    import paddle.nn.functional as F
    sched = paddle.optimizer.lr.PolynomialDecay(lr, iters, end_lr=1e-5, power=1.0)
    opt = paddle.optimizer.AdamW(sched, parameters=model.parameters(), weight_decay=0.01)
    rng = np.random.default_rng(0)
    model.train()
    start = time.time()
    for it in range(iters):
        idx = rng.choice(len(dataset), batch_size, replace=False)
        samples = [dataset[int(i)] for i in idx]
        x = paddle.to_tensor(np.stack([s["img"] for s in samples]).astype("float32"))
        y = paddle.to_tensor(np.stack([s["label"] for s in samples]).astype("int64").reshape(
            [batch_size] + list(x.shape[2:])))
        loss = F.cross_entropy(model(x)[0], y, axis=1, ignore_index=255)
        loss.backward()
        opt.step()
        opt.clear_grad()
        sched.step()
        if it % 50 == 0 or it == iters - 1:
            log("  train iter {:4d}/{} loss {:.3f} ({:.0f} s)".format(it + 1, iters, float(loss),
                                                                     time.time() - start))
    model.eval()


def confusion_iou(pred, ref, num_classes, ignore=None):
    """Pixel accuracy and mIoU of ``pred`` against ``ref`` (classes present in either)."""
    keep = np.ones_like(ref, bool) if ignore is None else ref != ignore
    p, r = pred[keep].ravel(), ref[keep].ravel()
    cm = np.bincount(r * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, -1)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float(inter.sum() / max(cm.sum(), 1)), float(np.mean(inter[present] / union[present]))


def agreement(model, dataset, size, num_classes):
    """Per strategy: agreement with the unmerged model at 128 and at ``size``, mIoU vs GT at 128."""
    import paddle
    import paddle.nn.functional as F
    images = np.stack([dataset[i]["img"] for i in range(len(dataset))]).astype("float32")
    labels = np.stack([dataset[i]["label"] for i in range(len(dataset))]).reshape(
        len(dataset), *images.shape[2:]).astype("int64")
    preds = {}
    with paddle.no_grad():
        for strategy in STRATEGIES:
            model.set_token_merging(strategy)
            small = [model(paddle.to_tensor(images[i:i + 4]))[0].argmax(1).numpy()
                     for i in range(0, len(images), 4)]
            big = [model(F.interpolate(paddle.to_tensor(images[i:i + 1]), size=[size, size],
                                       mode="bilinear"))[0].argmax(1).numpy()
                   for i in range(min(len(images), 4))]
            preds[strategy] = (np.concatenate(small), np.concatenate(big))
    model.set_token_merging(None)
    out = {}
    for strategy in STRATEGIES:
        small, big = preds[strategy]
        acc128, miou128 = confusion_iou(small, preds["none"][0], num_classes)
        accbig, mioubig = confusion_iou(big, preds["none"][1], num_classes)
        _, gt = confusion_iou(small, labels, num_classes, ignore=255)
        out[strategy] = dict(pixel_acc_vs_none_128=acc128, miou_vs_none_128=miou128,
                             pixel_acc_vs_none_big=accbig, miou_vs_none_big=mioubig,
                             miou_vs_gt_128=gt)
    return out


def time_strategies(model, size, rounds, calls=1):
    """Median seconds per forward for each strategy, alternating strategies every round."""
    import paddle

    def with_strategy(strategy):
        def run(x):
            model.set_token_merging(strategy)
            with paddle.no_grad():
                return model(x)[0].numpy()
        return run

    times = round_robin({s: with_strategy(s) for s in STRATEGIES},
                        paddle.randn([1, 3, size, size]), rounds, calls=calls)
    model.set_token_merging(None)
    return {s: ms / 1000.0 for s, ms in medians(times).items()}


def time_paddle_inference(config, weights, size, rounds, threads, save_dir, calls=1):
    """Like :func:`time_strategies` on per-strategy exports (``paddle_rtseg.exporting.static_graph``), in Paddle
    Inference with oneDNN and, where this Paddle has it, with its OpenVINO engine; every predictor
    of both engines alternates in one round robin. ``{engine: {strategy: seconds}}``, nan for a
    strategy the engine could not take (a program with an op it cannot convert)."""
    import paddle_rtseg_runtime as deployment
    from paddle_rtseg_runtime import DeployError, PaddleInferencePredictor, openvino_available
    from paddle_rtseg.exporting.static_graph import export
    engines = {"B0-PI": dict(use_mkldnn=True)}
    if openvino_available():
        engines["B0-PI-OpenVINO"] = dict(use_openvino=True)
    predictors = {}
    for strategy in STRATEGIES:
        out = os.path.join(save_dir, "export_{}_{}".format(strategy, size))
        if not os.path.isfile(os.path.join(out, "deploy.yaml")):
            export(config, out, model_path=weights, input_shape=[1, 3, size, size],
                   output_op="none", model_overrides={"token_merging": strategy})
        for engine, kwargs in engines.items():
            try:
                predictors[(engine, strategy)] = PaddleInferencePredictor(out, threads=threads,
                                                                          **kwargs)
            except DeployError as e:
                print("{} {}: not run: {}".format(engine, strategy, " ".join(str(e).split())))
    x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype("float32")
    times = medians(round_robin(predictors, x, rounds, calls=calls))
    onednn = {s: deployment.onednn_resize_is_exact(deployment.model_paths(os.path.join(
        save_dir, "export_{}_{}".format(s, size)))[0]) for s in STRATEGIES}
    print("oneDNN bilinear resize pass on: " + ", ".join(
        "{} {}".format(s, "yes" if on else "NO") for s, on in onednn.items()))
    # an engine that cannot take the unmerged export has no column; a strategy it cannot take is nan
    return {e: {s: times[(e, s)] / 1000.0 if (e, s) in times else float("nan") for s in STRATEGIES}
            for e in engines if (e, "none") in times}


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [s for s in STRATEGIES if s != "none"]
    width = 0.8 / (len(results["speed"]) + 1)
    for k, (variant, med) in enumerate(results["speed"].items()):
        ax1.bar(np.arange(len(names)) + k * width, [med["none"] / med[s] for s in names], width,
                label="MiT-{} (CPU)".format(variant))
    ax1.bar(np.arange(len(names)) + len(results["speed"]) * width,
            [PAPER_GPU_SPEEDUP[s] for s in names], width, label="paper, B5 GPU", color="grey")
    ax1.set_xticks(np.arange(len(names)) + width * len(results["speed"]) / 2, names)
    ax1.set_ylabel("speed-up vs no merging")
    ax1.set_title("{0}x{0}, batch 1".format(results["size"]))
    ax1.legend()
    agree = results["agreement"]
    ax2.bar(np.arange(len(names)) - 0.2, [agree[s]["pixel_acc_vs_none_128"] for s in names], 0.4,
            label="pixel acc. vs unmerged (128)")
    ax2.bar(np.arange(len(names)) + 0.2, [agree[s]["miou_vs_none_128"] for s in names], 0.4,
            label="mIoU vs unmerged (128)")
    ax2.set_xticks(np.arange(len(names)), names)
    ax2.set_ylim(0, 1.05)
    ax2.set_title("B0 trained on synthetic: agreement")
    ax2.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from paddle_rtseg.exporting.static_graph import pir_active
    if args.paddle_inference and pir_active():  # the per-strategy exports in this process, not
        env = dict(os.environ, FLAGS_enable_pir_api="0")  # one re-run exporter each (as quantize)
        from paddle_rtseg_runtime.run_lock import die_with_parent
        return subprocess.call([sys.executable, "-m", "paddle_rtseg.bench_segformer_pp"] + argv,
                               env=env, preexec_fn=die_with_parent)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # before Paddle starts its pools
    import paddle
    import paddle_rtseg
    from paddleseg.cvlibs import SegBuilder
    from paddle_rtseg.models.mit import MixVisionTransformer, _VARIANTS
    from paddle_rtseg.models.segformer_pp import SegFormerPP

    paddle.set_device("cpu")
    paddle.seed(0)
    os.makedirs(args.save_dir, exist_ok=True)
    cfg = paddle_rtseg.load_config(args.config)
    builder = SegBuilder(cfg)
    model = builder.model
    num_classes = cfg.dic["model"]["num_classes"]
    weights = args.weights or os.path.join(args.save_dir, "segformer_b0_synthetic.pdparams")
    if os.path.isfile(weights):
        print("Loading trained B0 weights from", weights)
        paddle_rtseg.load_checkpoint(model, weights)
    else:
        print("Training SegFormer-B0 on the synthetic set for {} iterations".format(args.train_iters))
        train(model, builder.train_dataset, args.train_iters)
        paddle.save(model.state_dict(), weights)
    model.eval()

    print("Agreement with the unmerged model (synthetic val, 128x128 and upsampled to {})".format(
        args.size))
    agree = agreement(model, builder.val_dataset, args.size, num_classes)
    results = dict(size=args.size, threads=args.threads, rounds=args.rounds, calls=args.calls,
                   agreement=agree, speed={})
    for variant in args.variants:
        net = model if variant == "B0" else SegFormerPP(
            num_classes, MixVisionTransformer(**_VARIANTS[variant]), embedding_dim=768)
        net.eval()
        print("Timing MiT-{} at {}x{} ({} rounds of {} call(s), strategies alternating)".format(
            variant, args.size, args.size, args.rounds, args.calls))
        results["speed"][variant] = time_strategies(net, args.size, args.rounds, args.calls)
    if args.paddle_inference:
        print("Timing MiT-B0 in Paddle Inference (oneDNN, OpenVINO) at {0}x{0}".format(args.size))
        results["speed"].update(time_paddle_inference(
            args.config, weights, args.size, args.rounds, args.threads, args.save_dir, args.calls))

    from paddle_rtseg.benchmarks.flops import achieved_gflops, count_macs, sgemm_gflops
    macs = {}
    for s in STRATEGIES:
        model.set_token_merging(s)
        macs[s] = count_macs(model, [1, 3, args.size, args.size])
    model.set_token_merging(None)
    sgemm = sgemm_gflops()
    results.update(b0_macs=macs, sgemm_gflops=sgemm)
    print("MiT-B0 at {0}x{0}: GMACs per strategy (paddle_rtseg.benchmarks.flops.count_macs); achieved "
          "GFLOP/s; paddle.matmul sgemm in this run: {1:.1f} GFLOP/s (MKL: {2}; malloc: {3})".format(
              args.size, sgemm, MKL_DISPATCH, malloc_tuning.current()))
    for s in STRATEGIES:
        print("  {:<11}{:>8.2f} GMACs".format(s, macs[s] / 1e9) + "".join(
            "  {}: {:.1f} GFLOP/s".format(v, achieved_gflops(macs[s], med[s]))
            for v, med in results["speed"].items() if v.startswith("B0")))
    labels = ["MiT-{} s (speed-up)".format(v) for v in results["speed"]]
    widths = [max(26, len(label) + 2) for label in labels]
    header = "{:<11}".format("strategy") + "".join(
        label.rjust(width) for label, width in zip(labels, widths)) + \
        "{:>10}{:>11}{:>11}{:>11}{:>10}".format("paper", "acc@128", "mIoU@128", "acc@" + str(
            args.size), "GT mIoU")
    print(header)
    for s in STRATEGIES:
        row = "{:<11}".format(s)
        for med, width in zip(results["speed"].values(), widths):
            row += ("not run" if np.isnan(med[s]) else "{:.3f} ({:.2f}x)".format(
                med[s], med["none"] / med[s])).rjust(width)
        a = agree[s]
        row += "{:>10}{:>11.4f}{:>11.4f}{:>11.4f}{:>10.4f}".format(
            "{:.2f}x".format(PAPER_GPU_SPEEDUP[s]) if s in PAPER_GPU_SPEEDUP else "1.00x",
            a["pixel_acc_vs_none_128"], a["miou_vs_none_128"], a["pixel_acc_vs_none_big"],
            a["miou_vs_gt_128"])
        print(row)
    with open(os.path.join(args.save_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    png = os.path.join(args.save_dir, "segformer_pp_bench.png")
    plot(results, png)
    print("Wrote", os.path.join(args.save_dir, "results.json"), "and", png)
    return 0


if __name__ == "__main__":
    from paddle_rtseg.cli.errors import run_cli
    raise SystemExit(run_cli(main))
