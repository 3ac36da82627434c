"""``python -m paddle_rtseg.train``: PaddleSeg's training front-end (same flags as tools/train.py).

Also runs data-parallel under ``python -m paddle.distributed.launch --nproc_per_node N
paddle_rtseg/train.py ...`` (the launcher takes a script path; GPUs, or CPU processes over gloo). Checkpoints are written
atomically; a killed run resumes with ``--resume_model <save_dir>/iter_N``. The run owns ``--save_dir``
(:mod:`paddle_rtseg.deployment.run_lock`): a second run into it is refused, a killed run's lock and temporaries
are cleaned up by the next one.
"""
import argparse
import importlib
import os

import paddle

import paddle_rtseg
from paddle_rtseg.atomic import atomic_paddle_save
from paddle_rtseg.checkpoints import check_resume_fits
from paddle_rtseg.datasets import check_dataset
from paddle_rtseg.errors import run_cli, writable_dir
from paddle_rtseg.deployment.run_lock import run_folder


def add_common_args(parser):
    parser.add_argument("--config", required=True, help="PaddleSeg YAML config")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "xpu", "npu", "mlu"],
                        help="device (auto: gpu if Paddle was built with CUDA, else cpu)")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"],
                        help="fp16: automatic mixed precision (GPU)")
    parser.add_argument("--amp_level", default="O1", choices=["O1", "O2"])
    parser.add_argument("--opts", nargs="+", default=None,
                        help="config overrides key=value, e.g. model.num_classes=19 batch_size=4")


def resolve_device(device):
    if device == "auto":
        device = "gpu" if paddle.is_compiled_with_cuda() else "cpu"
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise paddle_rtseg.ConfigError("--device gpu, but this Paddle has no CUDA support; install "
                                       "paddlepaddle-gpu or pass --device cpu")
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


def main(argv=None):
    args = parse_args(argv)
    from paddleseg.utils import logger

    cfg = paddle_rtseg.load_config(args.config, learning_rate=args.learning_rate,
                                   batch_size=args.batch_size, iters=args.iters, opts=args.opts)
    resume = check_resume(args.resume_model)
    if paddle.distributed.get_rank() != 0:  # only rank 0 writes to --save_dir
        return _train(args, cfg, resume)
    writable_dir(args.save_dir)
    with run_folder(args.save_dir, log=logger.warning):
        return _train(args, cfg, resume)


def _train(args, cfg, resume):
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import logger, utils

    device = resolve_device(args.device)
    utils.set_seed(args.seed)
    utils.set_cv2_num_threads(args.num_workers)
    builder = SegBuilder(cfg)
    model = builder.model
    if resume:
        check_resume_fits(model, resume)
    if device == "gpu" and paddle.distributed.get_world_size() > 1:
        model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_dataset = check_dataset(builder.train_dataset, "train_dataset")
    val_dataset = check_dataset(builder.val_dataset, "val_dataset") if args.do_eval else None
    logger.info("\n---------------Config Information---------------\n{}".format(cfg))
    train = importlib.import_module("paddleseg.core.train").train
    with atomic_paddle_save():
        train(model, train_dataset, val_dataset=val_dataset, optimizer=builder.optimizer,
              save_dir=args.save_dir, iters=cfg.iters, batch_size=cfg.batch_size,
              resume_model=resume, save_interval=args.save_interval, log_iters=args.log_iters,
              num_workers=args.num_workers, use_vdl=args.use_vdl, use_ema=args.use_ema,
              losses=builder.loss, keep_checkpoint_max=args.keep_checkpoint_max,
              test_config=cfg.test_config, precision=args.precision, amp_level=args.amp_level,
              profiler_options=args.profiler_options, to_static_training=cfg.to_static_training)


if __name__ == "__main__":
    run_cli(main)
