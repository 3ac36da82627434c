"""PalQuant on real CamVid: full precision, plain low-bit and parallel low-bit networks, trained
with one budget, in one table with val mIoU, parameters, MACs and BitOPs (issue 27).

    nice -n 10 python scripts/palquant_camvid_table.py [--variants fp32 w4a4 w2a2 g2w2a2 g4w2a2] \
        [--iters 400] [--seeds 0] [--camvid_dir data/camvid] [--save_dir output/palquant_camvid] \
        [--opts key=value ...]

Two families of variants:

* ResNet-18 (``fp32 w4a4 w2a2 g2w2a2 g4w2a2``): every variant trains
  ``configs/palquant/palquant_r18_g2w2a2_camvid_480x360_2k.yml`` (the authors' two-optimizer
  recipe, 224x224 crops, batch 8, width 16 per group) with only the groups and levels changed
  (``--opts model.backbone.groups=G ...weight_levels=L ...act_levels=L``) and the cosine schedule
  fitted to ``--iters`` (``lr_scheduler.T_max``).
* RTFormer-Slim (``rtformer_fp32 rtformer_w2a2 rtformer_g2w2a2``): RTFormer's CamVid config
  (``configs/rtformer/rtformer_slim_camvid_480x360_1k.yml``) against
  ``configs/palquant/palquant_rtformer_slim_g2w2a2_camvid_480x360_2k.yml`` (the same recipe, its
  conv stages W2A2 with G = 1 or 2 parallel groups; ``model.groups=G``).

The same images, steps and recipe within a family; ``--opts`` adds config overrides to every run
(e.g. ``lr_scheduler.warmup_iters=20`` for short budgets). Training and evaluation are
``scripts/camvid_table.py``'s (``python -m paddle_rtseg.train`` then ``paddle_rtseg.cli.val`` on the
CamVid val split), so a run already in the JSON with the same settings is kept.

MACs and BitOPs are counted at 480x360 by :func:`paddle_rtseg.benchmarks.flops.count_bitops`:
quantized convolutions at ``b_w x b_a`` bit operations a MAC, everything in full precision at
32 x 32. ``low-bit GBitOPs`` is the quantized convolutions' share, the quantity the paper compares
(a W2A2 net with G groups has G times the MACs of the plain one: G = 4 matches W4A4's BitOPs,
G = 2 has half of them).

Writes ``<save_dir>/palquant_camvid.json`` and ``.md`` after every run, each atomically.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

RESNET = "configs/palquant/palquant_r18_g2w2a2_camvid_480x360_2k.yml"
RTFORMER = "configs/rtformer/rtformer_slim_camvid_480x360_1k.yml"
PALQUANT_RTFORMER = "configs/palquant/palquant_rtformer_slim_g2w2a2_camvid_480x360_2k.yml"
# name: (label, config, groups, weight and activation levels; None = full precision)
VARIANTS = {
    "fp32": ("ResNet-18 fp32", RESNET, 1, None),
    "w4a4": ("ResNet-18 W4A4", RESNET, 1, 16),
    "w2a2": ("ResNet-18 W2A2", RESNET, 1, 4),
    "g2w2a2": ("PalQuant W2A2 G=2", RESNET, 2, 4),
    "g4w2a2": ("PalQuant W2A2 G=4", RESNET, 4, 4),
    "rtformer_fp32": ("RTFormer-Slim fp32", RTFORMER, None, None),
    "rtformer_w2a2": ("RTFormer-Slim, W2A2 conv stages", PALQUANT_RTFORMER, 1, 4),
    "rtformer_g2w2a2": ("RTFormer-Slim, PalQuant W2A2 G=2 conv stages", PALQUANT_RTFORMER, 2, 4),
}
RESNET_VARIANTS = [name for name, v in VARIANTS.items() if v[1] == RESNET]
TABLE = "palquant_camvid"
SIZE = (360, 480)  # CamVid val images, H x W


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=RESNET_VARIANTS, choices=list(VARIANTS),
                        help="variants to train (default: the ResNet-18 ones)")
    parser.add_argument("--iters", type=int, default=400, help="training iterations for every variant")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed")
    parser.add_argument("--camvid_dir", default="data/camvid",
                        help="CamVid folder (train.txt, val.txt and the images they list)")
    parser.add_argument("--val_every", type=int, default=1,
                        help="evaluate on every N-th val image (1: all 101)")
    parser.add_argument("--save_dir", default="output/palquant_camvid")
    parser.add_argument("--opts", nargs="+", action="extend", default=[],
                        help="config overrides (key=value) for every run")
    return parser.parse_args(argv)


def variant_opts(name, iters):
    """The config overrides that make variant ``name`` of its config."""
    _, config, groups, levels = VARIANTS[name]
    level = "null" if levels is None else str(levels)
    if config == RESNET:
        return ["model.backbone.groups={}".format(groups), "model.backbone.weight_levels=" + level,
                "model.backbone.act_levels=" + level, "lr_scheduler.T_max={}".format(iters)]
    if config == PALQUANT_RTFORMER:
        return ["model.groups={}".format(groups), "model.weight_levels=" + level,
                "model.act_levels=" + level]
    return []


def complexity(name):
    """Parameters, MACs and BitOPs of the variant's segmentation model at 480x360."""
    import paddle_rtseg
    from paddle_rtseg.benchmarks.flops import count_bitops
    from paddleseg.cvlibs import SegBuilder
    model = SegBuilder(paddle_rtseg.load_config(os.path.join(ROOT, VARIANTS[name][1]),
                                                opts=variant_opts(name, 1))).model
    model.eval()
    counts = count_bitops(model, [1, 3, SIZE[0], SIZE[1]])
    counts["params"] = int(sum(p.size for p in model.parameters()))
    return counts


def markdown(table):
    lines = ["PalQuant on CamVid val ({} images), from scratch, one budget: {} iterations x batch {}"
             " ({}; {}, {} CPU threads visible)".format(
                 table["val_images"], table["iters"], table["batch_size"], table["date"],
                 table["machine"], table["cpus"]), "",
             "| model | seed | params (M) | GMACs | low-bit GBitOPs | total GBitOPs | mIoU | acc "
             "| train time |", "|---|---|---|---|---|---|---|---|---|"]
    for run in table["runs"]:
        c = run["complexity"]
        lines.append("| {} | {} | {:.2f} | {:.2f} | {:.1f} | {:.0f} | {:.1f} | {:.1f} | {:.1f} min |"
                     .format(run["name"], run["seed"], c["params"] / 1e6, c["macs"] / 1e9,
                             c["low_bit_bitops"] / 1e9, c["bitops"] / 1e9, 100 * run["miou"],
                             100 * run["acc"], run["train_s"] / 60))
    lines += ["", "MACs and BitOPs at 480x360 (`paddle_rtseg.benchmarks.flops.count_bitops`; "
              "everything in full precision at 32x32 bits a MAC).", "",
              "Command: `{}`".format(table["command"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    import camvid_table
    ct_args = types.SimpleNamespace(iters=args.iters, batch_size=None, seeds=args.seeds,
                                    camvid_dir=args.camvid_dir, val_every=args.val_every,
                                    paddleseg_rtformer=False, families=[])
    camvid_table.check_args(ct_args)
    import paddle_rtseg
    import paddle_rtseg.cli.val
    from paddle_rtseg.cli.errors import writable_dir
    from paddle_rtseg_runtime.files import write_bytes_atomic

    save_dir = writable_dir(args.save_dir)
    camvid_dir = os.path.abspath(args.camvid_dir)
    val_path, pairs = camvid_table.val_list(ct_args, save_dir)
    paths = ["train_dataset.dataset_root=" + camvid_dir,
             "train_dataset.train_path=" + os.path.join(camvid_dir, "train.txt"),
             "val_dataset.dataset_root=" + camvid_dir, "val_dataset.val_path=" + val_path]
    json_path = os.path.join(save_dir, TABLE + ".json")
    previous = {}
    if os.path.isfile(json_path):
        with open(json_path) as f:
            previous = {r["key"]: r for r in json.load(f).get("runs", [])}
    table = dict(date=datetime.date.today().isoformat(), machine=platform.processor() or
                 platform.machine(), cpus=os.cpu_count(), val_images=len(pairs), iters=args.iters,
                 batch_size=paddle_rtseg.load_config(
                     os.path.join(ROOT, VARIANTS[args.variants[0]][1])).batch_size,
                 command="python scripts/palquant_camvid_table.py " + " ".join(
                     argv if argv is not None else sys.argv[1:]), runs=[])

    def write():
        write_bytes_atomic(json_path, (json.dumps(table, indent=1) + "\n").encode())
        write_bytes_atomic(os.path.join(save_dir, TABLE + ".md"), markdown(table).encode())

    for name in args.variants:
        for seed in args.seeds:
            key = "{}_seed{}".format(name, seed)
            config = os.path.join(ROOT, VARIANTS[name][1])
            opts = paths + variant_opts(name, args.iters) + list(args.opts)
            done = previous.get(key)
            if done and (done["iters"], done["val_images"], done["opts"]) == (
                    args.iters, len(pairs), opts):
                print("{}: kept from {}".format(key, json_path), flush=True)
                table["runs"].append(done)
                continue
            print("{}: training {} iterations ...".format(key, args.iters), flush=True)
            cfg, seconds, weights = camvid_table.train_run(config, os.path.join(save_dir, key),
                                                           seed, ct_args, opts)
            result = paddle_rtseg.cli.val.main(["--config", config, "--model_path", weights,
                                                "--device", "cpu", "--opts"] + opts)
            table["runs"].append(dict(
                key=key, variant=name, name=VARIANTS[name][0], seed=seed, iters=cfg.iters,
                batch_size=cfg.batch_size, opts=opts, train_s=seconds, val_images=len(pairs),
                weights=weights, complexity=complexity(name), **result))
            write()
            print("{}: mIoU {:.1f}, {:.0f} s".format(key, 100 * result["miou"], seconds), flush=True)
    write()
    print(markdown(table))
    return table


if __name__ == "__main__":
    from paddle_rtseg.cli.errors import run_cli
    run_cli(main)
