"""``python -m paddle_rtseg.demo`` (``make demo``): the whole workflow on the bundled synthetic data.

Generates the dataset, trains RTFormer-Slim for a few minutes on the CPU, evaluates it, predicts the
validation images (colour masks + overlays as PNG), writes a side-by-side grid image and prints a
summary. Everything goes under ``--save_dir``.
"""
import argparse
import glob
import os
import time

import cv2
import numpy as np

from paddle_rtseg.cli import predict as predict_cli
from paddle_rtseg.cli import train as train_cli
from paddle_rtseg.cli import val as val_cli
from paddle_rtseg.cli.errors import run_cli, writable_dir
from paddle_rtseg_runtime.run_lock import run_folder

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")


def grid(image_paths, label_paths, pred_paths, out_path, rows=4):
    """Rows of (image | ground truth | prediction overlay) written as one PNG."""
    from paddleseg.utils import visualize
    palette = np.asarray(visualize.get_color_map_list(256), np.uint8).reshape(-1, 3)[:, ::-1]
    tiles = []
    for image, label, pred in list(zip(image_paths, label_paths, pred_paths))[:rows]:
        truth = palette[cv2.imread(label, cv2.IMREAD_UNCHANGED)]
        tiles.append(np.hstack([cv2.imread(image), truth, cv2.imread(pred)]))
    cv2.imwrite(out_path, cv2.resize(np.vstack(tiles), None, fx=2, fy=2,
                                     interpolation=cv2.INTER_NEAREST))
    return out_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save_dir", default="output/demo")
    parser.add_argument("--iters", type=int, default=300, help="training iterations (~0.5 s each)")
    parser.add_argument("--config", default=CONFIG)
    args = parser.parse_args(argv)
    writable_dir(args.save_dir)
    with run_folder(args.save_dir):
        return _demo(args)


def _demo(args):
    data_root = os.path.join(args.save_dir, "data", "synthetic")
    opts = ["train_dataset.dataset_root=" + data_root, "val_dataset.dataset_root=" + data_root]
    train_dir = os.path.join(args.save_dir, "train")
    start = time.time()
    train_cli.main(["--config", args.config, "--iters", str(args.iters), "--save_dir", train_dir,
                    "--save_interval", str(args.iters), "--log_iters", "20", "--seed", "0",
                    "--opts", *opts])
    train_time = time.time() - start
    model_path = os.path.join(train_dir, "iter_{}".format(args.iters), "model.pdparams")
    metrics = val_cli.main(["--config", args.config, "--model_path", model_path, "--opts", *opts])
    pred_dir = os.path.join(args.save_dir, "predictions")
    val_images = sorted(glob.glob(os.path.join(data_root, "images", "val_*.jpg")))
    predict_cli.main(["--config", args.config, "--model_path", model_path, "--image_path",
                      os.path.join(data_root, "val.txt"), "--save_dir", pred_dir, "--opts", *opts])
    overlays = [os.path.join(pred_dir, "added_prediction", "images", os.path.basename(p))
                for p in val_images]
    labels = [os.path.join(data_root, "labels", os.path.basename(p)[:-4] + ".png")
              for p in val_images]
    figure = grid(val_images, labels, overlays, os.path.join(args.save_dir, "demo_grid.png"))
    print("\n===== paddle_rtseg demo =====")
    print("model        RTFormer-Slim ({}), {} iterations in {:.0f} s".format(
        os.path.relpath(args.config), args.iters, train_time))
    print("val mIoU     {:.4f}   (pixel accuracy {:.4f}, kappa {:.4f})".format(
        metrics["miou"], metrics["acc"], metrics["kappa"]))
    print("class IoU    " + "  ".join("{:.3f}".format(v) for v in metrics["class_iou"]))
    print("checkpoint   " + model_path)
    print("predictions  " + pred_dir + "  (pseudo_color_prediction/, added_prediction/)")
    print("figure       " + figure + "  (image | ground truth | prediction)")
    return metrics


if __name__ == "__main__":
    run_cli(main)
