"""A synthetic segmentation dataset generated on the fly, in PaddleSeg's file-list layout.

Textured shapes (disc, box, triangle, ring) on a noisy textured background, with an "occluded"
rectangle labelled ``ignore_index``. Class identity is carried by shape *and* texture/colour (with
jitter), so a model must use context, not a single pixel's colour, to be right everywhere.

Layout written under ``dataset_root``: ``images/*.jpg``, ``labels/*.png`` (class ids),
``train.txt`` and ``val.txt`` ("image label" per line), ``meta.yml`` (the generator arguments).
Generation is atomic (a temporary folder renamed into place), so concurrent processes (distributed
training) and interrupted runs never see half a dataset.
"""
import os
import shutil
import tempfile

import cv2
import numpy as np
import yaml
from paddleseg.cvlibs import manager
from paddleseg.datasets import Dataset
from paddleseg.utils import logger

from paddle_rtseg_runtime.files import default_mode
from ..registry import register

CLASS_NAMES = ("background", "disc", "box", "triangle", "ring")
# Base colour (BGR) per foreground class; each sample jitters it.
_CLASS_COLOURS = {1: (60, 60, 200), 2: (60, 190, 60), 3: (200, 90, 40), 4: (40, 190, 210)}


def _texture(rng, size, kind):
    """A [0,1] texture map of ``kind``: stripes, checks, or blotches."""
    yy, xx = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
    period = rng.uniform(5, 11)
    angle = rng.uniform(0, np.pi)
    if kind == "stripes":
        t = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    elif kind == "checks":
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    else:
        t = cv2.GaussianBlur(rng.random(size).astype(np.float32), (0, 0), rng.uniform(2, 4))
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    return t


def _shape_mask(rng, cls, size):
    h, w = size
    mask = np.zeros(size, np.uint8)
    cx, cy = int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h)
    r = int(rng.uniform(0.12, 0.25) * min(h, w))
    if cls == 1:
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif cls == 2:
        cv2.rectangle(mask, (cx - r, cy - int(0.7 * r)), (cx + r, cy + int(0.7 * r)), 1, -1)
    elif cls == 3:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    else:
        cv2.circle(mask, (cx, cy), r, 1, -1)
        cv2.circle(mask, (cx, cy), max(r // 2, 2), 0, -1)
    return mask.astype(bool)


def make_sample(rng, image_size=128, num_classes=5, ignore_index=255):
    """One (BGR uint8 image, uint8 label) pair."""
    size = (image_size, image_size)
    bg = rng.uniform(90, 160, size=3)
    image = bg[None, None, :] * (0.75 + 0.5 * _texture(rng, size, "blotches"))[..., None]
    label = np.zeros(size, np.uint8)
    kinds = {1: "stripes", 2: "checks", 3: "blotches", 4: "stripes"}
    for cls in rng.permutation(np.arange(1, num_classes))[:rng.integers(2, num_classes)]:
        mask = _shape_mask(rng, int(cls), size)
        colour = np.array(_CLASS_COLOURS[1 + (int(cls) - 1) % 4]) + rng.uniform(-25, 25, 3)
        tex = 0.6 + 0.4 * _texture(rng, size, kinds[1 + (int(cls) - 1) % 4])
        image[mask] = (colour[None, :] * tex[mask][:, None])
        label[mask] = cls
    if rng.random() < 0.7:  # an occluded patch that must be ignored by loss and metrics
        y, x = rng.integers(0, image_size - 16, 2)
        hh, ww = rng.integers(8, 24, 2)
        image[y:y + hh, x:x + ww] = rng.uniform(0, 255, (min(hh, image_size - y),
                                                         min(ww, image_size - x), 3))
        label[y:y + hh, x:x + ww] = ignore_index
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate_synthetic(dataset_root, num_train=64, num_val=16, image_size=128, num_classes=5,
                       seed=0, ignore_index=255):
    """Write the dataset to ``dataset_root`` unless an identical one is there; returns the root."""
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError("num_classes must be in [2, {}] for the synthetic set, got {}".format(
            len(CLASS_NAMES), num_classes))
    meta = dict(num_train=num_train, num_val=num_val, image_size=image_size,
                num_classes=num_classes, seed=seed, ignore_index=ignore_index)
    meta_path = os.path.join(dataset_root, "meta.yml")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            if yaml.safe_load(f) == meta:
                return dataset_root
        raise ValueError("{} holds a synthetic dataset generated with other settings; delete the "
                         "folder or choose another dataset_root".format(dataset_root))
    if os.path.isdir(dataset_root) and os.listdir(dataset_root):
        raise ValueError("Cannot create the synthetic dataset at {}: the folder exists and is not a "
                         "synthetic dataset. Choose another dataset_root.".format(dataset_root))
    parent = os.path.dirname(os.path.abspath(dataset_root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    logger.info("Generating the synthetic dataset in {} ({} train + {} val, {}x{})".format(
        dataset_root, num_train, num_val, image_size, image_size))
    try:
        _write(tmp, np.random.default_rng(seed), meta)
        default_mode(tmp)  # mkdtemp made it 0700
        os.rename(tmp, dataset_root)
    except OSError:  # another process finished first, or the folder holds something else
        if not os.path.isfile(meta_path):
            raise ValueError("Cannot create the synthetic dataset at {}: the folder exists and is "
                             "not a synthetic dataset. Choose another dataset_root.".format(
                                 dataset_root)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dataset_root


def _write(tmp, rng, meta):
    num_classes, image_size, ignore_index = (meta["num_classes"], meta["image_size"],
                                             meta["ignore_index"])
    os.makedirs(os.path.join(tmp, "images"))
    os.makedirs(os.path.join(tmp, "labels"))
    for split, count in (("train", meta["num_train"]), ("val", meta["num_val"])):
        lines = []
        for i in range(count):
            image, label = make_sample(rng, image_size, num_classes, ignore_index)
            stem = "{}_{:05d}".format(split, i)
            cv2.imwrite(os.path.join(tmp, "images", stem + ".jpg"), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(os.path.join(tmp, "labels", stem + ".png"), label)
            lines.append("images/{0}.jpg labels/{0}.png".format(stem))
        with open(os.path.join(tmp, split + ".txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(tmp, "meta.yml"), "w") as f:
        yaml.safe_dump(meta, f)


@register(manager.DATASETS)
class Synthetic(Dataset):
    """PaddleSeg dataset over :func:`generate_synthetic` (registered as ``RTSeg_Synthetic``).

    Args:
        transforms: PaddleSeg transforms.
        dataset_root: folder to generate into / read from.
        mode: ``train``, ``val`` (or ``test``: the val images).
        num_classes: classes including background (2..5).
        num_train, num_val, image_size, seed: generator settings.
        ignore_index: label of the occluded patches.
    """
    NUM_CLASSES = 5
    IMG_CHANNELS = 3
    IGNORE_INDEX = 255

    def __init__(self, transforms, dataset_root="data/synthetic", mode="train", num_classes=5,
                 num_train=64, num_val=16, image_size=128, seed=0, ignore_index=255, edge=False):
        generate_synthetic(dataset_root, num_train, num_val, image_size, num_classes, seed,
                           ignore_index)
        val_list = os.path.join(dataset_root, "val.txt")
        super().__init__(mode=mode, dataset_root=dataset_root, transforms=transforms,
                         num_classes=num_classes, train_path=os.path.join(dataset_root, "train.txt"),
                         val_path=val_list, test_path=val_list, ignore_index=ignore_index,
                         edge=edge)
