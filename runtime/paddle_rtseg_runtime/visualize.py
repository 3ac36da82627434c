"""Network output -> class map, PaddleSeg's palette, mask PNG + overlay files."""
import os

import numpy as np

from .errors import DeployError
from .files import write_bytes_atomic


def to_label_map(output, output_op, size_hw):
    """Network output (argmax ``N,H,W`` or ``N,C,H,W`` scores) -> ``H x W`` uint8 class map of the
    original image size (nearest-neighbour resize of the class map, as PaddleSeg does)."""
    import cv2
    out = np.asarray(output)
    label = out[0] if output_op == "argmax" or out.ndim == 3 else out[0].argmax(0)
    label = label.astype("uint8")
    if label.shape != tuple(size_hw):
        label = cv2.resize(label, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)
    return label


def color_map(num_classes=256, custom_color=None):
    """PaddleSeg's pseudo-color palette as ``num_classes x 3`` RGB uint8: the same values as
    ``paddleseg.utils.visualize.get_color_map_list(num_classes, custom_color)`` (whose class ``i``
    gets the bit pattern of ``i + 1``: class 0 is (128, 0, 0)); ``custom_color`` is a flat
    ``R, G, B, R, G, B, ...`` list replacing the first classes' colours."""
    palette = np.zeros((num_classes + 1, 3), "uint8")
    for i in range(num_classes + 1):
        lab, j = i, 0
        while lab:
            palette[i, 0] |= ((lab >> 0) & 1) << (7 - j)
            palette[i, 1] |= ((lab >> 1) & 1) << (7 - j)
            palette[i, 2] |= ((lab >> 2) & 1) << (7 - j)
            j += 1
            lab >>= 3
    palette = palette[1:]
    if custom_color:
        flat = palette.reshape(-1)
        flat[:len(custom_color)] = custom_color
    return palette


def pseudo_color_png(label, palette=None):
    """PNG bytes of PaddleSeg's pseudo-color prediction (``get_pseudo_color_map``): a palette
    ("P" mode) PNG whose pixel values are the class ids and whose palette is ``palette``."""
    import io

    from PIL import Image
    palette = color_map() if palette is None else palette
    mask = Image.fromarray(np.asarray(label, "uint8"), mode="P")
    mask.putpalette(np.asarray(palette, "uint8").flatten().tolist())
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def overlay(image_bgr, label, palette=None, weight=0.6):
    """PaddleSeg's ``visualize``: ``weight`` x image + (1 - ``weight``) x colour mask, BGR uint8."""
    import cv2
    palette = color_map() if palette is None else np.asarray(palette, "uint8")
    colored = palette[label][:, :, ::-1]  # RGB palette -> BGR
    return cv2.addWeighted(np.asarray(image_bgr, "uint8"), weight, colored, 1 - weight, 0)


def encode(image, extension, name):
    """``image`` encoded by OpenCV as ``extension`` (".jpg", ".png", ...)."""
    import cv2
    ok, buf = cv2.imencode(extension, image)
    if not ok:
        raise DeployError("Could not encode {} as {}".format(name, extension))
    return buf.tobytes()


def save_results(label, image_bgr, save_dir, name, weight=0.6):
    """Write ``<name>.png`` (palette PNG whose pixel values are class ids, as PaddleSeg's predict
    and deploy/python/infer.py) and ``<name>_overlay.jpg`` (image blended with the colored mask)."""
    png = pseudo_color_png(label)
    jpg = encode(overlay(image_bgr, label, weight=weight), ".jpg", name)
    try:
        write_bytes_atomic(os.path.join(save_dir, name + ".png"), png)
        write_bytes_atomic(os.path.join(save_dir, name + "_overlay.jpg"), jpg)
    except OSError as e:
        raise DeployError("Cannot write to --save_dir {} ({}). Choose a folder you can write "
                          "to.".format(save_dir, e.strerror or e)) from None
