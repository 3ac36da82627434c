"""Deployment benchmark (not a test): per model and backend, median latency at batch 1, parameters,
GFLOPs, and PaddleSeg's own RTFormer exported the same way as a peer, on the same weights.

    python -m paddle_rtseg.bench_deploy [--models rtformer_slim seaformer_tiny ... (default: one per family)] \
        [--repeats 10] [--threads 2] [--save_dir output/bench_deploy] \
        [--precision fp32 bf16 int8] [--model_path NAME=W.pdparams ...]

Weights: a family's demo-trained weights when present (``make demo`` for RTFormer-Slim in
``output/demo/train``; ``python -m paddle_rtseg.train --config configs/<family>/<name>_synthetic_
128x128_2k.yml --save_dir output/demo/<name> --iters 300`` for the others, see ``TRAINED``), with
that synthetic config's model (5 classes) at the benchmark's input size; random weights with the
published config otherwise (the report says which). Random weights change latency through
denormals and make accuracy columns meaningless.

``--precision`` with bf16 and/or int8 runs the low-precision comparison instead of the backend
table: per family, Paddle Inference (oneDNN and OpenVINO) and ONNX Runtime at each precision (int8 models made by
``python -m paddle_rtseg.quantize``, calibrated on training images), latency relative to fp32 on the
same backend (alternating, medians) and mIoU on the synthetic validation set; it needs trained
weights. A precision the CPU or backend cannot run is a row saying why.

Every predictor of a model (dygraph and each backend; for RTFormer also PaddleSeg's export) is called
in turn within each repeat (round robin), so ratios compare latencies measured under the same machine
load; the table reports medians. Every backend runs with the settings of ``paddle_rtseg_runtime`` (the
runners' too): oneDNN resizes where exact, ONNX Runtime flushing denormals. With random weights
(no trained ones found) the latency depends on them through denormals, which Paddle Inference and
ONNX Runtime flush and Paddle Lite cannot (docs/deployment.md, section 5). Accuracy in the plot is the published mIoU of
each variant, labelled with its dataset; PaddleSeg's point is its fastest backend with correct output. Writes ``results.md`` and
``speed_accuracy.png`` into ``--save_dir`` (``results.md`` is rewritten after each model).
Memory: all three models in one process peaked at ~18 GB (Paddle Inference/oneDNN and Lite keep
their buffers); with less memory, run one model per invocation (``--models segformer_pp_b0``). The
``--precision`` table of SegFormer++-B0 at 1024x1024 was killed for memory on a 23 GB machine
shared with other jobs: ``--size 512 512`` times it smaller.
"""
import argparse
import os
import sys

import numpy as np

from paddle_rtseg import MKL_DISPATCH
from paddle_rtseg.cli import malloc_tuning
import paddle_rtseg_runtime as du
from paddle_rtseg.cli.errors import ConfigError, run_cli
from paddle_rtseg.cli.deploy_all import backend_predictors, dygraph_predictor, format_table
from paddle_rtseg.benchmarks.timing import SETTLE_S, round_robin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: (config, input shape (batch 1), published mIoU, dataset of that mIoU)
TRAINED = {  # name: (synthetic config the demo weights were trained with, training --save_dir)
    "rtformer_slim": ("configs/rtformer/rtformer_slim_synthetic_128x128_2k.yml", "output/demo/train"),
    "seaformer_tiny": ("configs/seaformer/seaformer_tiny_synthetic_128x128_2k.yml",
                       "output/demo/seaformer_tiny"),
    "segformer_pp_b0": ("configs/segformer_pp/segformer_pp_b0_synthetic_128x128_2k.yml",
                        "output/demo/segformer_pp_b0"),
    "mixformer_b1": ("configs/mixformer/mixformer_b1_synthetic_128x128_2k.yml",
                     "output/demo/mixformer_b1"),
}
TRAINED.update({"seaformer_" + v: ("configs/seaformer/seaformer_{}_synthetic_128x128_2k.yml".format(v),
                                   "output/demo/seaformer_" + v) for v in ("small", "base", "large")})
MODELS = {
    "rtformer_slim": ("configs/rtformer/rtformer_slim_cityscapes_1024x512_120k.yml",
                      [1, 3, 512, 1024], 76.31, "Cityscapes (PaddleSeg)"),
    "seaformer_tiny": ("configs/seaformer/seaformer_tiny_ade20k_512x512_160k.yml",
                       [1, 3, 512, 512], 35.0, "ADE20K (authors, batch 16)"),
    "seaformer_small": ("configs/seaformer/seaformer_small_ade20k_512x512_160k.yml",
                        [1, 3, 512, 512], 38.9, "ADE20K (authors' repo)"),
    "seaformer_base": ("configs/seaformer/seaformer_base_ade20k_512x512_160k.yml",
                       [1, 3, 512, 512], 41.2, "ADE20K (authors' repo)"),
    "seaformer_large": ("configs/seaformer/seaformer_large_ade20k_512x512_160k.yml",
                        [1, 3, 512, 512], 43.0, "ADE20K (authors' repo)"),
    "segformer_pp_b0": ("configs/segformer_pp/segformer_pp_b0_cityscapes_1024x1024_160k.yml",
                        [1, 3, 1024, 1024], 76.54, "Cityscapes (SegFormer-B0, mmseg)"),
    "mixformer_b1": ("configs/mixformer/mixformer_b1_cityscapes_1024x512_160k.yml",
                     [1, 3, 512, 1024], None, "Cityscapes (no published figure for this head)"),
}


DEFAULT_MODELS = ("rtformer_slim", "seaformer_tiny", "segformer_pp_b0", "mixformer_b1")


def find_weights(train_dir):
    """``best_model/model.pdparams`` of a training ``--save_dir``, else its latest ``iter_N``."""
    best = os.path.join(train_dir, "best_model", "model.pdparams")
    if os.path.isfile(best):
        return best
    iters = [d for d in (os.listdir(train_dir) if os.path.isdir(train_dir) else [])
             if d.startswith("iter_") and d[5:].isdigit()
             and os.path.isfile(os.path.join(train_dir, d, "model.pdparams"))]
    if not iters:
        return None
    return os.path.join(train_dir, max(iters, key=lambda d: int(d[5:])), "model.pdparams")


def trained(name, model_paths=None):
    """``(config, weights)`` of the family's trained model, or ``(None, None)``."""
    if name not in TRAINED:
        return None, None
    config, train_dir = TRAINED[name]
    weights = (model_paths or {}).get(name) or find_weights(os.path.join(ROOT, train_dir))
    return (os.path.join(ROOT, config), weights) if weights else (None, None)


def _build(config, opts=None):
    from paddleseg.cvlibs import SegBuilder
    from paddle_rtseg.config import load_config
    from paddle_rtseg.exporting.static_graph import drop_pretrained
    model = SegBuilder(drop_pretrained(load_config(config, opts=opts))).model
    model.eval()
    return model


def _gmacs(model, shape):
    from paddle_rtseg.benchmarks.flops import count_macs
    return count_macs(model, shape) / 1e9


def _params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters()) / 1e6


def bench_model(name, save_dir, repeats, threads, log=print, model_paths=None, settle_s=SETTLE_S):
    import paddle
    from paddle_rtseg import load_checkpoint
    from paddle_rtseg.exporting.static_graph import export

    config, shape, miou, dataset = MODELS[name]
    config = os.path.join(ROOT, config)
    work = os.path.join(save_dir, name)
    os.makedirs(work, exist_ok=True)
    paddle.seed(0)
    trained_config, weights = trained(name, model_paths)
    if weights:
        config = trained_config
        model = _build(config)
        load_checkpoint(model, weights)
        note = "weights: trained {} ({})".format(os.path.relpath(weights, ROOT),
                                                 os.path.relpath(config, ROOT))
    else:
        model = _build(config)
        weights = os.path.join(work, "weights.pdparams")
        paddle.save(model.state_dict(), weights)
        note = "weights: RANDOM (no trained weights found; see TRAINED in bench_deploy.py)"
    log("{}: {}".format(name, note))
    info = dict(params=_params(model), gmacs=_gmacs(model, shape), miou=miou, dataset=dataset)

    ours_dir = os.path.join(work, "ours")
    export(config, ours_dir, weights, output_op="none", fmt="legacy")
    artifacts = {"onnx": du.convert_onnx(ours_dir, os.path.join(ours_dir, "model.onnx")),
                 "lite_x86": du.convert_lite(ours_dir, os.path.join(ours_dir, "model_x86"), "x86")}
    du.convert_lite(ours_dir, os.path.join(ours_dir, "model_arm"), "arm")
    predictors = {"dygraph": dygraph_predictor(model)}
    predictors.update({"ours " + k: v for k, v in
                       backend_predictors(ours_dir, artifacts, threads).items()})

    notes = [note]
    if name.startswith("rtformer"):  # PaddleSeg's RTFormer, same weights, static shape required
        static_dir = os.path.join(work, "ours_static")  # ours exported like PaddleSeg's must be
        export(config, static_dir, weights, input_shape=shape, output_op="none", fmt="legacy")
        predictors.update({
            "ours-static paddle-inference oneDNN": du.PaddleInferencePredictor(static_dir,
                                                                                threads=threads),
            "ours-static onnxruntime": du.OnnxPredictor(
                du.convert_onnx(static_dir, os.path.join(static_dir, "model.onnx")), threads)})
        if du.openvino_available():
            predictors["ours-static paddle-inference OpenVINO"] = du.PaddleInferencePredictor(
                static_dir, use_openvino=True, threads=threads)
        ps_dir = os.path.join(work, "paddleseg")
        try:
            export(config, ps_dir, weights, input_shape=shape, output_op="none", fmt="legacy",
                   opts=["model.type=RTFormer"])
            ps = {"paddle-inference oneDNN": du.PaddleInferencePredictor(ps_dir, threads=threads),
                  "paddle-inference no oneDNN": du.PaddleInferencePredictor(
                      ps_dir, use_mkldnn=False, threads=threads)}
            if du.openvino_available():
                try:
                    ps["paddle-inference OpenVINO"] = du.PaddleInferencePredictor(
                        ps_dir, use_openvino=True, threads=threads)
                except du.DeployError as e:
                    notes.append("PaddleSeg RTFormer on OpenVINO failed: " + " ".join(
                        str(e).split())[:200])
            try:
                ps["onnxruntime"] = du.OnnxPredictor(
                    du.convert_onnx(ps_dir, os.path.join(ps_dir, "model.onnx")), threads)
            except du.DeployError as e:
                notes.append("PaddleSeg RTFormer -> ONNX failed: " + str(e).splitlines()[0])
            try:
                ps["paddle-lite x86 .nb"] = du.LitePredictor(
                    du.convert_lite(ps_dir, os.path.join(ps_dir, "model_x86"), "x86"))
            except du.DeployError as e:
                notes.append("PaddleSeg RTFormer -> Lite x86 failed: " + str(e).splitlines()[0])
            try:
                du.convert_lite(ps_dir, os.path.join(ps_dir, "model_arm"), "arm")
                notes.append("PaddleSeg RTFormer -> Lite ARM .nb: converted")
            except du.DeployError as e:
                notes.append("PaddleSeg RTFormer -> Lite ARM failed: " + str(e).splitlines()[0])
            predictors.update({"paddleseg " + k: v for k, v in ps.items()})
        except Exception as e:  # report, keep benchmarking our rows
            notes.append("PaddleSeg RTFormer export failed: {}".format(str(e)[:300]))

    x = np.random.RandomState(0).randn(*shape).astype("float32")
    ref = predictors["dygraph"](x)
    errors = {k: float(np.abs(fn(x) - ref).max() / np.abs(ref).max())
              for k, fn in predictors.items()}
    log("{}: timing {} predictors x {} repeats at {}".format(name, len(predictors), repeats,
                                                              "x".join(map(str, shape))))
    times = round_robin(predictors, x, repeats, settle_s=settle_s)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    return dict(info, shape=shape, medians=medians, errors=errors, notes=notes)


def _synthetic_val(root):
    """``(image, label)`` paths of the synthetic validation set (generated like the demo's)."""
    from paddle_rtseg.datasets import generate_synthetic
    root = generate_synthetic(root)
    with open(os.path.join(root, "val.txt")) as f:
        return [tuple(os.path.join(root, p) for p in line.split()) for line in f if line.strip()]


def bench_precision(name, save_dir, repeats, threads, precisions, log=print, model_paths=None,
                    calib_images=16, algo=None, size=None, settle_s=SETTLE_S, calls=1):
    """Paddle Inference (oneDNN, OpenVINO) and ONNX Runtime at each of ``precisions`` on the family's trained
    model: median latency at the benchmark size (alternating), mIoU on the synthetic val set."""
    import subprocess

    import cv2
    from paddle_rtseg.quantization.ptq import DEFAULT_ALGO, miou

    config, weights = trained(name, model_paths)
    if not weights:
        raise RuntimeError("no trained weights for {} (looked in {}): train it first, or pass "
                           "--model_path {}=W.pdparams".format(name, TRAINED[name][1], name))
    shape = MODELS[name][1][:2] + list(size) if size else MODELS[name][1]
    work = os.path.join(save_dir, name, "precision")
    data = os.path.join(save_dir, "data", "synthetic")
    pairs = _synthetic_val(data)
    opts = ["train_dataset.dataset_root=" + data, "val_dataset.dataset_root=" + data]
    log("{}: int8 models (paddle_rtseg.quantization.ptq, {} calibration images) from {}".format(
        name, calib_images, os.path.relpath(weights, ROOT)))
    proc = subprocess.run([sys.executable, "-m", "paddle_rtseg.quantize", "--config", config,
                           "--model_path", weights, "--save_dir", work, "--evaluate", "false",
                           "--calib_batches", str(calib_images), "--algo", algo or DEFAULT_ALGO,
                           "--opts"] + opts, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode:
        raise RuntimeError("quantize failed:\n" + proc.stdout[-2000:])
    fp32_dir, int8_dir = os.path.join(work, "fp32"), os.path.join(work, "ptq_int8")
    makers = {}
    for precision in precisions:
        model_dir = int8_dir if precision == "int8" else fp32_dir
        makers[("paddle-inference oneDNN", precision)] = lambda d=model_dir, p=precision: \
            du.PaddleInferencePredictor(d, threads=threads, precision=p)
        makers[("paddle-inference OpenVINO", precision)] = lambda d=model_dir, p=precision: \
            du.PaddleInferencePredictor(d, threads=threads, precision=p, use_openvino=True)
        makers[("onnxruntime", precision)] = lambda d=model_dir, p=precision: du.OnnxPredictor(
            du.default_onnx_file(d, p), threads, precision=p)
    predictors, skipped = {}, {}
    for key, make in makers.items():
        try:
            predictors[key] = make()
        except du.DeployError as e:
            skipped[key] = " ".join(str(e).split())
    transforms = du.read_deploy_yaml(fp32_dir)["transforms"]
    image = cv2.resize(du.read_image(pairs[0][0]), (shape[3], shape[2]))
    x = du.preprocess(image, transforms)
    scores = {}
    for key, predictor in list(predictors.items()):
        try:  # a backend failing at run time is a row saying so, not a lost family
            scores[key] = miou(predictor, pairs, transforms, 5)
            predictor(x)
        except Exception as e:
            skipped[key] = "failed at run time: " + " ".join(str(e).split())
            del predictors[key]
    log("{}: timing {} predictors x {} repeats at {}".format(name, len(predictors), repeats,
                                                              "x".join(map(str, shape))))
    times = round_robin(predictors, x, repeats, settle_s=settle_s, calls=calls)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    ref = {k[0]: predictors[k](x).argmax(1) for k in predictors if k[1] == "fp32"}
    agree = {k: float((p(x).argmax(1) == ref[k[0]]).mean()) if k[0] in ref else float("nan")
             for k, p in predictors.items()}
    return dict(shape=shape, weights=os.path.relpath(weights, ROOT), medians=medians,
                scores=scores, agree=agree, skipped=skipped, keys=list(makers),
                cpu=du.cpu_features.summary(), images=len(pairs), calls=calls)


def report_precision(results):
    rows, lines = [], []
    for name, r in results.items():
        med, scores = r["medians"], r["scores"]
        for key in r["keys"]:
            backend, precision = key
            base = (backend, "fp32")
            if key in r["skipped"]:
                rows.append([name, backend, precision, "-", "-", "-", "-", "-",
                             "not run: " + r["skipped"][key][:160]])
                continue
            ratio = med[key] / med[base] if base in med else float("nan")
            change = 100 * (scores[key] - scores[base]) if base in scores else float("nan")
            rows.append([name, backend, precision, "{:.1f}".format(med[key]),
                         "{:.2f}x".format(ratio), "{:.2f}".format(100 * scores[key]),
                         "{:+.2f}".format(change), "{:.4f}".format(r["agree"][key]), ""])
        timing = ("latency (single calls)" if r.get("calls", 1) == 1 else
                  "steady latency ({} back-to-back calls a turn, all but the first)".format(r["calls"]))
        lines.append("{}: {} at {}, weights {}, mIoU on {} synthetic val images; {}".format(
            name, timing, "x".join(map(str, r["shape"])), r["weights"], r["images"], r["cpu"]))
    table = format_table(["model", "backend", "precision", "median ms", "latency vs fp32",
                          "mIoU (%)", "mIoU change (points)", "argmax = fp32 (bench input)",
                          "note"], rows)
    return table + "\n\n" + "\n".join(lines) + ("\nGoal: <= 0.5x the fp32 latency with <= 0.5 "
                                                 "mIoU points lost.")


def report(results):
    rows, lines = [], []
    for name, r in results.items():
        med = r["medians"]
        for backend, ms in med.items():
            peer = None
            if backend.startswith(("ours ", "ours-static ")):
                peer = med.get("paddleseg " + backend.split(" ", 1)[1])
            rows.append([name, "x".join(map(str, r["shape"])), backend, "{:.1f}".format(ms),
                         "{:.2f}x".format(med["dygraph"] / ms),
                         "{:.2f}".format(ms / peer) if peer else "",
                         "{:.1e}".format(r["errors"][backend]),
                         "{:.2f}".format(r["params"]), "{:.2f}".format(r["gmacs"]),
                         "{:.1f}".format(2 * r["gmacs"] / (ms / 1000))])
        ours = {k: v for k, v in med.items() if k.startswith("ours ")}
        best = min(ours, key=ours.get)
        lines.append("{}: best backend {} {:.1f} ms = {:.2f}x faster than dygraph ({:.1f} ms); "
                     "it achieves {:.1f} GFLOP/s = {:.2f}x paddle.matmul sgemm in this run"
                     .format(name, best, ours[best], med["dygraph"] / ours[best], med["dygraph"],
                             2 * r["gmacs"] / (ours[best] / 1000),
                             2 * r["gmacs"] / (ours[best] / 1000) / r["sgemm_gflops"]))
        for backend in med:
            if not backend.startswith(("ours ", "ours-static ")):
                continue
            peer = med.get("paddleseg " + backend.split(" ", 1)[1])
            if peer:
                lines.append("{}: {}/PaddleSeg on {}: {:.2f} (goal <= 0.85)".format(
                    name, *backend.split(" ", 1), med[backend] / peer))
        lines += ["{}: {}".format(name, n) for n in r["notes"]]
    table = format_table(["model", "input", "backend", "median ms", "speed-up vs dygraph",
                          "ours/PaddleSeg", "rel. err vs dygraph", "params (M)",
                          "GMACs (flops.count_macs)", "achieved GFLOP/s"], rows)
    sgemm = {r["sgemm_gflops"] for r in results.values()}
    lines.append("paddle.matmul sgemm (float32, 1024^3, same threads) in this run: {} GFLOP/s; "
                 "dygraph's MKL: {}; dygraph's malloc: {}".format(
                     ", ".join("{:.1f}".format(v) for v in sorted(sgemm)), MKL_DISPATCH,
                     malloc_tuning.current()))
    return table + "\n\n" + "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        ours = {k: v for k, v in r["medians"].items() if not k.startswith("paddleseg")}
        best = min((v, k) for k, v in ours.items() if k != "dygraph")
        miou = r["miou"] if r["miou"] is not None else float("nan")
        ax.scatter([r["medians"]["dygraph"]], [miou], marker="x", color="gray")
        ax.scatter([best[0]], [miou], marker="o")
        ax.annotate("{} ({})\n{}".format(name, r["dataset"], best[1]), (best[0], miou),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
        peer = {k: v for k, v in r["medians"].items()  # PaddleSeg's backends that are correct
                if k.startswith("paddleseg") and r["errors"][k] < 1e-3}
        if peer:
            v, k = min((v, k) for k, v in peer.items())
            ax.scatter([v], [miou], marker="s", color="red")
            ax.annotate(k, (v, miou), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)  # room for the labels
    ax.set_xlabel("median latency, batch 1, CPU (ms, log scale)")
    ax.set_ylabel("published mIoU (%)")
    ax.set_title("Speed/accuracy: o best backend (ours), s PaddleSeg export, x dygraph",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS),
                        help="default: one model per family")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save_dir", default="output/bench_deploy")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"],
                        help="with bf16/int8: the low-precision table (fp32 is always included)")
    parser.add_argument("--model_path", nargs="+", default=[], metavar="NAME=W.pdparams",
                        help="trained weights per family (default: the demo-trained ones, TRAINED)")
    parser.add_argument("--calib_images", type=int, default=16)
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="--precision table: time at H x W instead of the model's size")
    parser.add_argument("--algo", default=None, help="PTQ calibration (default: quantize's)")
    parser.add_argument("--settle_s", type=float, default=SETTLE_S,
                        help="pause before each timed call, so that no runtime runs while "
                             "another one's worker threads still spin (0: none)")
    parser.add_argument("--calls", type=int, default=1,
                        help="--precision table: back-to-back calls per turn, timing all but the "
                             "first (the steady latency of a frame loop; 1: single calls)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        raise ConfigError("--calls must be at least 1, got {}".format(args.calls))
    os.makedirs(args.save_dir, exist_ok=True)
    model_paths = dict(item.split("=", 1) for item in args.model_path if "=" in item)
    if len(model_paths) != len(args.model_path) or set(model_paths) - set(MODELS):
        raise ConfigError("--model_path takes NAME=W.pdparams with NAME in {}"
                          .format(", ".join(MODELS)))
    results = {}
    sgemm = None
    if set(args.precision) != {"fp32"}:
        precisions = ["fp32"] + [p for p in ("bf16", "int8") if p in args.precision]
        print(du.cpu_features.summary())
        for name in args.models:
            try:
                results[name] = bench_precision(name, args.save_dir, args.repeats, args.threads,
                                                precisions, model_paths=model_paths,
                                                calib_images=args.calib_images, algo=args.algo,
                                                settle_s=args.settle_s, calls=args.calls,
                                                size=args.size)
            except Exception as e:  # one family failing must not hide the others
                print("{}: FAILED: {}".format(name, str(e)[:1500]))
                continue
            with open(os.path.join(args.save_dir, "precision.md"), "w") as f:
                f.write(report_precision(results) + "\n")
        print(report_precision(results))
        return 0
    for name in args.models:
        if not os.path.isfile(os.path.join(ROOT, MODELS[name][0])):
            print("skipping {}: {} does not exist yet".format(name, MODELS[name][0]))
            continue
        try:
            results[name] = bench_model(name, args.save_dir, args.repeats, args.threads,
                                        model_paths=model_paths, settle_s=args.settle_s)
            if sgemm is None:  # the roofline, measured once in this process
                from paddle_rtseg.benchmarks.flops import sgemm_gflops
                sgemm = sgemm_gflops()
            results[name]["sgemm_gflops"] = sgemm
        except Exception as e:  # one family failing must not hide the others
            print("{}: FAILED: {}".format(name, str(e)[:500]))
            continue
        with open(os.path.join(args.save_dir, "results.md"), "w") as f:  # kept if a later
            f.write(report(results) + "\n")                                # model is killed
    text = report(results)
    print(text)
    plot(results, os.path.join(args.save_dir, "speed_accuracy.png"))
    print("wrote {}".format(os.path.join(args.save_dir, "speed_accuracy.png")))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
