"""``python -m paddle_rtseg.predict``: segment an image, a folder or a file list; write PNGs.

For every input image ``<name>.<ext>`` it writes, under ``--save_dir``, what PaddleSeg's predict
writes: ``pseudo_color_prediction/<name>.png`` (palette PNG: pixel values are the class ids, the
palette is PaddleSeg's colours, so it is both a picture and the label map) and
``added_prediction/<name>.<ext>`` (the image blended 0.6/0.4 with the colour mask); with
``--save_label`` also ``label/<name>.png`` (grayscale class ids). The files are made by the same code
as the deploy runners' (``paddle_rtseg_runtime.visualize``) and written atomically; the run owns
``--save_dir`` (:mod:`paddle_rtseg_runtime.run_lock`).
"""
import argparse
import os

import numpy as np
import paddle

import paddle_rtseg
from paddle_rtseg_runtime import (IMAGE_EXTENSIONS, FrameSource, add_video_args,
                                     check_inputs_kept, color_map, encode, output_names, overlay,
                                     pseudo_color_png, segment_video, video_input,
                                     write_bytes_atomic)
from paddle_rtseg.datasets.checked_io import DataError, read_image
from paddle_rtseg.cli.errors import run_cli, writable_dir
from paddle_rtseg_runtime.run_lock import run_folder
from paddle_rtseg.cli.train import add_common_args, resolve_device
from paddle_rtseg.cli.val import add_inference_args, check_slide, maybe_static

LIST_SUFFIXES = (".txt", ".lst")


def list_images(path):
    """(list of image paths, root used to name outputs) from an image, a folder or a list file."""
    if os.path.isdir(path):
        images = sorted(os.path.join(root, f) for root, _, files in os.walk(path)
                        for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        root = path
    elif os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
        images, root = [path], os.path.dirname(path)
    elif os.path.isfile(path) and path.lower().endswith(LIST_SUFFIXES):
        root = os.path.dirname(path)
        try:
            with open(path) as f:
                images = [os.path.join(root, line.split()[0]) for line in f if line.strip()]
        except UnicodeDecodeError:
            raise DataError("--image_path {} is not a text list of images".format(path)) from None
    elif os.path.isfile(path):
        raise DataError("--image_path {} is neither an image ({}) nor a list file ({})".format(
            path, ", ".join(IMAGE_EXTENSIONS), ", ".join(LIST_SUFFIXES)))
    else:
        raise FileNotFoundError("--image_path {} does not exist; give an image, a folder of images "
                                "or a text file listing images".format(path))
    if not images:
        raise DataError("--image_path {} contains no images ({})".format(
            path, ", ".join(IMAGE_EXTENSIONS)))
    return images, root


def infer_one(model, transforms, image, aug=False, scales=1.0, flip_horizontal=False,
              flip_vertical=False, is_slide=False, stride=None, crop_size=None):
    """``H x W`` uint8 class map of one BGR image (PaddleSeg's inference / aug_inference)."""
    from paddleseg.core import infer
    data = transforms({"img": image.copy(), "trans_info": []})
    x = paddle.to_tensor(data["img"][None])
    kwargs = dict(trans_info=data["trans_info"], is_slide=is_slide, stride=stride,
                  crop_size=crop_size)
    if aug:
        pred, _ = infer.aug_inference(model, x, scales=scales, flip_horizontal=flip_horizontal,
                                      flip_vertical=flip_vertical, **kwargs)
    else:
        pred, _ = infer.inference(model, x, **kwargs)
    return paddle.squeeze(pred).numpy().astype("uint8")


def predict_video(model, transforms, path, save_dir, palette, fps=None, **infer_kwargs):
    """Segment a video file, or a folder of frames, into ``<save_dir>/<name>.mp4``
    (``paddle_rtseg_runtime/video.py``); returns its path."""
    import time

    images = list_images(path)[0] if os.path.isdir(path) else None
    source = FrameSource(path, images, lambda p: read_image(p).astype(np.uint8))
    model.eval()

    def segment(frame):
        start = time.perf_counter()
        pred = infer_one(model, transforms, frame.astype("float32"), **infer_kwargs)
        return pred, time.perf_counter() - start

    backend = "paddle-dygraph-" + paddle.get_device().split(":")[0]
    with paddle.no_grad():  # predict runs the model in float32 (its --precision is not applied)
        return segment_video(source, segment, save_dir, palette, backend, "fp32", fps=fps)[0]


def output_files(rel):
    """(mask, overlay, label) paths under --save_dir of the input named ``rel`` (PaddleSeg's names:
    the overlay keeps the input's file name)."""
    name = os.path.splitext(rel)[0] + ".png"
    return (os.path.join("pseudo_color_prediction", name), os.path.join("added_prediction", rel),
            os.path.join("label", name))


def predict(model, transforms, images, root, save_dir, palette, save_label=False, aug=False,
            scales=1.0, flip_horizontal=False, flip_vertical=False, is_slide=False, stride=None,
            crop_size=None):
    """Run ``model`` on ``images`` and write the masks and overlays (``palette``: ``N x 3`` RGB, see
    :func:`paddle_rtseg_runtime.color_map`); returns the list of written mask paths."""
    from paddleseg.utils import progbar

    model.eval()
    written = []
    names = output_names(images, root)  # refuses two inputs that would write the same outputs
    bar = progbar.Progbar(target=len(images), verbose=1)
    with paddle.no_grad():
        for i, (path, rel) in enumerate(zip(images, names)):
            image = read_image(path)
            pred = infer_one(model, transforms, image, aug, scales, flip_horizontal, flip_vertical,
                             is_slide, stride, crop_size)
            mask, added, label = output_files(rel)
            outputs = {mask: pseudo_color_png(pred, palette),
                       added: encode(overlay(image.astype(np.uint8), pred, palette),
                                     os.path.splitext(rel)[1], rel)}
            if save_label:
                outputs[label] = encode(pred, ".png", rel)
            for target, data in outputs.items():
                write_bytes_atomic(os.path.join(save_dir, target), data)
            written.append(os.path.join(save_dir, mask))
            bar.update(i + 1)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    add_inference_args(parser)
    parser.add_argument("--image_path", default=None,
                        help="an image, a folder, a list file or a video file")
    parser.add_argument("--save_dir", default="./output/result")
    parser.add_argument("--save_label", action="store_true", help="also write raw class-id PNGs")
    parser.add_argument("--custom_color", nargs="+", type=int, default=None,
                        help="palette as R G B R G B ... (one triple per class)")
    add_video_args(parser)
    args = parser.parse_args(argv)
    check_slide(args)
    video = video_input(args)
    from paddleseg.utils import logger

    images, root = (None, None) if video else list_images(args.image_path)
    if images:  # two inputs writing the same outputs, or an output over an input: refused first
        check_inputs_kept(images, [os.path.join(args.save_dir, f) for rel in output_names(
            images, root) for f in output_files(rel)])
    writable_dir(args.save_dir)
    with run_folder(args.save_dir, log=logger.warning):
        return _predict(args, video, images, root)


def _predict(args, video, images, root):
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.transforms import Compose
    from paddleseg.utils import logger

    cfg = paddle_rtseg.load_config(args.config, opts=args.opts)
    resolve_device(args.device, args.cpu_threads)
    builder = SegBuilder(cfg)
    model = builder.model
    paddle_rtseg.load_checkpoint(model, args.model_path)
    model = maybe_static(model, args.to_static)
    transforms = Compose(builder.val_transforms)
    palette = color_map(256, custom_color=args.custom_color)
    if video:
        return predict_video(model, transforms, video, args.save_dir, palette, args.video_fps,
                             aug=args.aug, scales=args.scales, flip_horizontal=args.flip_horizontal,
                             flip_vertical=args.flip_vertical, is_slide=args.is_slide,
                             stride=args.stride, crop_size=args.crop_size)
    written = predict(model, transforms, images, root, args.save_dir, palette, args.save_label,
                      args.aug, args.scales, args.flip_horizontal, args.flip_vertical,
                      args.is_slide, args.stride, args.crop_size)
    logger.info("Wrote {} predictions to {}".format(len(written), args.save_dir))
    return written


if __name__ == "__main__":
    run_cli(main)
