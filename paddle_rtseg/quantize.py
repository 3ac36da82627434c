"""int8 for Paddle Lite ARM: post-training quantization and Lite's weight quantization, measured.

    python -m paddle_rtseg.quantize --config CFG --model_path trained.pdparams --save_dir DIR \
        [--calib_batches 16] [--algo KL|hist|avg|abs_max|mse] [--opts key=value ...]

1. Exports the fp32 model (legacy format, dynamic shapes, logits out) to ``DIR/fp32``.
2. Static post-training quantization with Paddle's own API,
   ``paddle.static.quantization.PostTrainingQuantization`` (Paddle 3.0 in legacy static mode; PaddleSlim
   is not needed and its releases do not support Paddle 3.0's program format): activations calibrated
   on training images, weights per-channel abs-max, conv2d/depthwise_conv2d/matmul_v2 quantized;
   saved with fake-quant ops to ``DIR/ptq_int8`` (what Paddle Lite turns into int8 ARM kernels).
3. ``paddle_lite_opt`` to ARM ``.nb`` for fp32, PTQ int8 and weight-only int8
   (``--quant_model=true --quant_type=QUANT_INT8``), plus x86 ``.nb`` where x86 kernels exist.
4. mIoU on the config's validation set for each variant this machine can run (PTQ: simulated
   quantization in Paddle Inference; weight-int8: Lite x86 runtime, which de-quantizes weights at
   load) and the size of every artifact.

Paddle picks the static-graph format when it is imported, so like the exporter this re-runs itself
with ``FLAGS_enable_pir_api=0`` when needed.
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

from . import deployment as du
from .deploy_all import format_table


def miou(predictor, pairs, transforms, num_classes, ignore_index=255):
    """Mean IoU over ``(image path, label path)`` pairs (argmax of the predictor's logits)."""
    from .datasets.checked_io import read_label
    hist = np.zeros((num_classes, num_classes), np.int64)
    for image_path, label_path in pairs:
        image = du.read_image(image_path)
        label = read_label(label_path).astype(np.int64)
        pred = du.to_label_map(predictor(du.preprocess(image, transforms)), "none",
                               label.shape).astype(np.int64)
        keep = (label != ignore_index) & (label < num_classes)
        hist += np.bincount(num_classes * label[keep] + pred[keep],
                            minlength=num_classes ** 2).reshape(num_classes, num_classes)
    iou = np.diag(hist) / np.maximum(hist.sum(0) + hist.sum(1) - np.diag(hist), 1)
    return float(iou[hist.sum(1) > 0].mean())


def post_training_quantize(fp32_dir, out_dir, calib_batches, algo):
    """Paddle's static PTQ on the exported program; returns ``out_dir`` (a deployable dir)."""
    import paddle
    from paddle.static.quantization import PostTrainingQuantization

    def data_loader():  # Paddle 3.0's PTQ asserts a data_loader: a callable yielding feed dicts
        for x in calib_batches:
            yield {"x": x}

    paddle.enable_static()
    try:
        ptq = PostTrainingQuantization(
            executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=fp32_dir,
            model_filename="model.pdmodel", params_filename="model.pdiparams",
            data_loader=data_loader, batch_nums=len(calib_batches), algo=algo,
            quantizable_op_type=["conv2d", "depthwise_conv2d", "matmul_v2"],
            weight_quantize_type="channel_wise_abs_max", onnx_format=False)
        ptq.quantize()
        ptq.save_quantized_model(out_dir, model_filename="model.pdmodel",
                                 params_filename="model.pdiparams")
    finally:
        paddle.disable_static()
    shutil.copy(os.path.join(fp32_dir, "deploy.yaml"), os.path.join(out_dir, "deploy.yaml"))
    from .export import _patch_for_lite
    _patch_for_lite(os.path.join(out_dir, "model.pdmodel"))
    return out_dir


def _size_mb(path):
    return os.path.getsize(path) / 2 ** 20


def run(args):
    from paddleseg.cvlibs import SegBuilder
    from .config import load_config
    from .export import export

    cfg = load_config(args.config, opts=args.opts)
    builder = SegBuilder(cfg)
    val = builder.val_dataset  # generates the synthetic set on first use
    train = builder.train_dataset if cfg.dic.get("train_dataset") else val
    num_classes = val.num_classes
    val_pairs = [tuple(p) for p in val.file_list][: args.val_images]
    calib_pairs = [tuple(p) for p in train.file_list][: args.calib_batches]

    fp32_dir = os.path.join(args.save_dir, "fp32")
    export(args.config, fp32_dir, args.model_path, output_op="none", fmt="legacy", opts=args.opts)
    transforms = du.read_deploy_yaml(fp32_dir)["transforms"]
    calib = [du.preprocess(du.read_image(p), transforms) for p, _ in calib_pairs]
    ptq_dir = post_training_quantize(fp32_dir, os.path.join(args.save_dir, "ptq_int8"), calib,
                                     args.algo)

    rows, notes = [], []

    def lite(model_dir, target, quant=None, tag=""):
        out = os.path.join(args.save_dir, "lite_{}_{}".format(tag, target))
        try:
            return du.convert_lite(model_dir, out, target, quant)
        except du.DeployError as e:
            notes.append("{} {}: {}".format(tag, target, str(e).splitlines()[0]))
            return None

    fp32_params = _size_mb(os.path.join(fp32_dir, "model.pdiparams"))
    variants = [
        ("fp32", "Paddle Inference", du.PaddleInferencePredictor(fp32_dir, use_mkldnn=False),
         fp32_params, lite(fp32_dir, "arm", tag="fp32"), lite(fp32_dir, "x86", tag="fp32")),
        ("PTQ int8 (Paddle static PTQ, {})".format(args.algo),
         "Paddle Inference (simulated int8)",
         du.PaddleInferencePredictor(ptq_dir, use_mkldnn=False),
         _size_mb(os.path.join(ptq_dir, "model.pdiparams")),
         lite(ptq_dir, "arm", tag="ptq"), lite(ptq_dir, "x86", tag="ptq")),
        ("weight-only int8 (Lite --quant_model)", "Paddle Lite x86", None, None,
         lite(fp32_dir, "arm", "QUANT_INT8", tag="wint8"),
         lite(fp32_dir, "x86", "QUANT_INT8", tag="wint8")),
    ]
    base = None
    for name, runtime, predictor, params_mb, arm_nb, x86_nb in variants:
        if predictor is None and x86_nb:
            predictor = du.LitePredictor(x86_nb)
        score = miou(predictor, val_pairs, transforms, num_classes) if predictor else float("nan")
        base = score if base is None else base
        rows.append([name, runtime, "{:.2f}".format(100 * score),
                     "{:+.2f}".format(100 * (score - base)),
                     "{:.2f}".format(params_mb) if params_mb else "",
                     "{:.2f}".format(_size_mb(arm_nb)) if arm_nb else "failed",
                     "{:.2f}".format(_size_mb(x86_nb)) if x86_nb else "failed"])
    for tag, name in (("fp32", "fp32"), ("ptq", "PTQ int8")):  # the .nb files themselves
        nb = os.path.join(args.save_dir, "lite_{}_x86.nb".format(tag))
        if os.path.isfile(nb):
            score = miou(du.LitePredictor(nb), val_pairs, transforms, num_classes)
            rows.append([name, "Paddle Lite x86 .nb", "{:.2f}".format(100 * score),
                         "{:+.2f}".format(100 * (score - base)), "", "", ""])
    print(format_table(["variant", "evaluated with", "mIoU (%)", "change", "params file (MB)",
                        "ARM .nb (MB)", "x86 .nb (MB)"], rows))
    print("validation images: {}, calibration images: {}".format(len(val_pairs), len(calib)))
    for note in notes:
        print("note: " + note)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--model_path", required=True, help="trained .pdparams")
    parser.add_argument("--save_dir", default="output/quantize")
    parser.add_argument("--calib_batches", type=int, default=16,
                        help="calibration images (batch 1 each) from the training list")
    parser.add_argument("--val_images", type=int, default=1000)
    parser.add_argument("--algo", default="KL", choices=["KL", "hist", "avg", "abs_max", "mse"])
    parser.add_argument("--opts", nargs="+", default=None)
    args = parser.parse_args(argv)
    from .export import pir_active
    if pir_active():
        env = dict(os.environ, FLAGS_enable_pir_api="0")
        return subprocess.call([sys.executable, "-m", "paddle_rtseg.quantize"] +
                               (argv if argv is not None else sys.argv[1:]), env=env)
    from .errors import run_cli
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
