"""Reading input images the way every runner and CLI does."""
import io
import os
import re
import struct
import warnings

import numpy as np

from . import limits
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


def _jpeg_size(data):
    """(width, height) of the largest frame header (SOF0..SOF15 but DHT/JPG/DAC) of a JPEG."""
    pos, found = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return found
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: the headers are behind us
            return found
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            if found is None or width * height > found[0] * found[1]:
                found = (width, height)
        pos += 2 + length
    return found


def _webp_size(data):
    kind = data[12:16]
    if kind == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data):
    """(width, height) from the first image file directory of a TIFF (what OpenCV decodes)."""
    order = {b"II": "<", b"MM": ">"}[data[:2]]
    pos = struct.unpack(order + "I", data[4:8])[0]
    if pos + 2 > len(data):
        return None
    count = struct.unpack(order + "H", data[pos:pos + 2])[0]
    found = {}
    for i in range(count):
        entry = data[pos + 2 + 12 * i:pos + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257) and kind in (3, 4):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10 if kind == 3
                                                                             else 12])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _pil_size(data):
    """(width, height) from Pillow's header parsers (TIFF and the rest), None without Pillow or
    for a file it cannot identify. Nothing is decoded."""
    try:
        from PIL import Image
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Image.DecompressionBombError as e:  # over Pillow's own limit: its message says
            numbers = [int(n) for n in re.findall(r"\((\d+) pixels\)", str(e))]
            return (numbers[0], 1) if numbers else (1 << 31, 1 << 31)
        except Exception:
            return None


def image_size(data):
    """(width, height) an image file's bytes declare in their header, read without decoding
    (PNG, JPEG, BMP, WebP, TIFF by hand; other formats through Pillow's header parsers); None if
    the header cannot be read."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data) or _pil_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] == 12:  # BITMAPCOREHEADER: 16-bit sizes
            return struct.unpack("<HH", data[18:22])
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data) or _pil_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
        return _tiff_size(data) or _pil_size(data)
    if data[:10] == b"#?RADIANCE" or data[:6] == b"#?RGBE":
        return _hdr_size(data)
    return _pil_size(data)


def _hdr_size(data):
    """Radiance ``.hdr`` (run-length coded, so a few MB can declare 12000x12000 pixels: OpenCV
    decoded 3.4 GB before the pixel limit could refuse it): header lines, an empty line, then the
    resolution line such as ``-Y 360 +X 480`` (the axes may come in either order)."""
    end = data.find(b"\n\n", 0, 65536)
    if end < 0:
        return None
    line = data[end + 2:end + 2 + 64].split(b"\n", 1)[0].split()
    if len(line) != 4:
        return None
    sizes = {}
    for sign_axis, number in ((line[0], line[1]), (line[2], line[3])):
        if len(sign_axis) != 2 or sign_axis[:1] not in b"+-" or not number.isdigit():
            return None
        sizes[sign_axis[1:2]] = int(number)
    if set(sizes) != {b"X", b"Y"}:
        return None
    return sizes[b"X"], sizes[b"Y"]


def check_pixels(path, width, height):
    """Refuse (:class:`DeployError`) an image of more pixels than PADDLE_RTSEG_MAX_IMAGE_PIXELS."""
    try:
        limits.check("PADDLE_RTSEG_MAX_IMAGE_PIXELS", width * height,
                     "Image {} declares {}x{} pixels ({} pixels), more than images are allowed to "
                     "have; resize it.".format(path, width, height, width * height))
    except limits.LimitError as e:
        raise DeployError(str(e)) from None


def check_image_size(path, data):
    """Refuse an image whose header declares more pixels than PADDLE_RTSEG_MAX_IMAGE_PIXELS allows,
    before anything decodes it (a PNG of a few hundred KB can declare 40000x40000 pixels: 4.8 GB
    once decoded). Returns the declared (width, height), or None if the header cannot be read."""
    size = image_size(data)
    if size is not None:
        check_pixels(path, *size)
    return size


def read_image(path, channels=3, warn=_stderr_warning):
    """The one rule for input images, shared by the CLIs (train/val/predict) and the runners.

    Returns ``H x W x 3`` BGR uint8 (``H x W`` for ``channels=1``). 16-bit and float images are
    scaled to 8 bits (:func:`to_uint8`). Grayscale images are replicated to 3 channels and the
    alpha channel of RGBA images is dropped, each with a warning passed to ``warn``. Refused with a
    :class:`DeployError` naming the file: missing or undecodable files, truncated JPEGs, images
    smaller than ``MIN_SIDE`` pixels on a side, images declaring more pixels than
    ``PADDLE_RTSEG_MAX_IMAGE_PIXELS`` (checked in the header, before decoding: :func:`check_image_size`)
    and channel counts that cannot be converted.
    """
    import cv2
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DeployError("Image {} cannot be read ({}). Check the path.".format(
            path, e.strerror or e)) from None
    declared = check_image_size(path, data)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error:  # e.g. over OpenCV's own pixel limit, for a header we could not read
        image = None
    if image is not None and declared is None:  # the header was not readable: check what decoded
        check_pixels(path, image.shape[1], image.shape[0])
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


def check_inputs_kept(images, outputs):
    """Refuse (:class:`DeployError`, before anything is written) when an output path is one of the
    input images: ``--save_dir`` = the image folder would replace ``photo.png`` with its mask."""
    inputs = {os.path.realpath(p): p for p in images}
    for out in outputs:
        hit = inputs.get(os.path.realpath(out))
        if hit is not None:
            raise DeployError("Writing {} would replace the input image {} (--save_dir is where "
                              "the inputs are). Pass another --save_dir; inputs are never "
                              "overwritten.".format(out, hit))


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
