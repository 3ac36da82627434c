"""Reading input images the way every runner and CLI does."""
import os

import numpy as np

from .errors import DeployError


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# The models' coarsest feature map is 1/32 of the input: anything smaller has no content left there.
MIN_SIDE = 32


def _stderr_warning(message):
    import sys
    print("warning: {}".format(message), file=sys.stderr)


def _truncated_jpeg(data):
    """True for a JPEG whose last scan has no end-of-image marker after it: the file was cut off
    (OpenCV then only warns "Premature end of JPEG file" and fills the rest with grey).
    Entropy-coded data cannot contain ``FF D9``, so a complete file has it after its last ``FF DA``."""
    if not data.startswith(b"\xff\xd8"):
        return False
    last_scan = data.rfind(b"\xff\xda")
    return last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0


def read_image(path, channels=3, warn=_stderr_warning):
    """The one rule for input images, shared by the CLIs (train/val/predict) and the runners.

    Returns ``H x W x 3`` BGR uint8 (``H x W`` for ``channels=1``). 16-bit and float images are
    scaled to 8 bits (:func:`to_uint8`). Grayscale images are replicated to 3 channels and the
    alpha channel of RGBA images is dropped, each with a warning passed to ``warn``. Refused with a
    :class:`DeployError` naming the file: missing or undecodable files, truncated JPEGs, images
    smaller than ``MIN_SIDE`` pixels on a side, and channel counts that cannot be converted.
    """
    import cv2
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DeployError("Image {} cannot be read ({}). Check the path.".format(
            path, e.strerror or e)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None or image.size == 0:
        raise DeployError("Image {} cannot be decoded: the file is corrupt or not an image "
                          "(supported: PNG, JPEG, BMP, TIFF, WebP). Replace or remove it."
                          .format(path))
    if _truncated_jpeg(data):
        raise DeployError("Image {} cannot be decoded completely: the JPEG is truncated (it ends "
                          "before its end-of-image marker). Replace it or remove it.".format(path))
    if min(image.shape[:2]) < MIN_SIDE:
        raise DeployError("Image {} is {}x{} pixels; the models need at least {}x{} (their "
                          "coarsest feature map is 1/32 of the input). Use a larger image."
                          .format(path, image.shape[1], image.shape[0], MIN_SIDE, MIN_SIDE))
    image = to_uint8(image)
    found = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        if found == 1:
            return image if image.ndim == 2 else image[..., 0]
        warn("{} has {} channels; converting it to grayscale.".format(path, found))
        return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY) if found >= 3 else image[..., 0]
    if channels != 3:
        if found != channels:
            raise DeployError("Image {} has {} channel(s) but the model takes {}. Convert it first."
                              .format(path, found, channels))
        return image
    if found in (1, 2):
        warn("{} is grayscale; replicating it to 3 channels.".format(path))
        return cv2.cvtColor(image if image.ndim == 2 else image[..., 0], cv2.COLOR_GRAY2BGR)
    if found == 4:
        warn("{} has an alpha channel; it is dropped.".format(path))
        return np.ascontiguousarray(image[..., :3])
    if found != 3:
        raise DeployError("Image {} has {} channels; the model takes 3-channel colour images. "
                          "Convert it to RGB first.".format(path, found))
    return image


def to_uint8(image):
    """8-bit copy of a 16-bit or float image, scaled by its maximum (0 stays 0); the CLIs'
    ``datasets.checked_io.read_image`` uses the same rule, so both see the same pixels."""
    import cv2
    if image.dtype == np.uint8:
        return image
    return cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))


def output_names(images, root=None):
    """Each image's output name: its path relative to ``root`` where given and inside it, else its
    file name (outputs replace the extension: ``<name without extension>.png``). Raises
    :class:`DeployError` before anything is written when two different images would write the same
    outputs (``a.jpg`` and ``a.png`` both give ``a.png``: the second would silently replace the
    first)."""
    names, seen = [], {}
    for path in images:
        rel = os.path.relpath(path, root) if root is not None else os.path.basename(path)
        if rel.startswith(os.pardir) or os.path.isabs(rel):  # listed outside the list's folder
            rel = os.path.basename(path)
        stem = os.path.splitext(rel)[0]
        other = seen.setdefault(stem, path)
        if os.path.normpath(other) != os.path.normpath(path):
            raise DeployError("{} and {} would both be written as {}.png (outputs are named after "
                              "the input without its extension). Rename one of them, or segment "
                              "them into different --save_dir folders.".format(other, path, stem))
        names.append(rel)
    return names


def list_images(path):
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DeployError("--image_path {} does not exist (pass an image or a folder of images)."
                          .format(path))
    images = sorted(os.path.join(path, n) for n in os.listdir(path)  # hidden: e.g. macOS "._x.png"
                    if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    if not images:
        raise DeployError("No images ({}) in {}.".format(", ".join(IMAGE_EXTENSIONS), path))
    return images
