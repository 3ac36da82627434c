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


def color_map(num_classes=256):
    """PaddleSeg's pseudo-color palette (``paddleseg.utils.visualize.get_color_map_list``)."""
    palette = np.zeros((num_classes, 3), "uint8")
    for i in range(num_classes):
        lab, j = i, 0
        while lab:
            palette[i, 0] |= ((lab >> 0) & 1) << (7 - j)
            palette[i, 1] |= ((lab >> 1) & 1) << (7 - j)
            palette[i, 2] |= ((lab >> 2) & 1) << (7 - j)
            j += 1
            lab >>= 3
    return palette


def save_results(label, image_bgr, save_dir, name, weight=0.6):
    """Write ``<name>.png`` (palette PNG whose pixel values are class ids, as PaddleSeg's predict)
    and ``<name>_overlay.jpg`` (image blended with the colored mask)."""
    import io

    import cv2
    from PIL import Image
    palette = color_map()
    mask = Image.fromarray(label, mode="P")
    mask.putpalette(palette.flatten().tolist())
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    colored = palette[label][:, :, ::-1]  # RGB palette -> BGR
    overlay = cv2.addWeighted(image_bgr, 1 - weight, colored, weight, 0)
    ok, jpg = cv2.imencode(".jpg", overlay)
    if not ok:
        raise DeployError("Could not encode the overlay of {}".format(name))
    try:
        write_bytes_atomic(os.path.join(save_dir, name + ".png"), buf.getvalue())
        write_bytes_atomic(os.path.join(save_dir, name + "_overlay.jpg"), jpg.tobytes())
    except OSError as e:
        raise DeployError("Cannot write to --save_dir {} ({}). Choose a folder you can write "
                          "to.".format(save_dir, e.strerror or e)) from None
