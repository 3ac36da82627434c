"""``python -m paddle_rtseg.val``: evaluate a checkpoint (mIoU, per-class IoU), PaddleSeg's flags.

Flip and multi-scale testing (``--aug_eval --flip_horizontal --scales 0.75 1.0 1.25``) and sliding
windows (``--is_slide --crop_size W H --stride W H``) are PaddleSeg's own inference paths.
"""
import argparse

import paddle_rtseg
from paddle_rtseg.datasets import check_dataset
from paddle_rtseg.cli.errors import run_cli
from paddle_rtseg.cli.train import add_common_args, resolve_device


def add_inference_args(parser):
    parser.add_argument("--model_path", required=True,
                        help="checkpoint: PaddleSeg .pdparams or the authors' PyTorch .pth")
    parser.add_argument("--aug_eval", "--aug_pred", dest="aug", action="store_true",
                        help="multi-scale and/or flip test-time augmentation")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0])
    parser.add_argument("--flip_horizontal", action="store_true")
    parser.add_argument("--flip_vertical", action="store_true")
    parser.add_argument("--is_slide", action="store_true", help="sliding-window inference")
    parser.add_argument("--crop_size", nargs=2, type=int, default=None, help="window W H")
    parser.add_argument("--stride", nargs=2, type=int, default=None, help="window stride W H")
    parser.add_argument("--to_static", action="store_true",
                        help="run the model through paddle.jit.to_static (same outputs; pays a "
                             "one-off conversion per input shape: docs/training_speed.md)")


def maybe_static(model, to_static):
    """``paddle.jit.to_static(model)`` when asked (tests/test_speedups.py: same logits)."""
    if not to_static:
        return model
    import paddle
    return paddle.jit.to_static(model)


def check_slide(args):
    if args.is_slide and (args.crop_size is None or args.stride is None):
        raise paddle_rtseg.ConfigError("--is_slide needs --crop_size W H and --stride W H")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    add_inference_args(parser)
    args = parser.parse_args(argv)
    check_slide(args)
    from paddleseg.core import evaluate
    from paddleseg.cvlibs import SegBuilder

    cfg = paddle_rtseg.load_config(args.config, opts=args.opts)
    resolve_device(args.device, args.cpu_threads)
    builder = SegBuilder(cfg)
    model = builder.model
    paddle_rtseg.load_checkpoint(model, args.model_path)
    model = maybe_static(model, args.to_static)
    val_dataset = check_dataset(builder.val_dataset, "val_dataset")
    if val_dataset is None:
        raise paddle_rtseg.ConfigError("{} has no val_dataset to evaluate on".format(args.config))
    test_config = dict(cfg.test_config or {})
    test_config.update(aug_eval=args.aug, scales=args.scales if args.aug else 1.0,
                       flip_horizontal=args.flip_horizontal, flip_vertical=args.flip_vertical,
                       is_slide=args.is_slide or test_config.get("is_slide", False))
    if args.is_slide:
        test_config.update(crop_size=args.crop_size, stride=args.stride)
    miou, acc, class_iou, _, kappa = evaluate(
        model, val_dataset, num_workers=args.num_workers, precision=args.precision,
        amp_level=args.amp_level, **test_config)
    return dict(miou=float(miou), acc=float(acc), class_iou=[float(v) for v in class_iou],
                kappa=float(kappa))


if __name__ == "__main__":
    run_cli(main)
