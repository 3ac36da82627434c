"""Image and label reading that fails with a message naming the file and the fix.

PaddleSeg's ``Compose`` calls ``cv2.imread(path).astype(...)``: a missing or corrupt file becomes
``AttributeError: 'NoneType' object has no attribute 'astype'`` deep inside a data-loader worker.
:func:`check_dataset` verifies the file list up front and swaps in :class:`CheckedCompose`, which
reads every image through :func:`read_image`.
"""
import io
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from paddleseg.datasets import Dataset
from paddleseg.transforms import Compose
from paddleseg.utils import logger
from PIL import Image

from paddle_rtseg_runtime.errors import DeployError, bounded
from paddle_rtseg_runtime.images import check_image_size, check_pixels, image_size
from paddle_rtseg_runtime.images import read_image as deployment_read_image


class DataError(ValueError):
    """A dataset or image that cannot be used; the message names the file and the fix."""


def read_image(path, channels=3):
    """Read ``path`` as float32 HxWxC (BGR for 3 channels, as ``cv2.imread``), by the one rule of
    :func:`paddle_rtseg_runtime.images.read_image` (grayscale and RGBA converted with a warning;
    truncated, tiny, missing and undecodable files refused) with :class:`DataError`."""
    if not os.path.isfile(path):
        raise DataError("Image {} does not exist. Check the path (and the dataset_root / file "
                        "list that names it).".format(path))
    try:
        img = deployment_read_image(path, channels, warn=logger.warning)
    except DeployError as e:
        raise DataError(str(e)) from None
    return img.astype("float32")


def read_label(path):
    """Read a label PNG as HxW integer class ids; colour (RGB) labels are refused, and so are
    labels declaring more pixels than ``PADDLE_RTSEG_MAX_IMAGE_PIXELS`` (checked in the header,
    before decoding, by the image reader's rule)."""
    if not os.path.isfile(path):
        raise DataError("Label {} does not exist. Check the file list.".format(path))
    try:
        with open(path, "rb") as f:
            data = f.read()
        check_image_size(path, data)
    except OSError as e:
        raise DataError("Label {} cannot be read ({}). Check the path.".format(
            path, e.strerror or e)) from None
    except DeployError as e:
        raise DataError(str(e)) from None
    try:
        with warnings.catch_warnings():  # the pixel limit above is the one that applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            label = np.asarray(Image.open(io.BytesIO(data)))
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

    An image and its label must have the same size (:class:`DataError` naming both otherwise).

    Paddle's ``DataLoader`` reads batches in a background thread and, when that thread raises,
    waits forever (``num_workers=0``); with worker processes the error becomes a :class:`DataError`
    that the reader thread re-raises, for :func:`paddle_rtseg.cli.errors.run_cli`'s thread hook. Any error raised off the main thread (a :class:`DataError`, or a transform
    failing on a file) therefore prints one paragraph naming the file, releases the run's lock
    (:func:`paddle_rtseg_runtime.run_lock.release_all`) and ends the process with status 2
    instead of hanging it.
    """

    def __call__(self, data):
        image = data.get("img") if isinstance(data.get("img"), str) else None
        try:
            if image is not None:
                data["img"] = read_image(image, self.img_channels)
            if isinstance(data.get("label"), str):
                label_path = data["label"]
                data["label"] = read_label(label_path)
                if image is not None and data["label"].shape[:2] != data["img"].shape[:2]:
                    raise DataError(_size_message(image, data["img"].shape, label_path,
                                                  data["label"].shape))
            return super().__call__(data)
        except Exception as e:
            message = str(e) if isinstance(e, DataError) else (
                "Reading or transforming {} failed in the data loader ({}: {}). Check that file "
                "and the dataset's transforms.".format(image or "an image", type(e).__name__, e))
            if _in_loader_worker_process():
                # the parent's reader thread re-raises it (num_workers > 0): a DataError with our
                # message, which the command-line wrapper's thread hook turns into one paragraph
                raise DataError(" ".join(message.split())) from None
            if threading.current_thread() is threading.main_thread():
                raise
            sys.stderr.write("error: {}\n".format(bounded(" ".join(message.split()))))
            sys.stderr.flush()
            from paddle_rtseg_runtime import run_lock
            run_lock.release_all()
            os._exit(2)


def _in_loader_worker_process():
    try:
        from paddle.io import get_worker_info
    except ImportError:
        return False
    return get_worker_info() is not None


def _size_message(image, image_shape, label, label_shape):
    return ("Label {} is {}x{} pixels but its image {} is {}x{} (width x height): a label must "
            "have its image's size. Fix the file list (a label paired with the wrong image?) or "
            "resize the label with nearest-neighbour interpolation.".format(
                label, label_shape[1], label_shape[0], image, image_shape[1], image_shape[0]))


def _size(path):
    """(width, height) from the file's header (nothing decoded), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except Exception:
        with open(path, "rb") as f:
            return image_size(f.read())


def _unreadable(path):
    """True if ``path`` does not have a decodable image header (cheap: nothing is decoded); an
    image declaring more pixels than ``PADDLE_RTSEG_MAX_IMAGE_PIXELS`` raises :class:`DataError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size = image.size
    except Image.DecompressionBombError:  # over Pillow's own limit: the header says by how much
        with open(path, "rb") as f:
            size = image_size(f.read())
        if size is None:
            return True
    except Exception:
        return True
    try:
        check_pixels(path, *size)
    except DeployError as e:
        raise DataError(str(e)) from None
    return False


def _out_of_range(path, num_classes, ignore_index):
    """Class ids in label ``path`` that are neither in ``0..num_classes-1`` nor ``ignore_index``."""
    label = read_label(path)
    if label.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    else:
        values = np.unique(label)
    return [int(v) for v in values if (v < 0 or v >= num_classes) and v != ignore_index]


def _check_label_values(dataset, name, labels):
    """Decode every label (threads: PNG decoding releases the GIL) and refuse class ids the loss
    cannot take. Only for datasets that feed labels to the loss as stored (PaddleSeg's ``Dataset``
    ``__getitem__``; e.g. ADE20K shifts its ids by one and is skipped)."""
    num_classes = getattr(dataset, "num_classes", None)
    if not labels or not isinstance(num_classes, int) or \
            getattr(type(dataset), "__getitem__", None) is not Dataset.__getitem__:
        return
    ignore_index = getattr(dataset, "ignore_index", 255)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(lambda p: _out_of_range(p, num_classes, ignore_index), labels))
    bad = [(p, v) for p, v in zip(labels, found) if v]
    if bad:
        raise DataError(
            "The {} has {} label file(s) with class ids outside 0..{} that are not the ignore "
            "index {}, e.g. {} (values {}). Fix those labels (map them to {} to ignore them), or "
            "set num_classes in the model and datasets to cover them.".format(
                name, len(bad), num_classes - 1, ignore_index, bad[0][0],
                ", ".join(map(str, bad[0][1][:10])), ignore_index))


def check_dataset(dataset, name="dataset"):
    """Verify that every file ``dataset`` lists exists, that its labels decode and hold only
    valid class ids, and read images through :class:`CheckedCompose` from now on.
    Returns ``dataset``."""
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
    for pair in file_list:
        if len(pair) > 1 and pair[1] is not None:
            image, label = _size(pair[0]), _size(pair[1])
            if image and label and image != label:
                raise DataError("The {} pairs images and labels of different sizes, e.g. {}".format(
                    name, _size_message(pair[0], image[::-1], pair[1], label[::-1])))
    _check_label_values(dataset, name, [pair[1] for pair in file_list if pair[1] is not None])
    transforms = getattr(dataset, "transforms", None)
    if isinstance(transforms, Compose) and not isinstance(transforms, CheckedCompose):
        transforms.__class__ = CheckedCompose
    return dataset
