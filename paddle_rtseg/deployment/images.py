"""Reading input images the way every runner and CLI does."""
import os

import numpy as np

from .errors import DeployError


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path, channels=3):
    """``H x W x 3`` BGR uint8 image, or a :class:`DeployError` naming what is wrong with it."""
    import cv2
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DeployError("Cannot read image {} (missing, or not an image OpenCV can decode)."
                          .format(path))
    found = 1 if image.ndim == 2 else image.shape[2]
    if found != channels:
        kind = {1: "grayscale", 2: "grayscale+alpha", 4: "RGBA/BGRA"}.get(found, "")
        raise DeployError("Image {} has {} channel(s){} but the model takes {}-channel color "
                          "images. Convert it first (e.g. `cv2.cvtColor(im, cv2.COLOR_{}2BGR)`)."
                          .format(path, found, " ({})".format(kind) if kind else "", channels,
                                  "GRAY" if found == 1 else "BGRA"))
    return to_uint8(image)


def to_uint8(image):
    """8-bit copy of a 16-bit or float image, scaled by its maximum (0 stays 0); the CLIs'
    ``datasets.checked_io.read_image`` uses the same rule, so both see the same pixels."""
    import cv2
    if image.dtype == np.uint8:
        return image
    return cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))


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
