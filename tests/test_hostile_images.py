"""The one image reader against images that declare more pixels than they are worth: the header's
pixel count is checked against PADDLE_RTSEG_MAX_IMAGE_PIXELS before anything decodes it, for every
format (PNG, JPEG, BMP, WebP, TIFF), in the reader predict/val/train and the runners use and in the
label reader; generated sizes and limits show the rule is exact."""
import os
import struct
import zlib

import cv2
import numpy as np
import paddle
import pytest
from conftest import run_module

from paddle_rtseg.datasets.checked_io import DataError, check_dataset, read_image, read_label
from paddle_rtseg_runtime import DeployError
from paddle_rtseg_runtime import read_image as deployment_read_image
from paddle_rtseg_runtime.images import image_size
from paddle_rtseg.models import RTFormer


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width, height, rows=64):
    """A well-formed PNG header (valid CRCs) for ``width`` x ``height`` 8-bit gray pixels whose
    data holds only its first ``rows`` rows: a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * (width + 1) * min(rows, height), 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))


def jpeg_declaring(width, height):
    """A real small JPEG whose frame header is rewritten to ``width`` x ``height``."""
    ok, buf = cv2.imencode(".jpg", np.zeros((40, 40, 3), np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_declaring(width, height):
    ok, buf = cv2.imencode(".bmp", np.zeros((40, 40, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def webp_declaring(width, height):
    """An extended-format (VP8X) WebP header declaring the canvas size."""
    vp8x = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_declaring(width, height):
    """A little-endian TIFF whose one IFD declares ``width`` x ``height`` 8-bit gray strips."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height),
               (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) if kind == 4 else
        struct.pack("<HHIHH", tag, kind, count, value, 0) for tag, kind, count, value in entries)
    return b"II*\x00" + struct.pack("<I", 8 + 16) + b"\0" * 16 + ifd + b"\0\0\0\0"


def hdr_declaring(width, height, axes_swapped=False):
    """A real small Radiance .hdr (run-length coded: a few MB can declare 12000x12000, which
    OpenCV decoded to 3.4 GB) whose resolution line is rewritten to ``width`` x ``height``."""
    ok, buf = cv2.imencode(".hdr", np.ones((36, 48, 3), np.float32))
    resolution = ("+X {} -Y {}" if axes_swapped else "-Y {1} +X {0}").format(width, height)
    return buf.tobytes().replace(b"-Y 36 +X 48", resolution.encode())


DECLARING = {"png": png_declaring, "jpg": jpeg_declaring, "bmp": bmp_declaring,
             "webp": webp_declaring, "tif": tiff_declaring, "hdr": hdr_declaring,
             "hdr_xy": lambda w, h: hdr_declaring(w, h, axes_swapped=True)}


@pytest.mark.parametrize("fmt", DECLARING)
@pytest.mark.parametrize("side", [20000, 40000])
def test_declared_bombs_refused_before_decoding(tmp_path, fmt, side):
    """The report's 20000x20000 and 40000x40000 images (7 GB and a MemoryError, or a cv2
    traceback): refused naming the limit, by the image and the label reader."""
    data = DECLARING[fmt](side, side)
    assert len(data) < 200 << 10
    assert tuple(image_size(data)) == (side, side)
    path = str(tmp_path / ("bomb." + fmt.split("_")[0]))
    open(path, "wb").write(data)
    for read, error in ((deployment_read_image, DeployError), (read_image, DataError),
                        (read_label, DataError)):
        with pytest.raises(error) as err:
            read(path)
        message = str(err.value)
        assert "{0}x{0} pixels".format(side) in message, message
        assert "PADDLE_RTSEG_MAX_IMAGE_PIXELS" in message, message


def test_generated_sizes_against_generated_limits(tmp_path, monkeypatch):
    """Real images of random sizes and formats against random limits: refused exactly when
    width x height exceeds the limit, else read as OpenCV reads them."""
    rng = np.random.default_rng(0)
    outcomes = {"read": 0, "refused": 0}
    for case in range(40):
        fmt = [".png", ".jpg", ".bmp", ".webp", ".tif"][case % 5]
        height, width = (int(v) for v in rng.integers(32, 90, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = str(tmp_path / ("x" + fmt))
        cv2.imwrite(path, image)
        limit = int(rng.integers(32 * 32, 90 * 90))
        monkeypatch.setenv("PADDLE_RTSEG_MAX_IMAGE_PIXELS", str(limit))
        if width * height > limit:
            with pytest.raises(DeployError, match="{}x{} pixels".format(width, height)):
                deployment_read_image(path)
            outcomes["refused"] += 1
        else:
            assert np.array_equal(deployment_read_image(path), cv2.imread(path))
            outcomes["read"] += 1
    assert outcomes["read"] > 5 and outcomes["refused"] > 5, outcomes


def test_check_dataset_refuses_a_bomb_label_by_the_limit(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((40, 40, 3), np.uint8))
    for side in (20000, 11000):  # over Pillow's own limit, and under it
        open(str(labels / "a.png"), "wb").write(png_declaring(side, side))

        class Listed:
            file_list = [[str(images / "a.png"), str(labels / "a.png")]]
            num_classes = 3

        with pytest.raises(DataError, match="PADDLE_RTSEG_MAX_IMAGE_PIXELS"):
            check_dataset(Listed(), "train dataset")


def test_predict_refuses_a_bomb_in_one_paragraph(tmp_path, tiny_rtformer_config):
    path = str(tmp_path / "model.pdparams")
    paddle.save(RTFormer(5, base_channels=8, head_channels=16, num_heads=4).state_dict(), path)
    folder = tmp_path / "in"
    folder.mkdir()
    open(str(folder / "bomb.png"), "wb").write(png_declaring(40000, 40000))
    out = run_module("paddle_rtseg.predict", "--config", tiny_rtformer_config, "--model_path", path,
                     "--image_path", folder, "--save_dir", tmp_path / "out", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "PADDLE_RTSEG_MAX_IMAGE_PIXELS" in errors[0], out.stderr[-2000:]
    assert not os.listdir(str(tmp_path / "out")) if os.path.isdir(str(tmp_path / "out")) else True
