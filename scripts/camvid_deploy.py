"""Every deployment accuracy claim again on real data: CamVid-trained checkpoints on the real val images
through every backend and precision this machine can run, and SegFormer++'s merging presets.

    PADDLE_LITE_ARM_DIR=../shared/paddle-lite-armv8 python scripts/camvid_deploy.py \
        --model rtformer=output/camvid/rtformer_seed0/iter_2000/model.pdparams \
                segformer_pp=W.pdparams [seaformer=W mixformer=W] \
        [--camvid_dir ../shared/camvid] [--val_every 4] [--arm_every 10] [--rounds 5] \
        [--save_dir output/camvid_deploy] [--opts key=value ...]

Per family (its CPU CamVid config, ``scripts/camvid_table.py``'s FAMILY_CONFIGS; the checkpoints
come from that script, ``scripts/palquant_camvid_table.py`` or ``python -m paddle_rtseg.train``;
for ``palquant=W``, PalQuant W2A2 G=2, ``quantize`` writes the exact int8 programs instead of a
calibrated PTQ, :mod:`paddle_rtseg.quantization.palquant_int8`):

1. ``python -m paddle_rtseg.quantize --evaluate false``: the fp32 export (dynamic shapes, logits) and
   the int8 models, calibrated on CamVid *train* images: Paddle Inference oneDNN (PTQ), its OpenVINO
   engine (QDQ), ONNX Runtime (QDQ), Paddle Lite ARM ``.nb`` fp32 / PTQ int8 / weight-only int8;
   with 7-bit weights (``--reduce_range true``) on a CPU without VNNI/AMX, where ONNX Runtime's and
   OpenVINO's int8 kernels need them.
2. On every ``--val_every``-th CamVid val image (480x360, void ignored): dygraph fp32 is the
   reference; every deployed backend and precision is scored by its val mIoU, the change from
   dygraph's, and the share of pixels whose class equals dygraph's. bf16 and int8 paths run where
   this CPU has the kernels at all (``paddle_rtseg_runtime.cpu_features``), slow or not
   (``allow_slow``: accuracy is what is measured); others are listed as not run with the reason.
   The ARM ``.nb`` files run on Paddle Lite's real ARM kernels under qemu
   (``paddle_rtseg_runtime.lite_arm``), on every ``--arm_every``-th val image (emulation is slow).
3. Latency of the host backends at 1x3x360x480, one thread, all candidates alternating round after
   round (``paddle_rtseg.benchmarks.timing.round_robin``): median ms, comparable within one run.
4. SegFormer++: each merging preset (hq, fast, 2x2, downsample) switched on the unmodified
   checkpoint, in dygraph and in Paddle Inference (one fixed-size export per preset): mIoU change and
   speed-up against no merging, next to the authors' MiT-B5 Cityscapes numbers.

Writes ``<save_dir>/camvid_deploy.md`` and ``.json``; a finished family's results are reused on a
rerun with the same arguments.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # dygraph timing on one thread, as the predictors

from paddle_rtseg_runtime.files import write_bytes_atomic  # noqa: E402
from paddle_rtseg_runtime.metrics import Scores  # noqa: E402
from camvid_table import FAMILY_CONFIGS, MODEL_NAMES, val_list  # noqa: E402

STRATEGIES = ("none", "hq", "fast", "2x2", "downsample")
# SegFormer++ paper (MIPR 2024), MiT-B5 on Cityscapes, merging switched on without retraining
PAPER_MERGING_DELTA = {"hq": -0.08, "fast": -0.35, "2x2": -0.43, "downsample": -5.08}
SIZE = (360, 480)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", required=True, metavar="FAMILY=WEIGHTS",
                   help="trained CamVid checkpoints, e.g. rtformer=output/camvid/.../model.pdparams "
                        "(families: {})".format(", ".join(FAMILY_CONFIGS)))
    p.add_argument("--camvid_dir", default=os.environ.get("RTSEG_CAMVID_DIR") or
                   os.path.join(ROOT, "..", "shared", "camvid"))
    p.add_argument("--val_every", type=int, default=4, help="score every N-th val image")
    p.add_argument("--arm_every", type=int, default=10,
                   help="run the ARM .nb files on every N-th val image (qemu is slow)")
    p.add_argument("--rounds", type=int, default=5, help="latency rounds")
    p.add_argument("--calib_batches", type=int, default=16)
    p.add_argument("--save_dir", default=os.path.join(ROOT, "output", "camvid_deploy"))
    p.add_argument("--opts", nargs="+", action="extend", default=[],
                   help="config overrides for every family, key=value (e.g. model widths)")
    args = p.parse_args(argv)
    models = {}
    for item in args.model:
        family, _, weights = item.partition("=")
        if family not in FAMILY_CONFIGS or not weights:
            p.error("--model takes FAMILY=WEIGHTS with FAMILY one of {}; got {!r}".format(
                ", ".join(FAMILY_CONFIGS), item))
        if not os.path.isfile(weights):
            p.error("--model {}: {} is not a file (a .pdparams from python -m paddle_rtseg.train "
                    "or scripts/camvid_table.py)".format(family, weights))
        models[family] = os.path.abspath(weights)
    args.models = models
    if not os.path.isfile(os.path.join(args.camvid_dir, "val.txt")):
        p.error("--camvid_dir {} has no val.txt: point it at CamVid (docs/camvid.md)".format(
            args.camvid_dir))
    if min(args.val_every, args.arm_every, args.rounds) < 1:
        p.error("--val_every, --arm_every and --rounds must be at least 1")
    return args


def camvid_opts(camvid_dir, val_path):
    return ["train_dataset.dataset_root=" + camvid_dir,
            "train_dataset.train_path=" + os.path.join(camvid_dir, "train.txt"),
            "val_dataset.dataset_root=" + camvid_dir, "val_dataset.val_path=" + val_path]


def classes(logits, shape):
    import paddle_rtseg_runtime as du
    return du.to_label_map(logits, "none", shape).astype(np.int64)


def score(predict, inputs, labels, reference, num_classes, ignore, keep=None):
    """Scores of ``predict`` on the images; its class maps appended to ``keep`` if given."""
    s = Scores(num_classes, ignore)
    for i, (x, label) in enumerate(zip(inputs, labels)):
        pred = classes(predict(x), label.shape)
        s.add(pred, label, None if reference is None else reference[i])
        if keep is not None:
            keep.append(pred)
    return s


def same_engine_fp32(name):
    """The fp32 row of the engine of a bf16/int8 row (``... int8`` -> ``... fp32``), or None."""
    if name.startswith("Paddle Lite ARM") and name != ARM_NBS[0][0]:
        return ARM_NBS[0][0]
    for low in (" int8", " bf16"):
        if low in name:
            return name.split(low)[0] + " fp32"
    return None


def agreement_with_engine_fp32(rows, preds):
    """For each bf16/int8 row: the share of pixels whose class equals that engine's fp32 export
    (the quantization's own effect, without the float differences between dygraph and the
    engine; for PalQuant's exact int8 it is the exactness check on real images)."""
    for row in rows:
        base = same_engine_fp32(row["backend"])
        if base in preds and row["backend"] in preds:
            row["agree_engine_fp32"] = float(np.mean([
                (a == b).mean() for a, b in zip(preds[row["backend"]], preds[base])]))


ARM_NBS = (("Paddle Lite ARM fp32", "fp32", "fp32", None),
           ("Paddle Lite ARM int8 (PTQ)", "ptq", "ptq_int8", None),
           ("Paddle Lite ARM weight-only int8", "wint8", "fp32", "QUANT_INT8"))


def run_quantize(config, weights, out, opts, calib_batches):
    """``quantize``'s models in ``out``, then the ARM ``.nb`` of fp32, PTQ int8 and weight-only int8
    (``quantize --evaluate false`` stops before its Lite step). An earlier run's outputs are kept,
    unless they lack the ARM program a model that keeps ops float on ARM needs (written before
    quantize made one) or a ``.nb`` is older than the program it comes from."""
    import paddle_rtseg
    import paddle_rtseg_runtime as du
    from paddle_rtseg.quantization.ptq import LITE_ARM_PTQ, lite_arm_float_ops, lite_arm_ptq_dir
    keeps_float = lite_arm_float_ops(paddle_rtseg.load_config(config, opts=opts).dic["model"])
    if not os.path.isfile(os.path.join(out, "ptq_int8", "deploy.yaml")) or \
            (keeps_float and not os.path.isfile(os.path.join(out, LITE_ARM_PTQ, "deploy.yaml"))):
        _quantize(config, weights, out, opts, calib_batches)
    for _, tag, folder, quant in ARM_NBS:
        nb = os.path.join(out, "lite_{}_arm".format(tag))
        source = lite_arm_ptq_dir(out) if folder == "ptq_int8" else os.path.join(out, folder)
        if not os.path.isfile(nb + ".nb") or \
                os.path.getmtime(nb + ".nb") < os.path.getmtime(os.path.join(source, "model.pdmodel")):
            du.convert_lite(source, nb, "arm", quant)


def _quantize(config, weights, out, opts, calib_batches):
    from paddle_rtseg_runtime import cpu_features
    # without VNNI/AMX, ONNX Runtime's and OpenVINO's int8 kernels need 7-bit weights (the runners
    # refuse 8-bit ones there): quantize as a user of this CPU must
    reduce_range = cpu_features.needs_7bit_weights("int8", "onnxruntime")
    command = [sys.executable, "-m", "paddle_rtseg.quantize", "--config", config, "--model_path",
               weights, "--save_dir", out, "--calib_batches", str(calib_batches), "--evaluate",
               "false", "--threads", "1", "--reduce_range", "true" if reduce_range else "false",
               "--opts"] + opts
    print("  " + " ".join(command[1:]), flush=True)
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    with open(out + ".log", "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit("error: python -m paddle_rtseg.quantize failed (exit {}); its log: {}.log".format(
            proc.returncode, out))


def host_predictors(q):
    """``{name: (predictor or None, reason)}`` for every host backend and precision."""
    import paddle_rtseg_runtime as du
    from paddle_rtseg_runtime import cpu_features
    fp32, int8 = os.path.join(q, "fp32"), os.path.join(q, "ptq_int8")
    out = {}

    def add(name, precision, engine, make):
        ok, reason = cpu_features.kernels(precision, engine) if precision != "fp32" else (True, "")
        if not ok:
            out[name] = (None, reason)
            return
        try:
            out[name] = (make(), reason)
        except du.DeployError as e:
            out[name] = (None, " ".join(str(e).split())[:300])

    pi = du.PaddleInferencePredictor
    add("Paddle Inference oneDNN fp32", "fp32", "onednn",
        lambda: pi(fp32, threads=1, use_mkldnn=True))
    add("Paddle Inference native fp32", "fp32", "onednn",
        lambda: pi(fp32, threads=1, use_mkldnn=False))
    if du.openvino_available():
        add("Paddle Inference OpenVINO fp32", "fp32", "openvino",
            lambda: pi(fp32, threads=1, use_openvino=True))
    add("ONNX Runtime fp32", "fp32", "onnxruntime",
        lambda: du.OnnxPredictor(du.default_onnx_file(fp32, "fp32"), 1))
    nb = du.convert_lite(fp32, os.path.join(q, "lite_fp32_x86"), target="x86")
    add("Paddle Lite x86 fp32", "fp32", "lite", lambda: du.LitePredictor(nb))
    add("Paddle Inference oneDNN bf16", "bf16", "onednn",
        lambda: pi(fp32, threads=1, precision="bf16", allow_slow=True))
    add("Paddle Inference oneDNN int8", "int8", "onednn",
        lambda: pi(int8, threads=1, precision="int8", allow_slow=True))
    if du.openvino_available():
        add("Paddle Inference OpenVINO bf16", "bf16", "openvino",
            lambda: pi(fp32, threads=1, precision="bf16", use_openvino=True, allow_slow=True))
        add("Paddle Inference OpenVINO int8", "int8", "openvino",
            lambda: pi(int8, threads=1, precision="int8", use_openvino=True, allow_slow=True))
    add("ONNX Runtime int8", "int8", "onnxruntime",
        lambda: du.OnnxPredictor(du.default_onnx_file(int8, "int8"), 1, precision="int8",
                                 allow_slow=True))
    return out


def evaluate_family(family, weights, args, val_path, pairs):
    import paddle
    import paddle_rtseg
    import paddle_rtseg_runtime as du
    from paddle_rtseg.benchmarks.timing import medians, round_robin
    from paddle_rtseg.datasets.checked_io import read_label
    from paddle_rtseg_runtime import lite_arm

    config = os.path.join(ROOT, FAMILY_CONFIGS[family])
    opts = camvid_opts(args.camvid_dir, val_path) + list(args.opts)
    out = os.path.abspath(os.path.join(args.save_dir, family))
    os.makedirs(out, exist_ok=True)
    q = os.path.join(out, "quantize")
    start = time.time()
    run_quantize(config, weights, q, opts, args.calib_batches)
    cfg = paddle_rtseg.load_config(config, opts=opts)
    num_classes = cfg.dic["model"]["num_classes"]
    ignore = cfg.dic["val_dataset"].get("ignore_index", 255)
    transforms = du.read_deploy_yaml(os.path.join(q, "fp32"))["transforms"]
    inputs = [du.preprocess(du.read_image(image), transforms) for image, _ in pairs]
    labels = [read_label(label) for _, label in pairs]

    from paddleseg.cvlibs import SegBuilder
    model = SegBuilder(cfg).model
    paddle_rtseg.load_checkpoint(model, weights)
    model.eval()

    def dygraph(x):
        with paddle.no_grad():
            return model(paddle.to_tensor(x))[0].numpy()

    ref, reference = Scores(num_classes, ignore), []  # dygraph's classes: the reference
    for x, label in zip(inputs, labels):
        reference.append(classes(dygraph(x), label.shape))
        ref.add(reference[-1], label)
    rows = [dict(backend="dygraph fp32", miou=ref.miou(), delta=0.0, agree=1.0,
                 images=len(inputs))]
    print("  dygraph fp32: mIoU {:.2f}".format(100 * ref.miou()), flush=True)
    timed, preds = {"dygraph fp32": dygraph}, {}
    for name, (predictor, reason) in host_predictors(q).items():
        if predictor is None:
            rows.append(dict(backend=name, not_run=reason))
            print("  {}: not run ({})".format(name, reason), flush=True)
            continue
        preds[name] = []
        s = score(predictor, inputs, labels, reference, num_classes, ignore, keep=preds[name])
        rows.append(dict(backend=name, miou=s.miou(), delta=100 * (s.miou() - ref.miou()),
                         agree=float(np.mean(s.agree)), images=len(inputs),
                         note=reason or None))
        print("  {}: mIoU {:.2f} ({:+.2f}), agreement {:.2%}".format(
            name, 100 * s.miou(), rows[-1]["delta"], rows[-1]["agree"]), flush=True)
        if "Lite x86" not in name:  # Lite's Python API has no thread setting
            timed[name] = predictor
    x = inputs[0]
    latency = medians(round_robin(timed, x, args.rounds))
    for row in rows:
        if row["backend"] in latency:
            row["latency_ms"] = latency[row["backend"]]

    reason = lite_arm.unavailable_reason()
    arm_idx = list(range(0, len(inputs), args.arm_every))
    if reason:
        rows.append(dict(backend="Paddle Lite ARM kernels", not_run=reason))
    else:
        tools = lite_arm.build_tools()
        arm_ref = score(dygraph, [inputs[i] for i in arm_idx], [labels[i] for i in arm_idx], None,
                        num_classes, ignore)
        for name, tag, _, _ in ARM_NBS:
            if family == "palquant":  # quantize's exact int8 program, not a calibrated PTQ
                name = name.replace("(PTQ)", "(exact)")
            t0 = time.time()
            try:  # a crash of Lite's kernels is a result of the table, not the end of the run
                outputs = lite_arm.run_raw(os.path.join(q, "lite_{}_arm.nb".format(tag)),
                                           [inputs[i] for i in arm_idx], tools)
            except du.DeployError as e:
                first = " ".join(str(e).split())
                rows.append(dict(backend=name, not_run="failed on the ARM kernels: " + (
                    "segmentation fault (rc -11)" if "rc -11" in first else first[:200])))
                print("  {}: {}".format(name, rows[-1]["not_run"]), flush=True)
                continue
            s, preds[name] = Scores(num_classes, ignore), []
            for i, o in zip(arm_idx, outputs):
                preds[name].append(classes(o, labels[i].shape))
                s.add(preds[name][-1], labels[i], reference[i])
            rows.append(dict(backend=name, miou=s.miou(), delta=100 * (s.miou() - arm_ref.miou()),
                             agree=float(np.mean(s.agree)), images=len(arm_idx),
                             reference_miou=arm_ref.miou()))
            print("  {}: mIoU {:.2f} ({:+.2f} vs dygraph's {:.2f} on the same {} images), "
                  "agreement {:.2%} ({:.0f} s under qemu)".format(
                      name, 100 * s.miou(), rows[-1]["delta"], 100 * arm_ref.miou(), len(arm_idx),
                      rows[-1]["agree"], time.time() - t0), flush=True)
    agreement_with_engine_fp32(rows, preds)
    result = dict(family=family, name=MODEL_NAMES[family], weights=os.path.relpath(weights, ROOT),
                  opts=list(args.opts),
                  val_images=len(inputs), arm_images=len(arm_idx), rows=rows)
    if family == "segformer_pp":
        result["merging"] = merging(model, config, weights, opts, inputs, labels, num_classes,
                                    ignore, out, args)
    result["seconds"] = time.time() - start
    return result


def merging(model, config, weights, opts, inputs, labels, num_classes, ignore, out, args,
            size=SIZE):
    """Each preset on the unmodified checkpoint, dygraph and Paddle Inference (exported at 1 x 3 x
    ``size``; an export already in ``out/merging_<preset>`` is reused): mIoU and latency."""
    import paddle
    import paddle_rtseg_runtime as du
    from paddle_rtseg.benchmarks.timing import medians, round_robin
    from paddle_rtseg.exporting.static_graph import export

    def dygraph(strategy):
        def run(x):
            model.set_token_merging(strategy)
            with paddle.no_grad():
                return model(paddle.to_tensor(x))[0].numpy()
        return run

    candidates, mious = {}, {}
    for strategy in STRATEGIES:
        fn = dygraph(strategy)
        mious["dygraph " + strategy] = score(fn, inputs, labels, None, num_classes, ignore).miou()
        candidates["dygraph " + strategy] = fn
        export_dir = os.path.join(out, "merging_" + strategy)
        if not os.path.isfile(os.path.join(export_dir, "deploy.yaml")):
            export(config, export_dir, model_path=weights, input_shape=[1, 3] + list(size),
                   output_op="none", opts=opts, model_overrides={"token_merging": strategy})
        pi = du.PaddleInferencePredictor(export_dir, threads=1, use_mkldnn=True)
        mious["Paddle Inference " + strategy] = score(pi, inputs, labels, None, num_classes,
                                                      ignore).miou()
        candidates["Paddle Inference " + strategy] = pi
        print("  merging {}: mIoU dygraph {:.2f}, Paddle Inference {:.2f}".format(
            strategy, 100 * mious["dygraph " + strategy],
            100 * mious["Paddle Inference " + strategy]), flush=True)
    model.set_token_merging(None)
    latency = medians(round_robin(candidates, inputs[0], args.rounds))
    rows = []
    for strategy in STRATEGIES:
        row = dict(strategy=strategy, paper_delta=PAPER_MERGING_DELTA.get(strategy, 0.0))
        for engine in ("dygraph", "Paddle Inference"):
            base, key = engine + " none", engine + " " + strategy
            row[engine] = dict(miou=mious[key], delta=100 * (mious[key] - mious[base]),
                               latency_ms=latency[key], speedup=latency[base] / latency[key])
        rows.append(row)
    return rows


def markdown(table):
    lines = ["CamVid val, every {}th image ({} images; ARM kernels: every {}th, {} images), {}; "
             "{}".format(table["val_every"], table["val_images"], table["arm_every"],
                         table["arm_images"], table["date"], table["cpu"]), ""]
    for fam in table["families"]:
        lines += ["### {} ({})".format(fam["name"], fam["weights"]), "",
                  "| backend | val mIoU | change vs dygraph (points) | pixels = dygraph's class | "
                  "pixels = this engine's fp32 class | ms (1 thread, 480x360) |",
                  "|---|---|---|---|---|---|"]
        for r in fam["rows"]:
            if "not_run" in r:
                lines.append("| {} | not run: {} | | | | |".format(r["backend"], r["not_run"]))
                continue
            lines.append("| {} | {:.2f} | {:+.2f}{} | {:.2%} | {} | {} |".format(
                r["backend"], 100 * r["miou"], r["delta"],
                " (on the {} ARM images, dygraph {:.2f})".format(
                    r["images"], 100 * r["reference_miou"]) if "reference_miou" in r else "",
                r["agree"], "{:.2%}".format(r["agree_engine_fp32"])
                if "agree_engine_fp32" in r else "",
                "{:.1f}".format(r["latency_ms"]) if "latency_ms" in r else "-"))
        if fam.get("merging"):
            lines += ["", "Token merging on the unmodified checkpoint (mIoU change in points; "
                      "speed-up against no merging, same engine, alternating rounds):", "",
                      "| preset | dygraph mIoU change | dygraph speed-up | Paddle Inference mIoU "
                      "change | Paddle Inference speed-up | paper (MiT-B5, Cityscapes) |",
                      "|---|---|---|---|---|---|"]
            for r in fam["merging"]:
                d, p = r["dygraph"], r["Paddle Inference"]
                lines.append("| {} | {:+.2f} | {:.2f}x | {:+.2f} | {:.2f}x | {:+.2f} |".format(
                    r["strategy"], d["delta"], d["speedup"], p["delta"], p["speedup"],
                    r["paper_delta"]))
        lines.append("")
    return "\n".join(lines)


def write_json(path, table):
    write_bytes_atomic(path, json.dumps(table, indent=1).encode())


def main(argv=None):
    args = parse_args(argv)
    from paddle_rtseg.cli.errors import writable_dir
    from paddle_rtseg_runtime import cpu_features
    save_dir = writable_dir(args.save_dir)
    camvid_dir = os.path.abspath(args.camvid_dir)
    args.camvid_dir = camvid_dir
    val_path, pairs = val_list(args, save_dir)
    json_path = os.path.join(save_dir, "camvid_deploy.json")
    previous = {}
    if os.path.isfile(json_path):
        with open(json_path) as f:
            previous = {f_["family"]: f_ for f_ in json.load(f)["families"]}
    table = dict(date=datetime.date.today().isoformat(), cpu=cpu_features.summary(),
                 machine=platform.processor() or platform.machine(), val_every=args.val_every,
                 arm_every=args.arm_every, val_images=len(pairs),
                 arm_images=len(range(0, len(pairs), args.arm_every)),
                 command="python scripts/camvid_deploy.py " + " ".join(
                     argv if argv is not None else sys.argv[1:]), families=[])
    for family, weights in args.models.items():
        done = previous.get(family)
        if done and done["weights"] == os.path.relpath(weights, ROOT) and done.get(
                "opts", []) == list(args.opts) and done["val_images"] == \
                len(pairs) and done["arm_images"] == table["arm_images"]:
            print("{}: kept from {}".format(family, json_path), flush=True)
            table["families"].append(done)
            continue
        print("{} ({}):".format(MODEL_NAMES[family], weights), flush=True)
        table["families"].append(evaluate_family(family, weights, args, val_path, pairs))
        write_json(json_path, table)
    write_json(json_path, table)
    text = markdown(table)
    write_bytes_atomic(os.path.join(save_dir, "camvid_deploy.md"), text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
