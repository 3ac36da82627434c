"""``python -m paddle_rtseg.bench_train``: training-step and dygraph inference time per family, ours
against the references, same weights, same input, alternating rounds, paired medians.

    python -m paddle_rtseg.bench_train [--families seaformer segformer rtformer segformer_pp palquant]
        [--repeats 3] [--batch_size 2] [--train_size 224] [--infer_size 512] [--to_static] [--before]
        [--paddle_threads auto] [--threads N]
        [--torch_python VENV/bin/python --authors_dir DIR] [--camvid [--camvid_iters 4]
        [--num_workers 0]] [--save_dir output/bench_train]

References: PaddleSeg's own model on the same weights where there is one (``rtformer``: RTFormer-Slim,
``segformer``: SegFormer-B0 with PaddleSeg's head), and the authors' PyTorch code in its own venv and
process (``seaformer``: SeaFormer-Tiny; ``segformer_pp``: SegFormer++ B0, mmseg head, merging off;
``palquant``: the authors' ResNet-18 G2 W2A2 classifier at base width 16). The PyTorch side is
:mod:`paddle_rtseg.benchmarks.torch_side`, run by ``--torch_python``; it builds the model, writes its
weights (``.npz``, the authors' key names), and ours load them through ``convert_torch_state_dict``;
the logits of both on the same input are compared before timing. Without ``--torch_python`` those rows
are skipped with one line.

A training step is forward + cross-entropy + backward + optimizer step + clearing the gradients, with
the family's optimizer (AdamW lr 1e-4 wd 0.01; PalQuant: SGD on the weights + Adam on the quantizers,
as the authors), on one fixed batch of ``--batch_size`` images at ``--train_size``; inference is one
eval forward under ``no_grad`` at ``--infer_size``, batch 1. Every round runs each candidate once, in a
shuffled order, after a pause (:data:`paddle_rtseg.benchmarks.timing.SETTLE_S`); the ratio is the
median over rounds of ours/reference in the same round (paired), next to the medians of each.
``--to_static`` adds ours under ``paddle.jit.to_static`` (PaddleSeg's ``to_static_training``) to the
same rounds. Paddle runs at ``--paddle_threads`` (default: the CPUs available, as our CLIs' default
``--cpu_threads auto``), PyTorch at ``--threads``; ``--before`` adds the Paddle sides at Paddle's own
default of one thread to the same rounds (the state before ``--cpu_threads``).

``--camvid``: images/s of training on each CamVid config (``configs/*/*camvid_480x360*``): PaddleSeg's
data pipeline at the config's transforms (decode + augmentation of the 480x360 images) with
``--num_workers`` loader workers, the config's model, loss and optimizer, ``--camvid_iters`` timed
iterations after one untimed. Data: ``RTSEG_CAMVID_DIR`` or ``../shared/camvid``.

``--profile``: instead of timing, Paddle's profiler over two training steps of ours per family (the
operators by CPU time and their share of the step). Results: docs/training_speed.md.
"""
import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from paddle_rtseg import MKL_DISPATCH  # first: sets MKL's code path before Paddle loads
import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

from paddle_rtseg.cli import cpu_threads, malloc_tuning
from paddle_rtseg.cli.errors import run_cli, writable_dir
from paddle_rtseg.benchmarks.timing import SETTLE_S

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCH_SIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_side.py")
FAMILIES = ("seaformer", "segformer", "segformer_pp", "rtformer", "palquant")
TORCH_FAMILIES = {"seaformer": "seaformer", "segformer_pp": "segformer", "palquant": "palquant"}
IGNORE = 255


# ---------------------------------------------------------------- models

def build_ours(family, num_classes, tiny=False):
    """Our model for ``family`` (``tiny``: a few channels, for the tests)."""
    if family == "seaformer":
        from paddle_rtseg.models import seaformer
        if tiny:
            return seaformer.SeaFormerSeg(num_classes, seaformer.SeaFormer(
                [[(3, 1, 8, 1), (3, 2, 8, 2)], [(3, 2, 16, 2)], [(3, 2, 16, 2)], [(3, 2, 16, 2)],
                 [(3, 2, 24, 2)]], key_dims=[4, 4], depths=[1, 1], num_heads=2,
                mlp_ratios=[2, 2], stem_channels=8, drop_path_rate=0.0),
                head_channels=16, embed_dims=[8, 16])
        return seaformer.SeaFormerSeg(num_classes, seaformer.SeaFormer_tiny(drop_path_rate=0.0),
                                      **seaformer.HEADS["tiny"])
    if family in ("segformer", "segformer_pp"):
        from paddle_rtseg.models.mit import MiT_B0
        from paddle_rtseg.models.segformer_pp import SegFormerPP
        head = "paddleseg" if family == "segformer" else "mmseg"
        return SegFormerPP(num_classes, MiT_B0(), embedding_dim=256, head=head)
    if family == "rtformer":
        from paddle_rtseg.models import RTFormer
        return RTFormer(num_classes, **_rtformer_settings(tiny))
    if family == "palquant":
        from paddle_rtseg.models.palquant import PalQuantResNet
        return PalQuantResNet(18, groups=2, weight_levels=4, act_levels=4,
                              num_classes=num_classes, base_channels=2 if tiny else 16)
    raise ValueError(family)


def _rtformer_settings(tiny):
    if tiny:
        return dict(base_channels=8, head_channels=16, use_injection=[True, True])
    return dict(base_channels=32, head_channels=64, use_injection=[True, True])


def build_paddleseg(family, num_classes, tiny=False):
    """PaddleSeg's own model, or None where it has none."""
    if family == "segformer":
        from paddleseg.models import SegFormer
        from paddleseg.models.backbones.mix_transformer import MixVisionTransformer_B0
        return SegFormer(num_classes, MixVisionTransformer_B0(), embedding_dim=256)
    if family == "rtformer":
        from paddleseg.models import RTFormer
        return RTFormer(num_classes, **_rtformer_settings(tiny))
    return None


def optimizer(family, model):
    if family == "palquant":
        from paddle_rtseg.models.palquant import PalQuantOptimizer
        return PalQuantOptimizer()(model, 0.1)
    return paddle.optimizer.AdamW(1e-4, parameters=model.parameters(), weight_decay=0.01)


def logits_of(out):
    return out[0] if isinstance(out, (list, tuple)) else out


BEFORE = "ours (1 thread)"
STATIC = "ours (to_static)"


class with_threads:
    """``fn`` run with Paddle's CPU math threads set to ``n`` (a process-wide setting, so every
    Paddle candidate sets its own before it runs)."""

    def __init__(self, fn, n):
        self.run, self.n = getattr(fn, "run", fn), n

    def __call__(self):
        from paddle.base import core
        core.set_num_threads(self.n)
        return self.run()


def paddle_runner(model, opt, batch, family):
    """``(train, infer)``: each runs once and returns its milliseconds."""
    x, y = paddle.to_tensor(batch["x"]), paddle.to_tensor(batch["y"])
    x_infer = paddle.to_tensor(batch["x_infer"])

    def train():
        model.train()
        start = time.perf_counter()
        out = model(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        if family == "palquant":
            loss = F.cross_entropy(outs[0], y)
        else:
            loss = sum(F.cross_entropy(o, y, axis=1, ignore_index=IGNORE) for o in outs)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        return 1000.0 * (time.perf_counter() - start)

    def infer():
        model.eval()
        start = time.perf_counter()
        with paddle.no_grad():
            logits_of(model(x_infer)).numpy()
        return 1000.0 * (time.perf_counter() - start)

    return train, infer


# ---------------------------------------------------------------- the PyTorch child

def child_env(threads):
    """Our environment without what ``import paddle`` (and OpenCV) put there: Paddle sets
    ``OMP_NUM_THREADS=1`` and Intel OpenMP settings, OpenCV a library path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMP_", "QT_QPA_"))}
    env["OMP_NUM_THREADS"] = str(threads)
    paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and "cv2" not in p]
    env["LD_LIBRARY_PATH"] = ":".join(paths)
    return env


class TorchSide:
    """The authors' model in a child process (:mod:`.torch_side`)."""

    def __init__(self, python, authors_dir, family, work, num_classes, threads):
        cmd = [python, TORCH_SIDE, "--family", TORCH_FAMILIES[family], "--authors_dir",
               authors_dir, "--work", work, "--num_classes", str(num_classes),
               "--threads", str(threads)]
        self.work = work
        self.log = open(os.path.join(work, "torch_side.log"), "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=child_env(threads))
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.flush()
            with open(self.log.name) as f:
                tail = f.read()[-2000:]
            raise RuntimeError("the PyTorch side exited (status {}):\n{}".format(
                self.proc.returncode, tail))
        return json.loads(line)

    def ask(self, cmd):
        self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def state(self):
        data = np.load(os.path.join(self.work, "torch_state.npz"))
        return {k: data[k] for k in data.files}

    def logits(self):
        self.ask("logits")
        return np.load(os.path.join(self.work, "torch_logits.npy"))

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.log.close()


def load_converted(model, state):
    """Set ``model``'s weights from the authors' state dict (numpy, their names)."""
    converted = model.convert_torch_state_dict(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    wrong = sorted(k for k in own if k in converted
                   and list(np.shape(converted[k])) != list(own[k].shape))
    if missing or wrong:
        raise RuntimeError("the authors' weights do not fit our model: missing {}, other shapes "
                           "{}".format(missing[:5], wrong[:5]))
    model.set_state_dict({k: np.asarray(converted[k]).astype(str(own[k].dtype).replace(
        "paddle.", ""), copy=False) for k in own})


# ---------------------------------------------------------------- alternating rounds

def alternate(candidates, repeats, warmup=1, settle_s=SETTLE_S, seed=0):
    """``{name: [ms, ...]}``: ``candidates`` are ``{name: fn() -> ms}``; after ``warmup`` calls
    each, every round calls each candidate once, in an order shuffled from round to round, each
    call after a pause of ``settle_s`` (other runtimes' threads stop spinning)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    order = list(candidates)
    rng = random.Random(seed)
    for _ in range(repeats):
        for name in order:
            time.sleep(settle_s)
            times[name].append(float(candidates[name]()))
        rng.shuffle(order)
    return times


def paired_ratio(times, name, ref):
    """Median over rounds of ``name``/``ref`` in the same round."""
    return float(np.median(np.asarray(times[name]) / np.asarray(times[ref])))


# ---------------------------------------------------------------- one family

def make_batch(family, num_classes, batch_size, train_size, infer_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, 3, train_size, train_size)).astype("float32")
    if family == "palquant":
        y = rng.integers(0, num_classes, (batch_size,)).astype("int64")
    else:
        y = rng.integers(0, num_classes, (batch_size, train_size, train_size)).astype("int64")
    x_infer = rng.standard_normal((1, 3, infer_size, infer_size)).astype("float32")
    return dict(x=x, y=y, x_infer=x_infer)


def static_copy(model, family, num_classes, tiny):
    """A second instance of our model with the same weights, under ``paddle.jit.to_static``."""
    twin = build_ours(family, num_classes, tiny)
    twin.set_state_dict(model.state_dict())
    return twin, paddle.jit.to_static(twin)


def bench_family(family, args, log=print):
    """Rows for ``family``: ours against each available reference (train and inference)."""
    nc = args.num_classes
    with_torch = family in TORCH_FAMILIES and args.torch_python and args.authors_dir
    tiny = args.tiny and not with_torch  # the authors' side builds the real model
    batch = make_batch(family, nc, args.batch_size, args.train_size, args.infer_size)
    paddle.seed(0)
    ours = build_ours(family, nc, tiny)
    refs, rows, torch_side = {}, [], None
    ref_model = build_paddleseg(family, nc, tiny)
    if ref_model is not None:
        ours.set_state_dict(ref_model.state_dict())
        refs["PaddleSeg"] = ref_model
    work = None
    if family in TORCH_FAMILIES:
        if not with_torch:
            log("{}: the authors' PyTorch rows skipped (pass --torch_python VENV/bin/python "
                "--authors_dir DIR)".format(family))
        else:
            work = tempfile.mkdtemp(prefix="bench_train_")
            np.savez(os.path.join(work, "batch.npz"), **batch)
            torch_side = TorchSide(args.torch_python, args.authors_dir, family, work, nc,
                                   args.threads)
            load_converted(ours, torch_side.state())
    if not refs and torch_side is None:
        return rows
    try:
        candidates_train, candidates_infer = {}, {}
        threads = cpu_threads.resolve(args.paddle_threads)

        def add(name, model, n=threads):
            train, infer = paddle_runner(model, optimizer(family, model), batch, family)
            candidates_train[name] = with_threads(train, n)
            candidates_infer[name] = with_threads(infer, n)

        add("ours", ours)
        if args.before:
            candidates_train[BEFORE], candidates_infer[BEFORE] = (
                with_threads(candidates_train["ours"].run, 1),
                with_threads(candidates_infer["ours"].run, 1))
        diffs = {}
        ours.eval()
        with paddle.no_grad():
            mine = logits_of(ours(paddle.to_tensor(batch["x_infer"]))).numpy()
        for name, model in refs.items():
            model.eval()
            with paddle.no_grad():
                theirs = logits_of(model(paddle.to_tensor(batch["x_infer"]))).numpy()
            diffs[name] = float(np.abs(mine - theirs).max())
            add(name, model)
            if args.before:
                candidates_train[name + BEFORE], candidates_infer[name + BEFORE] = (
                    with_threads(candidates_train[name].run, 1),
                    with_threads(candidates_infer[name].run, 1))
        if torch_side is not None:
            name = "authors (PyTorch {})".format(torch_side.info.get("torch", "?"))
            diffs[name] = float(np.abs(mine - torch_side.logits()).max())
            candidates_train[name] = lambda: torch_side.ask("train")["ms"]
            candidates_infer[name] = lambda: torch_side.ask("infer")["ms"]
        if args.to_static:
            _, static = static_copy(ours, family, nc, tiny)
            add(STATIC, static)
        for kind, candidates in (("train step", candidates_train), ("inference", candidates_infer)):
            times = alternate(candidates, args.repeats)
            for name in candidates:
                if name.startswith("ours") or name.endswith(BEFORE):
                    continue
                row = dict(family=family, kind=kind, reference=name, paddle_threads=threads,
                           ours_ms=float(np.median(times["ours"])),
                           ref_ms=float(np.median(times[name])),
                           ratio=paired_ratio(times, "ours", name),
                           logit_diff=diffs[name],
                           size=(args.train_size if kind == "train step" else args.infer_size),
                           batch=(args.batch_size if kind == "train step" else 1))
                if STATIC in times:
                    row["static_ms"] = float(np.median(times[STATIC]))
                    row["static_ratio"] = paired_ratio(times, STATIC, name)
                if BEFORE in times:  # both Paddle sides at Paddle's default of 1 thread
                    ref_before = name + BEFORE if name + BEFORE in times else name
                    row["before_ours_ms"] = float(np.median(times[BEFORE]))
                    row["before_ref_ms"] = float(np.median(times[ref_before]))
                    row["before_ratio"] = float(np.median(
                        np.asarray(times[BEFORE]) / np.asarray(times[ref_before])))
                rows.append(row)
                log(format_row(row))
    finally:
        if torch_side is not None:
            torch_side.close()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return rows


# ---------------------------------------------------------------- profile

def profile_family(family, args, steps=2, top=25, log=print):
    """Paddle's profiler over ``steps`` training steps of our ``family`` model (after one untimed
    step): the operators by total CPU time, forward ops and their backward (``...GradNode``) nodes,
    and the share of the step they cover (the rest is Python and dygraph dispatch)."""
    import paddle.profiler as profiler

    batch = make_batch(family, args.num_classes, args.batch_size, args.train_size, args.infer_size)
    paddle.seed(0)
    model = build_ours(family, args.num_classes, args.tiny)
    if family == "palquant":
        from paddle_rtseg.layers.palquant_conv import init_quantizers
        init_quantizers(model, paddle.to_tensor(batch["x"]))
    train, _ = paddle_runner(model, optimizer(family, model), batch, family)
    train()
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU])
    prof.start()
    wall = 0.0
    for _ in range(steps):
        wall += train()
        prof.step()
    prof.stop()
    ops = {}
    for name, item in _operator_items(prof):
        ops[name] = ops.get(name, 0.0) + item
    total = sum(ops.values())
    log("profile {} ({} steps, batch {} at {}px, {:.0f} ms/step wall): operators cover {:.0f}% "
        "of the wall time".format(family, steps, args.batch_size, args.train_size, wall / steps,
                                  100.0 * total / max(wall, 1e-9)))
    for name, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
        log("  {:<44} {:9.1f} ms/step  {:5.1f}% of wall".format(name, ms / steps,
                                                                   100.0 * ms / max(wall, 1e-9)))
    return ops, wall


def _operator_items(prof):
    """``(operator name, total CPU ms)`` from a stopped profiler (its statistics tree)."""
    from paddle.profiler.profiler_statistic import StatisticData

    data = StatisticData(prof.profiler_result.get_data(), prof.profiler_result.get_extra_info())
    for thread_items in [data.event_summary.items]:
        for name, item in thread_items.items():
            yield name, item.cpu_time / 1e6  # ns -> ms


# ---------------------------------------------------------------- CamVid images/s

def camvid_dir():
    return os.environ.get("RTSEG_CAMVID_DIR") or os.path.join(REPO, "..", "shared", "camvid")


def camvid_images_per_s(config, iters, num_workers, root, to_static=False):
    """Training images/s of ``config`` on CamVid, data loading included; dygraph, or
    ``paddle.jit.to_static`` (the trainer's ``to_static_training``) with ``to_static``."""
    from paddleseg.cvlibs import Config, SegBuilder

    import paddle_rtseg  # noqa: F401  (registers our models)
    from paddle_rtseg.config import load_config

    cfg = load_config(config, opts=[
        "train_dataset.dataset_root=" + root,
        "train_dataset.train_path=" + os.path.join(root, "train.txt"),
        "val_dataset.dataset_root=" + root, "val_dataset.val_path=" + os.path.join(root, "val.txt")])
    assert isinstance(cfg, Config)
    builder = SegBuilder(cfg)
    model, dataset = builder.model, builder.train_dataset
    opt = builder.optimizer
    losses = builder.loss
    if to_static:
        model = paddle.jit.to_static(model)
    loader = paddle.io.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                  num_workers=num_workers, return_list=True)
    model.train()
    done, start, images = 0, None, 0
    for data in loader:
        if done == 1:
            start = time.perf_counter()
        x, y = data["img"], data["label"].astype("int64")
        logits = model(x)
        loss = sum(c * fn(o, y) for o, fn, c in zip(logits, losses["types"], losses["coef"]))
        loss.backward()
        opt.step()
        model.clear_gradients()
        float(loss)
        if done >= 1:
            images += int(x.shape[0])
        done += 1
        if done > iters:
            break
    return images / (time.perf_counter() - start)


def camvid_rows(args, log=print):
    root = camvid_dir()
    if not os.path.isfile(os.path.join(root, "train.txt")):
        log("CamVid images/s skipped: no {} (set RTSEG_CAMVID_DIR)".format(
            os.path.join(root, "train.txt")))
        return []
    rows = []
    for config in sorted(glob.glob(os.path.join(REPO, "configs", "*", "*camvid_480x360*.yml"))):
        name = os.path.relpath(config, REPO)
        from paddle_rtseg.config import load_config
        row = dict(config=name, workers=args.num_workers,
                   config_to_static=bool(load_config(config).to_static_training),
                   images_per_s=camvid_images_per_s(config, args.camvid_iters, args.num_workers,
                                                    root))
        if args.to_static:
            row["static_images_per_s"] = camvid_images_per_s(
                config, args.camvid_iters, args.num_workers, root, to_static=True)
        rows.append(row)
        log("camvid {config}: {images_per_s:.2f} images/s (workers {workers})".format(**row)
            + ("; to_static {:.2f}".format(row["static_images_per_s"]) if args.to_static else ""))
    return rows


# ---------------------------------------------------------------- output

def format_row(r):
    text = ("{family:<13} {kind:<10} vs {reference:<24} ours {ours_ms:8.1f} ms  ref {ref_ms:8.1f} ms"
            "  ratio {ratio:5.2f}x").format(**r)
    if "static_ms" in r:
        text += "  to_static {static_ms:8.1f} ms ({static_ratio:5.2f}x)".format(**r)
    if "before_ratio" in r:
        text += "  before (1 thread) {before_ours_ms:8.1f} / {before_ref_ms:8.1f} ms ({before_ratio:5.2f}x)".format(**r)
    return text + "  [{batch}x{size}x{size}, max |logit diff| {logit_diff:.1e}]".format(**r)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", choices=FAMILIES, default=list(FAMILIES),
                   help="families to time (none: only --camvid)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds")
    p.add_argument("--batch_size", type=int, default=2, help="training batch")
    p.add_argument("--train_size", type=int, default=224, help="training crop (square)")
    p.add_argument("--infer_size", type=int, default=512, help="inference input (square)")
    p.add_argument("--num_classes", type=int, default=11)
    p.add_argument("--threads", type=int, default=cpu_threads.available_cpus(),
                   help="PyTorch's CPU threads (default: the CPUs available, as PyTorch's own)")
    p.add_argument("--paddle_threads", default=cpu_threads.DEFAULT,
                   help="Paddle's CPU threads: 'auto' (default of our CLIs: the CPUs available) "
                        "or a number (1 = Paddle's own default, the 'before' of docs/training_speed.md)")
    p.add_argument("--to_static", action="store_true",
                   help="also time ours under paddle.jit.to_static")
    p.add_argument("--before", action="store_true",
                   help="also time the Paddle sides at Paddle's own default of 1 thread, in the "
                        "same rounds (the 'before' column of docs/training_speed.md)")
    p.add_argument("--torch_python", default=None,
                   help="python of a venv with torch (+ mmengine, mmcv-lite, tomesd for SegFormer++)")
    p.add_argument("--authors_dir", default=None,
                   help="folder with SeaFormer/, SegformerPlusPlus/, PalQuant/ (the authors' code)")
    p.add_argument("--camvid", action="store_true", help="also CamVid training images/s")
    p.add_argument("--camvid_iters", type=int, default=4)
    p.add_argument("--num_workers", type=int, default=0, help="CamVid loader workers")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing: Paddle's profiler over two training steps of ours, "
                        "per family (operators by CPU time)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: tiny widths
    p.add_argument("--save_dir", default="output/bench_train")
    args = p.parse_args(argv)
    if min(args.repeats, args.batch_size, args.camvid_iters, args.threads) < 1:
        p.error("--repeats, --batch_size, --camvid_iters and --threads must be at least 1")
    if args.torch_python and not os.path.isfile(args.torch_python):
        raise ValueError("--torch_python {} does not exist: pass the python of a venv with torch "
                         "(e.g. /tmp/torchref/bin/python)".format(args.torch_python))
    cpu_threads.resolve(args.paddle_threads)  # ValueError: one paragraph from run_cli
    if args.authors_dir and not os.path.isdir(args.authors_dir):
        raise ValueError("--authors_dir {} is not a folder: pass the folder holding SeaFormer/, "
                         "SegformerPlusPlus/ and PalQuant/".format(args.authors_dir))
    return args


def main(argv=None):
    args = parse_args(argv)
    writable_dir(args.save_dir)
    paddle_threads = cpu_threads.apply(args.paddle_threads)
    print("MKL: {}; malloc: {}; Paddle {}: {} threads; PyTorch: {} threads".format(
        MKL_DISPATCH, malloc_tuning.current(), paddle.__version__, paddle_threads, args.threads))
    if args.profile:
        return {family: profile_family(family, args)[0] for family in args.families}
    rows = []
    for family in args.families:
        rows += bench_family(family, args)
    camvid = camvid_rows(args) if args.camvid else []
    result = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rows=rows,
                  threads=args.threads, paddle_threads=paddle_threads,
                  camvid=camvid, argv=sys.argv[1:] if argv is None else list(argv))
    path = os.path.join(args.save_dir, "bench_train.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("results: " + path)
    return result


if __name__ == "__main__":
    run_cli(main)
