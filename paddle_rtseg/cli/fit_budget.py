"""``python -m paddle_rtseg.fit_budget``: the most accurate deployment of a trained model that fits a latency budget on this machine's backend.

    python -m paddle_rtseg.fit_budget --config CFG --model_path W.pdparams --budget_ms 33 \
        --backend paddle_inference|onnxruntime|openvino|lite_arm --save_dir OUT \
        [--precision fp32 bf16 int8] [--scales 1.0 0.75 0.5] [--merging none hq fast 2x2 ...] \
        [--val_data val.txt] [--val_images N] [--rounds 5] [--calls 3] [--threads 2] [--opts k=v]

It sweeps only what keeps the trained weights:

* the input scale (every family): the export takes a fixed ``1 x 3 x H x W`` (the base size scaled,
  rounded to a multiple of ``--size_divisor``) and its ``deploy.yaml`` resizes images to it;
* SegFormer++'s token merging (``--merging``): the presets ``none hq fast 2x2 downsample`` and
  parametric ones, ``2x2@12`` (2x2 query pooling in stages 1 and 2 only) and ``bsm@0.4/0.6``
  (``hq``'s layout with key/value ratio 0.4 in stages 1-2 and query ratio 0.6 in stages 3-4);
* the precision: fp32, bf16, int8 where :func:`paddle_rtseg_runtime.cpu_features.kernels` says this
  CPU has the backend's kernels (int8: Paddle's post-training quantization on ``--calib_images``
  training images, ``paddle_rtseg.quantization``; 7-bit weights where the CPU lacks VNNI).

Each point is exported (:func:`paddle_rtseg.exporting.static_graph.export`), its warm latency is
measured on the backend with every point alternating round after round (medians of
:func:`paddle_rtseg.benchmarks.timing.round_robin`, preprocessing excluded, batch 1), and its mIoU on
the validation images (the config's ``val_dataset``, or ``--val_data``) is computed against the
labels at their own resolution, the prediction resized to them (as PaddleSeg's ``val`` does for a
resized input; :func:`paddle_rtseg.quantization.ptq.miou`). It prints the Pareto frontier (latency vs
mIoU), and writes into ``--save_dir`` the best point under the budget as a ready export
(``deploy.yaml`` carries its input size, merging and precision), ``fit_budget.json`` (every point)
and ``fit_budget.png`` (the frontier), all at once (:func:`paddle_rtseg_runtime.outputs.publish`).
When no point meets the budget it prints the table, says which point comes closest, writes nothing
and exits with status 2.

``--backend lite_arm`` (a phone or board): emulated time means nothing, so it runs in two steps
(docs/fit_budget.md). Without ``--latency_file`` it writes every point's ARM ``.nb`` and
``models.txt`` to ``--arm_models`` (default ``<save_dir>/arm_sweep``) and stops; on the device,
``rtseg_lite_time models.txt latency.txt`` (deploy/lite/cpp) times them; with ``--latency_file`` it
reads those times, computes each ``.nb``'s mIoU here on the real ARM kernels (qemu,
:mod:`paddle_rtseg_runtime.lite_arm`) and chooses.
"""
import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time


BACKENDS = ("paddle_inference", "onnxruntime", "openvino", "lite_arm")
ENGINES = {"paddle_inference": "onednn", "openvino": "openvino", "onnxruntime": "onnxruntime"}
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_SCALES = (1.0, 0.75, 0.5)
DEFAULT_MERGING = ("none", "hq", "fast", "2x2", "downsample", "2x2@12", "bsm@0.4/0.6")
LATENCY_FORMAT = "rtseg_lite_time 1"  # first line of the device program's file
MODELS_LIST = "models.txt"
ARM_YAML = ".deploy.yaml"  # each ARM model's deploy.yaml in --arm_models


class BudgetError(ValueError):
    """The sweep cannot run as asked, or nothing meets the budget; the message says what to do."""


# --- knobs ----------------------------------------------------------------------------------------


def merging_value(spec):
    """``token_merging`` for the model from a ``--merging`` entry (see the module docstring)."""
    from paddle_rtseg.layers.token_merging import PRESETS, resolve_token_merging
    text = spec.strip().lower()
    if text in PRESETS:
        return text
    kind, _, arg = text.partition("@")
    try:
        if kind == "2x2" and arg and set(arg) <= set("1234"):
            value = [dict(q_mode="n2d", q_s=[2, 2]) if str(i + 1) in arg else None
                     for i in range(4)]
        elif kind == "bsm" and arg.count("/") == 1:
            kv, q = (float(v) for v in arg.split("/"))
            value = [dict(kv_mode="bsm", kv_r=kv, kv_sx=2, kv_sy=2)] * 2 + \
                [dict(q_mode="bsm", q_r=q, q_sx=4, q_sy=4)] * 2
        else:
            raise ValueError("unknown form")
        resolve_token_merging(value)  # the layer's own checks (ratios in (0, 1), ...)
    except ValueError as e:
        raise BudgetError(
            "--merging {!r} is not a strategy ({}). Use a preset ({}), 2x2@STAGES (2x2 query "
            "pooling in the listed stages, e.g. 2x2@12) or bsm@KV/Q (hq's layout with those "
            "ratios in (0, 1), e.g. bsm@0.4/0.6).".format(spec, e, " ".join(PRESETS))) from None
    return value


def scaled_size(base_hw, scale, divisor):
    """``[H, W]`` of ``base_hw`` scaled, each rounded to a multiple of ``divisor`` (at least one)."""
    return [max(divisor, int(round(d * scale / divisor)) * divisor) for d in base_hw]


def point_name(scale, merging, precision):
    return "s{:.2f}_{}_{}".format(scale, merging.replace("@", "-").replace("/", "-"), precision)


# --- the frontier ---------------------------------------------------------------------------------


def pareto(points):
    """The points no other point beats on both latency and mIoU (faster or as fast, and at least
    as accurate, one of them strictly), sorted by latency. ``points``: dicts with ``latency_ms``
    and ``miou``; points missing either (failed) are left out."""
    ok = [p for p in points if _measured(p)]
    ok.sort(key=lambda p: (p["latency_ms"], -p["miou"]))
    front, best = [], -math.inf
    for p in ok:
        if p["miou"] > best:
            front.append(p)
            best = p["miou"]
    return front


def _measured(p):
    return all(isinstance(p.get(k), (int, float)) and math.isfinite(p[k])
               for k in ("latency_ms", "miou"))


def choose(points, budget_ms):
    """The most accurate point whose latency is within ``budget_ms`` (the faster one on a tie)
    among those the runners will run here (``runnable`` not False: the runners refuse a precision
    whose kernels exist on this CPU but without the instructions that make it fast), or None."""
    runnable = [p for p in points if p.get("runnable", True)]
    fits = [p for p in pareto(runnable) if p["latency_ms"] <= budget_ms]
    return max(fits, key=lambda p: (p["miou"], -p["latency_ms"])) if fits else None


def impossible_message(points, budget_ms, backend, save_dir):
    measured = [p for p in points if _measured(p)]
    if not measured:
        reasons = sorted({p.get("error", "not measured") for p in points})
        return ("No point of the sweep could be measured on {}: {}. Nothing was written to {}."
                .format(backend, "; ".join(reasons)[:600], save_dir))
    runnable = [p for p in measured if p.get("runnable", True)]
    refused = [p for p in measured if not p.get("runnable", True) and p["latency_ms"] <= budget_ms]
    also = (" ({} within the budget run only in {}, which the runners refuse on this CPU)".format(
        ", ".join(p["name"] for p in refused[:3]), refused[0]["precision"]) if refused else "")
    if not runnable:
        return ("No setting the runners can run here was measured on {}{}. Add --precision fp32. "
                "Nothing was written to {}.".format(backend, also, save_dir))
    fastest = min(runnable, key=lambda p: p["latency_ms"])
    return ("No setting meets --budget_ms {:g} on {} on this CPU: the fastest of the {} points "
            "measured{}, {}, takes {:.1f} ms (mIoU {:.2f}). Raise --budget_ms to at least {:.0f}, "
            "add smaller --scales (the smallest tried is {:g}), more --merging strategies or "
            "another --backend/--precision. Nothing was written to {}.".format(
                budget_ms, backend, len(runnable), also, _describe(fastest),
                fastest["latency_ms"], 100 * fastest["miou"], math.ceil(fastest["latency_ms"]),
                min(p["scale"] for p in points), save_dir))


def _describe(p):
    return "input {}x{} (scale {:g}), merging {}, {}".format(
        p["input_size"][1], p["input_size"][0], p["scale"], p["merging"], p["precision"])


def format_table(points, front_names, chosen_name=None):
    header = ["point", "input WxH", "merging", "precision", "latency ms", "mIoU %", "Pareto"]
    rows = []
    for p in sorted(points, key=lambda p: (not _measured(p), p.get("latency_ms") or 0)):
        rows.append([p["name"], "{}x{}".format(p["input_size"][1], p["input_size"][0]),
                     p["merging"], p["precision"] + ("*" if p.get("runnable") is False else ""),
                     "{:.1f}".format(p["latency_ms"]) if _measured(p) else "-",
                     "{:.2f}".format(100 * p["miou"]) if _measured(p) else
                     "failed: " + p.get("error", "")[:80],
                     "chosen" if p["name"] == chosen_name else
                     "yes" if p["name"] in front_names else ""])
    from paddle_rtseg.cli.deploy_all import format_table as table
    note = ["* measured (this CPU has the kernels) but not chosen: the runners refuse this "
            "precision here"] if any(p.get("runnable") is False for p in points) else []
    return "\n".join([table(header, rows)] + note)


def plot(record, path):
    """Latency vs mIoU: every point, the frontier, the budget and the chosen point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = [p for p in record["points"] if _measured(p)]
    front = [p for p in points if p["pareto"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.scatter([p["latency_ms"] for p in points], [100 * p["miou"] for p in points], s=18,
               color="0.7", label="swept points")
    ax.plot([p["latency_ms"] for p in front], [100 * p["miou"] for p in front], "o-",
            color="C0", label="Pareto frontier")
    for p in front:
        ax.annotate("{:g}x {} {}".format(p["scale"], p["merging"], p["precision"]),
                    (p["latency_ms"], 100 * p["miou"]), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    ax.axvline(record["budget_ms"], color="C3", ls="--",
               label="budget {:g} ms".format(record["budget_ms"]))
    chosen = [p for p in points if p["name"] == record.get("chosen")]
    if chosen:
        ax.scatter([chosen[0]["latency_ms"]], [100 * chosen[0]["miou"]], s=120, facecolors="none",
                   edgecolors="C3", linewidths=2, label="chosen")
    ax.set_xlabel("latency per image, ms ({}, {} threads, median)".format(
        record["backend"], record["threads"]))
    ax.set_ylabel("val mIoU, %")
    ax.set_title(record.get("title") or os.path.basename(record["config"]), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_families(records, path, budgets=(20, 50, 100, 200)):
    """The frontiers of several sweeps (``fit_budget.json`` records) in one plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5 + 0.3 * len(records)))
    for i, record in enumerate(records):
        front = [p for p in record["points"] if p.get("pareto")]
        label = record.get("title") or os.path.basename(record["config"])
        ax.plot([p["latency_ms"] for p in front], [100 * p["miou"] for p in front], "o-",
                color="C{}".format(i), label=label + " frontier")
        for p in front:
            ax.annotate("{:g}x {} {}{}".format(p["scale"], p["merging"], p["precision"],
                                               "*" if p.get("runnable") is False else ""),
                        (p["latency_ms"], 100 * p["miou"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        default = [p for p in record["points"] if _measured(p) and p["scale"] == 1.0 and
                   p["merging"] == "none" and p["precision"] == "fp32"]
        if default:
            ax.scatter([default[0]["latency_ms"]], [100 * default[0]["miou"]], marker="*", s=160,
                       color="C{}".format(i), edgecolors="k",
                       label=label + " default (1.0x, no merging, fp32)")
    for b in budgets:
        ax.axvline(b, color="0.6", ls=":", lw=1)
    if any(p.get("runnable") is False for r in records for p in r["points"]):
        ax.text(0.01, 0.01, "* measured, not exported: the runners refuse this precision here",
                transform=ax.transAxes, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("latency per image, ms (log scale; dotted: {} ms)".format(
        " / ".join(str(b) for b in budgets)))
    ax.set_ylabel("val mIoU, %")
    ax.grid(alpha=0.3)
    # below the axes: inside, it hid the frontiers of the slower families
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- ARM: the device's latency file ---------------------------------------------------------------


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_models_list(folder, entries):
    """``models.txt`` for ``rtseg_lite_time``: ``file.nb size sha256 N C H W`` per line."""
    lines = ["# {} models: file bytes sha256 N C H W".format(LATENCY_FORMAT)]
    for name, shape in entries:
        path = os.path.join(folder, name)
        lines.append("{} {} {} {}".format(name, os.path.getsize(path), sha256(path),
                                          " ".join(str(d) for d in shape)))
    with open(os.path.join(folder, MODELS_LIST), "w") as f:
        f.write("\n".join(lines) + "\n")


def read_latency_file(path, models_dir):
    """``{nb file name: median ms}`` from the file ``rtseg_lite_time`` wrote on the device; every
    line is checked, and each ``.nb`` it names must be in ``models_dir`` with the same sha256 (the
    file was measured on these very models)."""
    def bad(why):
        return BudgetError("--latency_file {}: {}. Time the models of {} on the device with "
                           "`rtseg_lite_time {} latency.txt` (deploy/lite/cpp, docs/fit_budget.md) "
                           "and pass the file it writes.".format(path, why, models_dir,
                                                                 MODELS_LIST))
    if not os.path.isfile(path):
        raise bad("no such file")
    with open(path, errors="replace") as f:
        lines = [l.rstrip("\n") for l in f]
    if not lines or not lines[0].startswith("# " + LATENCY_FORMAT):
        raise bad("it does not start with '# {}' (not written by rtseg_lite_time)".format(
            LATENCY_FORMAT))
    times = {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise bad("line {} has {} tab-separated fields, not 6 (file sha256 median_ms min_ms "
                      "max_ms runs)".format(number, len(fields)))
        name, digest, *numbers = fields
        try:
            median, low, high, runs = float(numbers[0]), float(numbers[1]), float(numbers[2]), \
                int(numbers[3])
        except ValueError:
            raise bad("line {} has a field that is not a number: {!r}".format(number, line[:200])) \
                from None
        if not (0 < low <= median <= high < math.inf) or runs < 1:
            raise bad("line {} has impossible times (min {} median {} max {}, {} runs)".format(
                number, low, median, high, runs))
        local = os.path.join(models_dir, os.path.basename(name))
        if os.path.basename(name) != name or not os.path.isfile(local):
            raise bad("line {} names {!r}, which is not a model of {}".format(number, name,
                                                                              models_dir))
        if sha256(local) != digest:
            raise bad("{} on the device (sha256 {}...) is not the {} here: copy the folder "
                      "again and re-time it".format(name, digest[:12], local))
        times[name] = median
    if not times:
        raise bad("it holds no timed model")
    return times


# --- the sweep ------------------------------------------------------------------------------------


def _val_pairs(cfg, builder, val_data):
    if val_data:
        if not os.path.isfile(val_data):
            raise BudgetError("--val_data {} does not exist: pass a PaddleSeg file list ('image "
                              "label' per line, paths relative to its folder).".format(val_data))
        root = os.path.dirname(os.path.abspath(val_data))
        pairs = []
        with open(val_data) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 2:
                    if parts:
                        raise BudgetError("--val_data {}: line {!r} is not 'image label'.".format(
                            val_data, line.strip()[:200]))
                    continue
                pairs.append(tuple(p if os.path.isabs(p) else os.path.join(root, p)
                                   for p in parts))
        return pairs
    val = builder.val_dataset
    if val is None:
        raise BudgetError("{} has no val_dataset: pass --val_data LIST.".format(cfg.path))
    return [tuple(p) for p in val.file_list]


def _base_size(cfg, pairs):
    """``[H, W]`` the config evaluates at: a val ``Resize`` target, else the first image's size."""
    for t in (cfg.dic.get("val_dataset") or {}).get("transforms") or []:
        if t.get("type") == "Resize":
            w, h = t.get("target_size", [512, 512])
            return [int(h), int(w)]
    import paddle_rtseg_runtime as du
    return list(du.read_image(pairs[0][0]).shape[:2])


def _deploy_transforms(transforms, size_hw):
    """The export's transforms with the resize to the point's input size first (and no other)."""
    kept = [t for t in transforms if t.get("type") not in ("Resize", "ResizeByLong",
                                                           "ResizeByShort")]
    return [{"type": "Resize", "target_size": [size_hw[1], size_hw[0]]}] + kept


def _rewrite_deploy_yaml(folder, size_hw, extra):
    import yaml
    path = os.path.join(folder, "deploy.yaml")
    with open(path) as f:
        info = yaml.safe_load(f)
    info["Deploy"]["transforms"] = _deploy_transforms(info["Deploy"]["transforms"], size_hw)
    info["Deploy"].update(extra)
    with open(path, "w") as f:
        yaml.safe_dump(info, f, default_flow_style=None, sort_keys=False)
    return info["Deploy"]


class Sweep:
    def __init__(self, args, log=print):
        self.args, self.log = args, log

    def check_precisions(self):
        import paddle_rtseg_runtime as du
        usable, notes = [], []
        for precision in self.args.precision:
            if self.args.backend == "lite_arm":
                ok, why = precision != "bf16", "Paddle Lite's ARM kernels run fp32 and int8"
            elif self.args.backend == "onnxruntime" and precision == "bf16":
                ok, why = False, du.cpu_features.NO_KERNELS[("bf16", "onnxruntime")]
            else:
                ok, why = du.cpu_features.kernels(precision, ENGINES[self.args.backend])
            (usable if ok else notes).append(precision if ok else "{}: {}".format(precision, why))
        if self.args.backend == "openvino" and not du.openvino_available():
            raise BudgetError("--backend openvino needs Paddle Inference's OpenVINO engine, which "
                              "this Paddle lacks (it came with Paddle 3.0's CPU builds); use "
                              "--backend paddle_inference or onnxruntime.")
        self.skipped = ["--precision " + note for note in notes]
        for note in self.skipped:
            self.log("skipped " + note)
        if not usable:
            raise BudgetError("None of --precision {} has {} kernels on this CPU ({}). Use "
                              "--precision fp32.".format(" ".join(self.args.precision),
                                                         self.args.backend, "; ".join(notes)))
        return usable

    def run(self):
        import paddle_rtseg_runtime as du
        from paddle_rtseg_runtime.outputs import STAGING_PREFIX, publish
        from paddleseg.cvlibs import SegBuilder
        from paddle_rtseg.config import load_config

        args = self.args
        precisions = self.check_precisions()
        cfg = load_config(args.config, opts=args.opts)
        builder = SegBuilder(cfg)
        pairs = _val_pairs(cfg, builder, args.val_data)[: args.val_images]
        if not pairs:
            raise BudgetError("The validation list is empty; pass --val_data or fix the config.")
        self._pairs = pairs
        val = builder.val_dataset
        num_classes = cfg.dic["model"].get("num_classes") or val.num_classes
        ignore_index = getattr(val, "ignore_index", 255) if val is not None else 255
        model = cfg.dic["model"]
        segformer = model.get("type") == "RTSeg_SegFormerPP" and str(
            (model.get("backbone") or {}).get("type", "")).startswith("RTSeg_MiT")
        mergings = list(args.merging or (DEFAULT_MERGING if segformer else ["none"]))
        if not segformer and mergings != ["none"]:
            raise BudgetError("--merging applies to SegFormer++ (RTSeg_SegFormerPP with an "
                              "RTSeg_MiT backbone); {} is a {}: leave --merging out.".format(
                                  args.config, model.get("type")))
        values = {m: merging_value(m) for m in mergings}
        self.segformer = segformer
        base = _base_size(cfg, pairs)
        train = builder.train_dataset if cfg.dic.get("train_dataset") else None
        calib_pairs = [tuple(p) for p in (train.file_list if train is not None else pairs)]
        calib_pairs = calib_pairs[: args.calib_images]
        self.log(du.cpu_features.summary())
        self.log("Sweep: {} scale(s) x {} merging(s) x {} precision(s) on {}, base size {}x{}, "
                 "{} val images".format(len(args.scales), len(mergings), len(precisions),
                                        args.backend, base[1], base[0], len(pairs)))
        work = tempfile.mkdtemp(prefix=STAGING_PREFIX + "sweep.", dir=args.save_dir)
        try:
            points = self._points(args.scales, mergings, precisions, base)
            if args.backend == "lite_arm" and args.latency_file:
                self._arm_points(points, work)  # step 1's very .nb files, not new conversions
            else:
                self._export_all(points, values, work, calib_pairs, cfg)
            if args.backend == "lite_arm":
                if not args.latency_file:
                    return self._write_arm_models(points, work)
                self._arm_latency(points)
                self._accuracy(points, pairs, num_classes, ignore_index, arm=True)
            else:
                self._latency(points)
                self._accuracy(points, pairs, num_classes, ignore_index)
            front = pareto(points)
            chosen = choose(points, args.budget_ms)
            for p in points:
                p["pareto"] = p in front
            record = dict(
                config=args.config, model_path=args.model_path, backend=args.backend,
                budget_ms=args.budget_ms, threads=args.threads, rounds=args.rounds,
                calls=args.calls, val_images=len(pairs), base_size_hw=base,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                cpu=du.cpu_features.summary(), title=args.title,
                command="python -m paddle_rtseg.fit_budget " + shlex.join(self.argv),
                load_average=_load_average(),
                chosen=chosen["name"] if chosen else None, skipped=self.skipped,
                frontier=[p["name"] for p in front],
                points=[{k: v for k, v in p.items() if not k.startswith("_")} for p in points])
            self.log("\n" + format_table(points, record["frontier"], record["chosen"]))
            better = [p for p in front if not p.get("runnable", True) and _measured(p) and
                      p["latency_ms"] <= args.budget_ms and (chosen is None or
                                                             p["miou"] > chosen["miou"])]
            for p in better:
                self.log("note: {} ({:.1f} ms, mIoU {:.2f}) is within the budget but not "
                         "exported: the runners refuse {} here ({})".format(
                             p["name"], p["latency_ms"], 100 * p["miou"], p["precision"],
                             p["not_runnable"]))
            if chosen is None:
                raise BudgetError(impossible_message(points, args.budget_ms, args.backend,
                                                     args.save_dir))
            stage = os.path.join(work, STAGING_PREFIX + "publish")
            shutil.copytree(chosen["_dir"], stage)
            for name in os.listdir(stage):  # a flat folder: the chosen export's files only
                if not os.path.isfile(os.path.join(stage, name)) or name == ".paddle_rtseg_files":
                    _remove(os.path.join(stage, name))
            with open(os.path.join(stage, "fit_budget.json"), "w") as f:
                json.dump(record, f, indent=1)
            plot(record, os.path.join(stage, "fit_budget.png"))
            publish(stage, args.save_dir)  # deploy.yaml last
            self.log("\nChosen for {:g} ms: {} -> {:.1f} ms, mIoU {:.2f}. Export: {} (runner: {}); "
                     "sweep: {}, plot: {}".format(
                         args.budget_ms, _describe(chosen), chosen["latency_ms"],
                         100 * chosen["miou"], args.save_dir, self._runner(chosen),
                         os.path.join(args.save_dir, "fit_budget.json"),
                         os.path.join(args.save_dir, "fit_budget.png")))
            return 0
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _runner(self, p):
        d = self.args.save_dir
        return {"paddle_inference": "deploy/python/infer.py --model_dir {} --precision {}",
                "openvino": "deploy/python/infer.py --model_dir {} --use_openvino --precision {}",
                "onnxruntime": "deploy/onnx/infer.py --model_dir {} --precision {}",
                "lite_arm": "deploy/lite/cpp rtseg_lite_demo {}/model_arm.nb ({})"}[
                    self.args.backend].format(d, p["precision"])

    def _points(self, scales, mergings, precisions, base):
        points = []
        for precision in precisions:
            for scale in scales:
                for merging in mergings:
                    points.append(dict(name=point_name(scale, merging, precision), scale=scale,
                                       merging=merging, precision=precision,
                                       input_size=scaled_size(base, scale,
                                                              self.args.size_divisor)))
                    fast, why = self._runnable(precision)
                    if not fast:  # measured (kernels exist), never exported: the runners refuse it
                        points[-1].update(runnable=False, not_runnable=why)
        return points

    def _runnable(self, precision):
        """Whether the runners run ``precision`` on this CPU (they refuse one without the
        instructions that make it fast; a device's ARM kernels are not this CPU's)."""
        from paddle_rtseg_runtime import cpu_features
        if precision == "fp32" or self.args.backend == "lite_arm":
            return True, None
        return cpu_features.support(precision)

    def _export_all(self, points, values, work, calib_pairs, cfg):
        import paddle_rtseg_runtime as du
        from paddle_rtseg.exporting.static_graph import export
        args = self.args
        exports = {}  # (size, merging, output_op) -> folder of the fp32 export
        start = time.perf_counter()
        for i, p in enumerate(points, 1):
            t0 = time.perf_counter()
            op = "none" if p["precision"] == "int8" else "argmax"
            key = (tuple(p["input_size"]), p["merging"], op)
            try:
                if key not in exports:
                    folder = os.path.join(work, "{}_{}".format(p["name"].rsplit("_", 1)[0], op))
                    overrides = {"token_merging": values[p["merging"]]} if self.segformer \
                        else None
                    export(args.config, folder, args.model_path,
                           input_shape=[1, 3] + p["input_size"], output_op=op, fmt="legacy",
                           opts=args.opts, model_overrides=overrides)
                    _rewrite_deploy_yaml(folder, p["input_size"], {})
                    exports[key] = folder
                p["_dir"] = self._backend_model(p, exports[key], work, calib_pairs)
                info = dict(fit_budget=dict(backend=args.backend, precision=p["precision"],
                                            scale=p["scale"], input_size_hw=p["input_size"],
                                            token_merging=p["merging"]))
                if p["merging"] != "none":
                    info["token_merging"] = values[p["merging"]]
                _rewrite_deploy_yaml(p["_dir"], p["input_size"], info)
            except (du.DeployError, ValueError, RuntimeError) as e:
                p["error"] = " ".join(str(e).split())[:300]
            self.log("[{}/{}] {} {}x{}: {} ({:.1f} s, {:.0f} s in all)".format(
                i, len(points), p["name"], p["input_size"][1], p["input_size"][0],
                "failed: " + p["error"] if "error" in p else "exported",
                time.perf_counter() - t0, time.perf_counter() - start))

    def _calibration(self, calib_pairs, size_hw, transforms):
        import paddle_rtseg_runtime as du
        return [du.preprocess(du.read_image(path), _deploy_transforms(transforms, size_hw))
                for path, _ in calib_pairs]

    def _backend_model(self, p, fp32_dir, work, calib_pairs):
        """The point's own folder (deploy.yaml + the files its backend runs)."""
        import paddle_rtseg_runtime as du
        from paddle_rtseg.quantization.ptq import post_training_quantize
        backend, precision = self.args.backend, p["precision"]
        folder = os.path.join(work, p["name"])
        os.makedirs(folder)
        for name in ("deploy.yaml", "model.pdmodel", "model.pdiparams"):
            shutil.copy(os.path.join(fp32_dir, name), os.path.join(folder, name))
        transforms = du.read_deploy_yaml(fp32_dir)["transforms"]
        if precision == "int8":
            calib = self._calibration(calib_pairs, p["input_size"], transforms)
            if backend in ("paddle_inference", "lite_arm"):  # fake-quant program over the copy
                post_training_quantize(fp32_dir, folder, calib, self.args.algo, log=self.log)
            elif backend == "openvino":
                post_training_quantize(fp32_dir, folder, calib, self.args.algo, log=self.log,
                                       qdq=True, reduce_range=du.cpu_features.needs_7bit_weights(
                                           "int8", "openvino"))
        if backend == "onnxruntime":
            onnx_fp32 = du.convert_onnx(folder, os.path.join(folder, "model.onnx"))
            if precision == "int8":
                from paddle_rtseg.quantization.onnx_int8 import quantize_onnx_int8
                quantize_onnx_int8(onnx_fp32, du.default_onnx_file(folder, "int8"),
                                   self._calibration(calib_pairs, p["input_size"], transforms),
                                   reduce_range=du.cpu_features.needs_7bit_weights(
                                       "int8", "onnxruntime"))
                os.remove(onnx_fp32)
        elif backend == "lite_arm":
            du.convert_lite(folder, os.path.join(folder, "model_arm"), "arm")
        return folder

    def _predictor(self, p):
        import paddle_rtseg_runtime as du
        args, folder = self.args, p["_dir"]
        if args.backend == "onnxruntime":
            return du.OnnxPredictor(du.default_onnx_file(folder, p["precision"]), args.threads,
                                    precision=p["precision"], allow_slow=True)
        return du.PaddleInferencePredictor(folder, threads=args.threads, precision=p["precision"],
                                           use_openvino=args.backend == "openvino",
                                           allow_slow=True)

    def _input(self, p, pairs):
        import paddle_rtseg_runtime as du
        transforms = du.read_deploy_yaml(p["_dir"], program_files=False)["transforms"]
        return du.preprocess(du.read_image(pairs[0][0]), transforms)

    def _latency(self, points):
        from paddle_rtseg.benchmarks.timing import medians, round_robin
        args = self.args
        live = [p for p in points if "error" not in p]
        candidates = {}
        for p in live:
            try:
                p["_predictor"] = self._predictor(p)
            except Exception as e:  # a backend that cannot take this program: the point fails
                p["error"] = " ".join(str(e).split())[:300]
                continue
            x = self._input(p, self._pairs)
            candidates[p["name"]] = lambda _, f=p["_predictor"], x=x: f(x)
        if not candidates:
            return
        self.log("Timing {} points on {} ({} threads): {} rounds, each point {} call(s) a turn, "
                 "in turn (paddle_rtseg.benchmarks.timing.round_robin)...".format(
                     len(candidates), args.backend, args.threads, args.rounds, args.calls))
        t0 = time.perf_counter()
        times = round_robin(candidates, None, args.rounds, warmup=1, calls=args.calls)
        for p in points:
            if p["name"] in times:
                p["latency_ms"] = medians(times)[p["name"]]
                p["latency_rounds_ms"] = [round(t, 3) for t in times[p["name"]]]
        self.log("timed in {:.0f} s".format(time.perf_counter() - t0))

    def _accuracy(self, points, pairs, num_classes, ignore_index, arm=False):
        import paddle_rtseg_runtime as du
        from paddle_rtseg.quantization.ptq import miou
        start = time.perf_counter()
        todo = [p for p in points if "error" not in p]
        for i, p in enumerate(todo, 1):
            transforms = du.read_deploy_yaml(p["_dir"], program_files=False)["transforms"]
            try:
                predictor = self._arm_predictor(p, pairs, transforms) if arm \
                    else p.pop("_predictor")
                p["miou"] = miou(predictor, pairs, transforms, num_classes, ignore_index)
            except Exception as e:
                if not isinstance(e, (du.DeployError, RuntimeError, ValueError)):
                    raise
                p["error"] = " ".join(str(e).split())[:300]
            self.log("[{}/{}] mIoU {}: {} ({:.0f} s in all)".format(
                i, len(todo), p["name"], "{:.2f}".format(100 * p["miou"]) if "miou" in p else
                "failed: " + p.get("error", ""), time.perf_counter() - start))

    # --- lite_arm -----------------------------------------------------------------------------

    def _arm_nb_name(self, p):
        return p["name"] + ".nb"

    def _write_arm_models(self, points, work):
        from paddle_rtseg_runtime.outputs import publish, staging
        args = self.args
        ok = [p for p in points if "error" not in p]
        if not ok:
            raise BudgetError("No point could be converted for ARM: {}".format(
                "; ".join(sorted({p["error"] for p in points}))[:600]))
        stage = staging(args.arm_models)
        for p in ok:
            shutil.copy(os.path.join(p["_dir"], "model_arm.nb"),
                        os.path.join(stage, self._arm_nb_name(p)))
            shutil.copy(os.path.join(p["_dir"], "deploy.yaml"),
                        os.path.join(stage, p["name"] + ARM_YAML))
        write_models_list(stage, [(self._arm_nb_name(p), [1, 3] + p["input_size"]) for p in ok])
        publish(stage, args.arm_models, marker=MODELS_LIST)
        self.log("\nWrote {} ARM models and {} to {}. Step 2, on the device (deploy/lite/cpp, "
                 "docs/fit_budget.md):\n  rtseg_lite_time {} latency.txt [threads] [rounds]\n"
                 "Step 3, here: the same command with --latency_file latency.txt".format(
                     len(ok), MODELS_LIST, args.arm_models, MODELS_LIST))
        return 0

    def _arm_points(self, points, work):
        """Step 3: each point's folder from step 1's ``--arm_models`` (its ``.nb`` and
        ``deploy.yaml``): the exact files timed on the device (a new conversion need not be
        byte-identical). A point step 1 did not write is refused."""
        missing = [p["name"] for p in points if not os.path.isfile(
            os.path.join(self.args.arm_models, self._arm_nb_name(p)))]
        if missing:
            raise BudgetError(
                "{} has no ARM model for {} ({} of the {} points asked): run step 1 (the same "
                "command without --latency_file) with the same --scales/--merging/--precision, "
                "then time its models on the device.".format(
                    self.args.arm_models, ", ".join(missing[:5]), len(missing), len(points)))
        for p in points:
            folder = os.path.join(work, p["name"])
            os.makedirs(folder)
            shutil.copy(os.path.join(self.args.arm_models, self._arm_nb_name(p)),
                        os.path.join(folder, "model_arm.nb"))
            shutil.copy(os.path.join(self.args.arm_models, p["name"] + ARM_YAML),
                        os.path.join(folder, "deploy.yaml"))
            p["_dir"] = folder

    def _arm_latency(self, points):
        times = read_latency_file(self.args.latency_file, self.args.arm_models)
        for p in points:
            name = self._arm_nb_name(p)
            if name in times:
                p["latency_ms"] = times[name]
            else:
                p["error"] = "not in --latency_file"

    def _arm_predictor(self, p, pairs, transforms):
        """The point's ``.nb`` on the real ARM kernels (qemu), all images in one emulated process."""
        import paddle_rtseg_runtime as du
        from paddle_rtseg_runtime import lite_arm
        inputs = [du.preprocess(du.read_image(path), transforms) for path, _ in pairs]
        outputs = iter(lite_arm.run_raw(os.path.join(p["_dir"], "model_arm.nb"), inputs,
                                        threads=self.args.threads))
        return lambda x: next(outputs)


def _load_average():
    """The 1/5/15-minute load averages while the sweep ran (other jobs slow every timing)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="PaddleSeg YAML config of the trained model")
    p.add_argument("--model_path", help="trained .pdparams (or the authors' .pth)")
    p.add_argument("--budget_ms", type=float, default=None,
                   help="latency budget per image, ms (batch 1, preprocessing excluded)")
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--save_dir", default="output/fit_budget")
    p.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="precisions to sweep (default: every one whose kernels this CPU has for "
                        "the backend)")
    p.add_argument("--scales", nargs="+", type=float, default=list(DEFAULT_SCALES),
                   help="input scales of the base size (the config's val size)")
    p.add_argument("--merging", nargs="+", default=None,
                   help="SegFormer++ strategies (default: {})".format(" ".join(DEFAULT_MERGING)))
    p.add_argument("--size_divisor", type=int, default=8,
                   help="scaled H and W are rounded to multiples of this")
    p.add_argument("--val_data", default=None,
                   help="PaddleSeg file list of validation pairs (default: the config's val set)")
    p.add_argument("--val_images", type=int, default=1000, help="at most this many val images")
    p.add_argument("--calib_images", type=int, default=8, help="int8 calibration images")
    p.add_argument("--algo", default="avg", help="int8 calibration (paddle_rtseg.quantize --algo)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (every point each round)")
    p.add_argument("--calls", type=int, default=3,
                   help="back-to-back calls a turn; >1 times all but the first (a warm loop)")
    p.add_argument("--latency_file", default=None,
                   help="lite_arm: the file rtseg_lite_time wrote on the device")
    p.add_argument("--arm_models", default=None,
                   help="lite_arm: folder of the swept .nb files (default <save_dir>/arm_sweep)")
    p.add_argument("--title", default=None, help="plot title (default: the config's name)")
    p.add_argument("--opts", nargs="+", action="extend", default=None,
                   help="config overrides key=value")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="instead of a sweep: the frontiers of these fit_budget.json in one plot "
                        "(--plot) and, per --budgets, the best of them and each one's default")
    p.add_argument("--plot", default="fit_budget_families.png", help="with --combine: the PNG")
    p.add_argument("--budgets", nargs="+", type=float, default=[20, 50, 100, 200],
                   help="with --combine: budgets (ms) of the table")
    args = p.parse_args(argv)
    if args.combine is None:
        missing = [f for f in ("config", "model_path", "backend") if getattr(args, f) is None]
        if missing:
            p.error("the following arguments are required: " + ", ".join(
                "--" + f for f in missing))
    args.arm_models = args.arm_models or os.path.join(args.save_dir, "arm_sweep")
    return args


def combine(args):
    """``--combine``: several sweeps' frontiers in one plot, and which point wins each budget."""
    records = []
    for path in args.combine:
        try:
            with open(path) as f:
                records.append(json.load(f))
        except (OSError, ValueError) as e:
            raise BudgetError("--combine {}: not a readable fit_budget.json ({}).".format(
                path, e)) from None
    plot_families(records, args.plot, args.budgets)
    label = lambda r: r.get("title") or os.path.basename(r["config"])  # noqa: E731
    rows = []
    for budget in args.budgets:
        best = [(p, label(r)) for r in records for p in [choose(r["points"], budget)] if p]
        win = max(best, key=lambda b: b[0]["miou"]) if best else None
        defaults = []
        for r in records:
            d = [p for p in r["points"] if _measured(p) and p["scale"] == 1.0 and
                 p["merging"] == "none" and p["precision"] == "fp32"]
            if d:
                defaults.append("{} {:.1f} ms {:.2f}{}".format(
                    label(r).split(",")[0], d[0]["latency_ms"], 100 * d[0]["miou"],
                    "" if d[0]["latency_ms"] <= budget else " (over)"))
        rows.append("| {:g} | {} | {} |".format(
            budget, "{}: {:g}x, {}, {} ({:.1f} ms, mIoU {:.2f})".format(
                win[1].split(",")[0], win[0]["scale"], win[0]["merging"], win[0]["precision"],
                win[0]["latency_ms"], 100 * win[0]["miou"]) if win else "nothing fits",
            "; ".join(defaults)))
    print("| budget ms | best point within it | defaults (1.0x, no merging, fp32) |")
    print("|---|---|---|")
    print("\n".join(rows))
    print("plot: " + args.plot)
    return 0


def check_args(args):
    step1 = args.backend == "lite_arm" and not args.latency_file
    if args.budget_ms is None and not step1:
        raise BudgetError("--budget_ms is required: the latency each image may take, in ms "
                          "(e.g. --budget_ms 33 for 30 frames/s).")
    if args.budget_ms is not None and not (0 < args.budget_ms < math.inf):
        raise BudgetError("--budget_ms must be a positive number of milliseconds, got {:g}."
                          .format(args.budget_ms))
    if any(not (0 < s <= 4) for s in args.scales):
        raise BudgetError("--scales must lie in (0, 4], got {}.".format(
            " ".join("{:g}".format(s) for s in args.scales)))
    for name in ("val_images", "calib_images", "rounds", "calls", "threads", "size_divisor"):
        if getattr(args, name) < 1:
            raise BudgetError("--{} must be at least 1, got {}.".format(name, getattr(args, name)))
    if args.latency_file and args.backend != "lite_arm":
        raise BudgetError("--latency_file is for --backend lite_arm (times measured on the "
                          "device); {} is measured here.".format(args.backend))
    if args.backend == "lite_arm":
        from paddle_rtseg_runtime import lite_arm
        reason = lite_arm.unavailable_reason() if args.latency_file else None
        if reason:
            raise BudgetError("--backend lite_arm computes each model's mIoU on the ARM kernels "
                              "(qemu) here: " + reason)
    if not os.path.isfile(args.model_path):
        from paddle_rtseg_runtime.files import not_a_file
        raise BudgetError("--model_path {} {}. Pass the .pdparams written by training (e.g. "
                          "output/best_model/model.pdparams).".format(
                              args.model_path, not_a_file(args.model_path)))
    args.scales = list(dict.fromkeys(args.scales))
    args.precision = list(dict.fromkeys(args.precision))
    if args.merging:
        args.merging = list(dict.fromkeys(args.merging))


def run(args, argv):
    from paddle_rtseg.cli.errors import writable_dir
    from paddle_rtseg_runtime.run_lock import run_folder
    check_args(args)
    writable_dir(args.save_dir)
    sweep = Sweep(args)
    sweep.argv = argv
    with run_folder(args.save_dir):
        if args.backend == "lite_arm" and os.path.abspath(args.arm_models) != os.path.join(
                os.path.abspath(args.save_dir), "arm_sweep"):
            with run_folder(args.arm_models):
                return sweep.run()
        return sweep.run()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.combine:
        from paddle_rtseg.cli.errors import run_cli
        return run_cli(lambda: combine(args))
    from paddle_rtseg.exporting.static_graph import pir_active
    if pir_active():  # PTQ and Paddle Lite need the legacy program: re-run with it (as quantize)
        env = dict(os.environ, FLAGS_enable_pir_api="0")
        from paddle_rtseg_runtime.run_lock import die_with_parent
        return subprocess.call([sys.executable, "-m", "paddle_rtseg.fit_budget"] + argv, env=env,
                               preexec_fn=die_with_parent)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from paddle_rtseg.cli.errors import run_cli  # BudgetError (a ValueError raised here): one paragraph
    return run_cli(lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
