"""``python -m paddle_rtseg.train``: PaddleSeg's training front-end (same flags as tools/train.py).

Also runs data-parallel under ``python -m paddle.distributed.launch --nproc_per_node N
paddle_rtseg/cli/train.py ...`` (the launcher takes a script path; GPUs, or CPU processes over gloo). Checkpoints are written
atomically; a killed run resumes with ``--resume_model <save_dir>/iter_N``. The run owns ``--save_dir``
(:mod:`paddle_rtseg_runtime.run_lock`): a second run into it is refused, a killed run's lock and temporaries
are cleaned up by the next one.
"""
import argparse
import contextlib
import importlib
import os
import re

import paddle

import paddle_rtseg
from paddle_rtseg.weights.atomic import NonFiniteError, atomic_paddle_save
from paddle_rtseg.weights.checkpoints import check_resume_fits
from paddle_rtseg.datasets import check_dataset
from paddle_rtseg.cli import cpu_threads
from paddle_rtseg.cli.errors import TrainingError, run_cli, writable_dir
from paddle_rtseg_runtime.run_lock import run_folder


def add_common_args(parser):
    parser.add_argument("--config", required=True, help="PaddleSeg YAML config")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "xpu", "npu", "mlu"],
                        help="device (auto: gpu if Paddle was built with CUDA, else cpu)")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"],
                        help="fp16: automatic mixed precision (GPU)")
    parser.add_argument("--amp_level", default="O1", choices=["O1", "O2"])
    parser.add_argument("--opts", nargs="+", action="extend", default=None,
                        help="config overrides key=value, e.g. model.num_classes=19 batch_size=4")
    cpu_threads.add_argument(parser)


def resolve_device(device, threads=cpu_threads.DEFAULT):
    if device == "auto":
        device = "gpu" if paddle.is_compiled_with_cuda() else "cpu"
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise paddle_rtseg.ConfigError("--device gpu, but this Paddle has no CUDA support; install "
                                       "paddlepaddle-gpu or pass --device cpu")
    try:
        cpu_threads.apply(threads)  # Paddle's own default is 1 (cli/cpu_threads.py)
    except ValueError as e:
        raise paddle_rtseg.ConfigError(str(e)) from None
    paddle.set_device(device)
    return device


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--save_dir", default="./output", help="where checkpoints and logs go")
    parser.add_argument("--iters", type=int, default=None, help="overrides iters")
    parser.add_argument("--batch_size", type=int, default=None, help="per-card batch size")
    parser.add_argument("--learning_rate", type=float, default=None, help="overrides the lr")
    parser.add_argument("--save_interval", type=int, default=1000, help="iterations per checkpoint")
    parser.add_argument("--resume_model", default=None, help="a checkpoint folder <save_dir>/iter_N")
    parser.add_argument("--keep_checkpoint_max", type=int, default=5)
    parser.add_argument("--log_iters", type=int, default=10)
    parser.add_argument("--do_eval", action="store_true", help="evaluate at every checkpoint")
    parser.add_argument("--use_vdl", action="store_true", help="log to VisualDL")
    parser.add_argument("--use_ema", action="store_true", help="keep an EMA of the weights")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--profiler_options", default=None)
    return parser.parse_args(argv)


PARSER_DEFAULTS = {"num_workers": 0, "save_interval": 1000, "log_iters": 10,
                   "keep_checkpoint_max": 5}


def check_resume(path):
    if path is None:
        return None
    files = [os.path.join(path, n) for n in ("model.pdparams", "model.pdopt")]
    if not all(os.path.isfile(f) for f in files):
        parent = os.path.dirname(os.path.abspath(path))
        complete = sorted(
            (d for d in os.listdir(parent) if d.startswith("iter_")
             and all(os.path.isfile(os.path.join(parent, d, n))
                     for n in ("model.pdparams", "model.pdopt"))),
            key=lambda d: int(d.split("_")[-1])) if os.path.isdir(parent) else []
        raise FileNotFoundError(
            "--resume_model {} is not a complete checkpoint (it needs model.pdparams and "
            "model.pdopt). Complete checkpoints next to it: {}.".format(
                path, ", ".join(complete) or "none"))
    return path


def check_resume_iteration(path, iters):
    """PaddleSeg resumes at the iteration its folder is named after (``iter_N``); a folder named
    otherwise, or one at or past ``iters`` (nothing left to train: PaddleSeg's loop would end in a
    traceback), is one paragraph."""
    if path is None:
        return
    name = os.path.basename(os.path.normpath(path))
    match = re.fullmatch(r".*_(\d+)", name)
    if match is None:
        raise paddle_rtseg.ConfigError(
            "--resume_model {}: PaddleSeg reads the iteration to resume from the folder's name, "
            "which must end in _N (iter_N, as training writes it). Pass such a folder.".format(path))
    done = int(match.group(1))
    if done >= iters:
        raise paddle_rtseg.ConfigError(
            "--resume_model {} is at iteration {}, and the run is {} iterations long: nothing is "
            "left to train. Pass --iters larger than {} to train on.".format(path, done, iters, done))


CHECKPOINT_FILES = {"model.pdparams", "model.pdopt"}  # what PaddleSeg's trainer writes in iter_N/


def check_checkpoint_folders(save_dir):
    """PaddleSeg's trainer writes into ``iter_N/`` and its ``keep_checkpoint_max`` rotation deletes
    whole ``iter_N/`` folders (``shutil.rmtree``), a folder that was there before the run
    included: one holding anything besides a checkpoint (the user's notes, a sub-folder) is
    refused before training, so nothing of the user's is deleted."""
    if not os.path.isdir(save_dir):
        return
    for name in sorted(os.listdir(save_dir)):
        folder = os.path.join(save_dir, name)
        if not (re.fullmatch(r"iter_\d+", name) and os.path.isdir(folder)):
            continue
        foreign = sorted(n for n in os.listdir(folder) if n not in CHECKPOINT_FILES
                         and not n.startswith(".tmp"))
        if foreign:
            raise paddle_rtseg.ConfigError(
                "--save_dir {} has a folder {} holding {} besides a checkpoint; training writes and "
                "rotates iter_N/ folders (keep_checkpoint_max deletes whole folders), so it would "
                "be lost. Move it out, or pass another --save_dir.".format(
                    save_dir, name, ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")))


# flag: (minimum, what the value means) -- checked before anything is built
FLAG_MINIMUMS = {"num_workers": (0, "data-loader worker processes; 0 reads in the main process"),
                 "save_interval": (1, "iterations between checkpoints"),
                 "log_iters": (1, "iterations between log lines"),
                 "keep_checkpoint_max": (0, "checkpoints kept; 0 keeps all")}


def check_flags(args):
    """One paragraph for a flag out of its range (argparse checks only the type)."""
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed < 2 ** 32:  # numpy's and Paddle's seed range
        raise paddle_rtseg.ConfigError(
            "--seed must be between 0 and 4294967295 (2**32 - 1), got {}. Pass a seed in that "
            "range, or leave the flag out.".format(seed))
    for flag, (minimum, meaning) in FLAG_MINIMUMS.items():
        value = getattr(args, flag, None)
        if value is not None and value < minimum:
            raise paddle_rtseg.ConfigError(
                "--{} must be at least {} ({}), got {}. Pass a value of {} or more, or leave the "
                "flag out (default {}).".format(flag, minimum, meaning, value, minimum,
                                                PARSER_DEFAULTS.get(flag)))


def check_batches(dataset, batch_size, name="train_dataset"):
    """PaddleSeg's trainer drops the last incomplete batch of every epoch (``drop_last=True``), so
    a batch larger than the dataset (per card) gives no batch at all and it loops forever."""
    ranks = max(paddle.distributed.get_world_size(), 1)
    per_card = -(-len(dataset) // ranks)
    if per_card < batch_size:
        raise paddle_rtseg.ConfigError(
            "batch_size {} is larger than the {} ({} image(s){}): PaddleSeg drops every incomplete "
            "batch, so training would never get a batch and would loop forever. Pass --batch_size "
            "{} or less (or batch_size in the config), or add images.".format(
                batch_size, name, len(dataset), "" if ranks == 1 else
                ", {} per card on {} cards".format(per_card, ranks), per_card))


def _last_good_checkpoint(save_dir):
    done = sorted((d for d in os.listdir(save_dir) if d.startswith("iter_") and d[5:].isdigit()
                   and all(os.path.isfile(os.path.join(save_dir, d, n))
                           for n in ("model.pdparams", "model.pdopt"))),
                  key=lambda d: int(d[5:])) if os.path.isdir(save_dir) else []
    return os.path.join(save_dir, done[-1]) if done else None


def _diverged(args, detail):
    last = _last_good_checkpoint(args.save_dir)
    return TrainingError(
        "{} Training stopped{}. Lower --learning_rate ({}), or check the data and loss; "
        "{}.".format(detail, " at the first non-finite loss" if "loss" in detail else "",
                     "got {}".format(args.learning_rate) if args.learning_rate is not None
                     else "the config's lr_scheduler.learning_rate was used",
                     "the last checkpoint saved (all weights finite) is {} (resume with "
                     "--resume_model {})".format(
                         last, last) if last else "no checkpoint was saved before it diverged"))


def _stop_on_non_finite_loss(losses):
    """Forward hooks on every loss layer: a NaN/inf loss raises :class:`TrainingError` at once."""
    def hook(layer, inputs, output):
        if isinstance(output, paddle.Tensor) and not bool(paddle.isfinite(output).all()):
            raise _NonFiniteLoss("The loss ({}) became {}.".format(
                type(layer).__name__, float(output.astype("float32").sum())))
    return [layer.register_forward_post_hook(hook) for layer in (losses or {}).get("types", [])
            if isinstance(layer, paddle.nn.Layer)]


class _NonFiniteLoss(Exception):
    pass


def main(argv=None):
    args = parse_args(argv)
    check_flags(args)
    from paddleseg.utils import logger

    cfg = paddle_rtseg.load_config(args.config, learning_rate=args.learning_rate,
                                   batch_size=args.batch_size, iters=args.iters, opts=args.opts)
    resume = check_resume(args.resume_model)
    if paddle.distributed.get_rank() != 0:  # only rank 0 writes to --save_dir
        return _train(args, cfg, resume)
    existed = os.path.isdir(args.save_dir)
    check_checkpoint_folders(args.save_dir)
    writable_dir(args.save_dir)
    try:
        # PaddleSeg's trainer writes iter_N/ and best_model/ (and files at the top): exports and
        # predictions into other sub-folders of the same --save_dir may run beside it
        with run_folder(args.save_dir, log=logger.warning, writes=("iter_*", "best_model")):
            return _train(args, cfg, resume)
    except BaseException:
        if not existed:  # a refused run leaves no empty --save_dir behind
            with contextlib.suppress(OSError):
                os.rmdir(args.save_dir)
        raise


def _train(args, cfg, resume):
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import logger, utils

    device = resolve_device(args.device, args.cpu_threads)
    utils.set_seed(args.seed)
    utils.set_cv2_num_threads(args.num_workers)
    builder = SegBuilder(cfg)
    model = builder.model
    if resume:
        check_resume_fits(model, resume)  # what the checkpoint holds first, then where it is
        check_resume_iteration(resume, cfg.iters)
    if device == "gpu" and paddle.distributed.get_world_size() > 1:
        model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_dataset = check_dataset(builder.train_dataset, "train_dataset")
    check_batches(train_dataset, cfg.batch_size)
    val_dataset = check_dataset(builder.val_dataset, "val_dataset") if args.do_eval else None
    logger.info("\n---------------Config Information---------------\n{}".format(cfg))
    train = importlib.import_module("paddleseg.core.train").train
    hooks = _stop_on_non_finite_loss(builder.loss)
    try:
        with atomic_paddle_save(finite=True):
            _run_train(train, model, args, cfg, resume, train_dataset, val_dataset, builder)
    except _NonFiniteLoss as e:
        raise _diverged(args, str(e)) from None
    except NonFiniteError as e:
        raise _diverged(args, str(e)) from None
    finally:
        for h in hooks:
            h.remove()


def _run_train(train, model, args, cfg, resume, train_dataset, val_dataset, builder):
    train(model, train_dataset, val_dataset=val_dataset, optimizer=builder.optimizer,
          save_dir=args.save_dir, iters=cfg.iters, batch_size=cfg.batch_size,
          resume_model=resume, save_interval=args.save_interval, log_iters=args.log_iters,
          num_workers=args.num_workers, use_vdl=args.use_vdl, use_ema=args.use_ema,
          losses=builder.loss, keep_checkpoint_max=args.keep_checkpoint_max,
          test_config=cfg.test_config, precision=args.precision, amp_level=args.amp_level,
          profiler_options=args.profiler_options, to_static_training=cfg.to_static_training)


if __name__ == "__main__":
    run_cli(main)
