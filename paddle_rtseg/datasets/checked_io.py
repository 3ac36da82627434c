"""Image and label reading that fails with a message naming the file and the fix.

PaddleSeg's ``Compose`` calls ``cv2.imread(path).astype(...)``: a missing or corrupt file becomes
``AttributeError: 'NoneType' object has no attribute 'astype'`` deep inside a data-loader worker.
:func:`check_dataset` verifies the file list up front and swaps in :class:`CheckedCompose`, which
reads every image through :func:`read_image`.
"""
import os
import sys
import threading

import cv2
import numpy as np
from paddleseg.transforms import Compose
from paddleseg.utils import logger
from PIL import Image

from ..deployment.images import to_uint8


class DataError(ValueError):
    """A dataset or image that cannot be used; the message names the file and the fix."""


def read_image(path, channels=3):
    """Read ``path`` as float32 HxWxC (BGR for 3 channels, as ``cv2.imread``).

    Grayscale images are replicated to 3 channels and RGBA images lose alpha (with a warning);
    missing and undecodable files raise :class:`DataError`.
    """
    if not os.path.isfile(path):
        raise DataError("Image {} does not exist. Check the path (and the dataset_root / file "
                        "list that names it).".format(path))
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DataError("Image {} cannot be decoded: the file is corrupt or not an image "
                        "(supported: PNG, JPEG, BMP, TIFF...). Replace or remove it.".format(path))
    img = to_uint8(img)
    found = 1 if img.ndim == 2 else img.shape[2]
    if channels == 1:
        if found != 1:
            img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    elif found == 1:
        logger.warning("{} is grayscale; replicating it to 3 channels.".format(path))
        img = cv2.cvtColor(img if img.ndim == 2 else img[..., 0], cv2.COLOR_GRAY2BGR)
    elif found == 4:
        logger.warning("{} has an alpha channel; it is dropped.".format(path))
        img = img[..., :3]
    elif found != 3:
        raise DataError("Image {} has {} channels; the model takes {}. Convert it to RGB."
                        .format(path, found, channels))
    return img.astype("float32")


def read_label(path):
    """Read a label PNG as HxW integer class ids; colour (RGB) labels are refused."""
    if not os.path.isfile(path):
        raise DataError("Label {} does not exist. Check the file list.".format(path))
    try:
        label = np.asarray(Image.open(path))
    except Exception:
        raise DataError("Label {} cannot be decoded; replace it with a single-channel PNG of "
                        "class ids.".format(path)) from None
    if label.ndim != 2:
        raise DataError("Label {} has shape {}: labels must be single-channel PNGs of class ids "
                        "(0..num_classes-1, ignore_index for unlabelled), not colour images. "
                        "Convert the colour map to ids first.".format(path, label.shape))
    return label


class CheckedCompose(Compose):
    """``paddleseg.transforms.Compose`` that reads files with :func:`read_image`/:func:`read_label`.

    Paddle's ``DataLoader`` reads batches in a background thread and, when that thread raises,
    waits forever. A :class:`DataError` raised off the main thread therefore prints its message
    and ends the process with status 2 instead of hanging it.
    """

    def __call__(self, data):
        try:
            if isinstance(data.get("img"), str):
                data["img"] = read_image(data["img"], self.img_channels)
            if isinstance(data.get("label"), str):
                data["label"] = read_label(data["label"])
        except DataError as e:
            if threading.current_thread() is threading.main_thread():
                raise
            sys.stderr.write("error: {}\n".format(e))
            sys.stderr.flush()
            os._exit(2)
        return super().__call__(data)


def _unreadable(path):
    """True if ``path`` does not have a decodable image header (cheap: nothing is decoded)."""
    try:
        with Image.open(path) as image:
            image.size
        return False
    except Exception:
        return True


def check_dataset(dataset, name="dataset"):
    """Verify that every file ``dataset`` lists exists, and read images through
    :class:`CheckedCompose` from now on. Returns ``dataset``."""
    if dataset is None:
        return None
    file_list = getattr(dataset, "file_list", None) or []
    if not file_list and hasattr(dataset, "file_list"):
        raise DataError("The {} lists no images. Check its file list / dataset_root.".format(name))
    missing = [p for pair in file_list for p in pair if p is not None and not os.path.isfile(p)]
    if missing:
        raise DataError("The {} lists {} file(s) that do not exist, e.g. {}. Check dataset_root "
                        "and the paths in the file list.".format(
                            name, len(missing), ", ".join(missing[:3])))
    broken = [p for pair in file_list for p in pair if p is not None and _unreadable(p)]
    if broken:
        raise DataError("The {} lists {} file(s) that cannot be decoded (corrupt or not images), "
                        "e.g. {}. Replace or remove them.".format(
                            name, len(broken), ", ".join(broken[:3])))
    transforms = getattr(dataset, "transforms", None)
    if isinstance(transforms, Compose) and not isinstance(transforms, CheckedCompose):
        transforms.__class__ = CheckedCompose
    return dataset
