"""PaddleSeg's eval transforms from ``deploy.yaml``, and the input check against the exported shape."""
import numpy as np

from .errors import DeployError


def _resize_to(image, size_hw, interp):
    """``cv2.resize`` to ``size_hw``, refused first (:class:`DeployError`, the limit named) when
    the result would have more pixels than PADDLE_RTSEG_MAX_IMAGE_PIXELS allows: a deploy.yaml's
    ``ResizeByLong: 65535``, or ``ResizeByShort`` on a very long image, asks for gigabytes."""
    import cv2
    from . import limits
    h, w = int(size_hw[0]), int(size_hw[1])
    try:
        limits.check("PADDLE_RTSEG_MAX_IMAGE_PIXELS", h * w,
                     "deploy.yaml's transforms resize a {}x{} image to {}x{} ({} pixels), more "
                     "than images are allowed to have; fix the resize in deploy.yaml.".format(
                         image.shape[1], image.shape[0], w, h, h * w))
    except limits.LimitError as e:
        raise DeployError(str(e)) from None
    return cv2.resize(image, (w, h), interpolation=interp)


def preprocess(image_bgr, transforms):
    """PaddleSeg's eval transforms (BGR -> RGB, resize ops, Normalize) -> ``1 x 3 x H x W`` float32."""
    import cv2
    interps = {"NEAREST": cv2.INTER_NEAREST, "LINEAR": cv2.INTER_LINEAR, "CUBIC": cv2.INTER_CUBIC,
               "AREA": cv2.INTER_AREA, "LANCZOS4": cv2.INTER_LANCZOS4}
    im = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).astype("float32")
    for t in transforms:
        kind = t.get("type")
        interp = interps.get(t.get("interp", "LINEAR"), cv2.INTER_LINEAR)
        h, w = im.shape[:2]
        if kind == "Normalize":
            mean = np.array(t.get("mean", [0.5, 0.5, 0.5]), "float32")
            std = np.array(t.get("std", [0.5, 0.5, 0.5]), "float32")
            im = (im / 255.0 - mean) / std
        elif kind == "Resize":
            th, tw = t.get("target_size", [512, 512])[::-1]  # PaddleSeg: [w, h]
            if t.get("keep_ratio", False):
                scale = min(th / h, tw / w)
                th, tw = int(round(h * scale)), int(round(w * scale))
            divisor = t.get("size_divisor")
            if divisor:
                th = int(np.ceil(th / divisor) * divisor)
                tw = int(np.ceil(tw / divisor) * divisor)
            im = _resize_to(im, (th, tw), interp)
        elif kind in ("ResizeByLong", "ResizeByShort"):
            edge = max(h, w) if kind == "ResizeByLong" else min(h, w)
            size = t.get("long_size", t.get("short_size"))
            scale = float(size) / edge
            im = _resize_to(im, (int(round(h * scale)), int(round(w * scale))), interp)
        else:
            raise DeployError("deploy.yaml transform {!r} is not supported by the runner (supported: "
                              "Normalize, Resize, ResizeByLong, ResizeByShort).".format(kind))
    return np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype="float32")


def check_input(x, input_shape):
    """Reject an input the exported graph cannot take, before the backend does it cryptically."""
    if x.ndim != 4:
        raise DeployError("The model takes N x C x H x W input, got shape {}.".format(x.shape))
    for axis, (want, got) in enumerate(zip(input_shape, x.shape)):
        if want not in (-1, None) and want != got:
            what = ["batch size", "channels", "height", "width"][axis]
            raise DeployError("The model was exported for input shape {} but got {} ({} {} != {}). "
                              "Resize the input (a Resize transform in deploy.yaml) or re-export "
                              "with --input_shape, or without it for dynamic shapes.".format(
                                  list(input_shape), list(x.shape), what, got, want))
