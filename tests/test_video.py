"""The video path: ``predict`` and the Paddle Inference / ONNX / Lite runners turn a video file
(or a folder of frames) into a playable overlay video whose frames carry the same masks as per-image
runs, print frames per second with backend and precision, and reject bad input (exit 2, nothing
half-written)."""
import glob
import io
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest

from conftest import CONFIGS, ROOT, randomize_state, run_module, write_config
from paddle_rtseg import build_model
import paddle_rtseg_runtime as du

CONFIG = os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
TINY = dict(base_channels=8, head_channels=16, spp_channels=16, num_heads=4)
FRAMES, WIDTH, HEIGHT = 8, 120, 96  # W != H so a swapped size cannot pass
FPS_LINE = (r"Segmented {} frames of .+ into (.+\.mp4): ([0-9.]+) FPS end to end, ([0-9.]+) FPS "
            r"model only \(backend {}, precision fp32\)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synthetic_root):
    """A tiny random RTFormer (weights, config, export, ONNX) and an 8-frame mp4v clip made of
    synthetic images, with its decoded frames as PNGs (what every run sees)."""
    root = tmp_path_factory.mktemp("video")
    paddle.seed(0)  # the autouse seed fixture runs after module-scoped fixtures
    model = build_model(CONFIG, **TINY)
    randomize_state(model)
    weights = str(root / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    config = write_config(root / "tiny.yml", CONFIG, model=TINY,
                          val_dataset={"dataset_root": synthetic_root})
    export = str(root / "export")
    proc = run_module("paddle_rtseg.export", "--config", config, "--model_path", weights,
                      "--save_dir", export)
    assert proc.returncode == 0, proc.stderr[-2000:]
    onnx_path = du.convert_onnx(export, os.path.join(export, "model.onnx"))
    clip = str(root / "clip.mp4")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 10, (WIDTH, HEIGHT))
    for path in sorted(glob.glob(os.path.join(synthetic_root, "images", "val_*")))[:FRAMES]:
        writer.write(cv2.imread(path)[:HEIGHT, :WIDTH])
    writer.release()
    frames = read_video(clip)
    assert len(frames) == FRAMES
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / "f{}.png".format(i)), frame)
    return dict(root=root, weights=weights, config=config, export=export, onnx=onnx_path,
                clip=clip, frames=frames, folder=str(folder))


def read_video(path):
    capture = cv2.VideoCapture(path)
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def run_script(path, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, path), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


RUNNERS = {"paddle-inference-cpu-onednn": "deploy/python/infer.py",
           "onnxruntime": "deploy/onnx/infer.py", "paddle-lite": "deploy/lite/infer.py"}


def runner_args(setup, backend):
    extra = []
    if backend == "onnxruntime":
        extra = ["--onnx_file", setup["onnx"]]
    elif backend == "paddle-lite":
        extra = ["--nb_file", du.convert_lite(setup["export"], os.path.join(setup["export"], "m"),
                                              target="x86")]
    return RUNNERS[backend], ["--model_dir", setup["export"], *extra]


def check_video(path, expected, masks):
    """The video at ``path`` opens, has the frames and size of ``expected`` (BGR overlays of
    ``masks``) and its frames match them within codec loss. Mask colours differ by >= 0.6 * 128
    levels between classes, so a wrong class shows as pixels off by more than 40 levels; mp4v's
    loss stays below that except at mask edges (ringing), which are left out (2 px around them)."""
    frames = read_video(path)
    assert len(frames) == len(expected)
    capture = cv2.VideoCapture(path)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == \
        (WIDTH, HEIGHT)
    kernel = np.ones((3, 3), np.uint8)
    for got, want, mask in zip(frames, expected, masks):
        diff = np.abs(got.astype(int) - want.astype(int)).max(axis=2)
        edges = cv2.dilate((cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)).astype(np.uint8),
                           kernel, iterations=2).astype(bool)
        assert diff.mean() < 8, diff.mean()  # measured: 4.1-5.3 (mp4v + the JPEG reference)
        assert (diff[~edges] > 40).mean() < 1e-3, (diff[~edges] > 40).mean()
    return frames


def no_leftovers(folder):
    return not [n for n in os.listdir(folder) if n.startswith(".tmp-")]


@pytest.mark.parametrize("backend", list(RUNNERS))
def test_runner_writes_overlay_video_matching_per_image_masks(setup, backend, tmp_path):
    script, args = runner_args(setup, backend)
    proc = run_script(script, *args, "--video_path", setup["clip"], "--save_dir", tmp_path / "v")
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(FPS_LINE.format(FRAMES, re.escape(backend)), proc.stdout)
    assert match, proc.stdout
    assert float(match.group(2)) > 0 and float(match.group(3)) >= float(match.group(2))
    assert match.group(1) == str(tmp_path / "v" / "clip.mp4")

    per_image = run_script(script, *args, "--image_path", setup["folder"], "--save_dir",
                           tmp_path / "img")
    assert per_image.returncode == 0, per_image.stderr[-2000:]
    from PIL import Image
    masks = [np.array(Image.open(tmp_path / "img" / "f{}.png".format(i))) for i in range(FRAMES)]
    assert len(np.unique(np.stack(masks))) >= 2  # the comparison below can tell classes apart
    expected = [cv2.imread(str(tmp_path / "img" / "f{}_overlay.jpg".format(i)))
                for i in range(FRAMES)]
    video = check_video(str(tmp_path / "v" / "clip.mp4"), expected, masks)
    assert no_leftovers(tmp_path / "v")

    if backend == "paddle-lite":  # it shares the runners' code: the rest is not repeated
        return
    # the same frames from a folder (and a video given as --image_path) make the same video
    folder = run_script(script, *args, "--image_path", setup["folder"], "--save_video",
                        "--video_fps", 10, "--save_dir", tmp_path / "f")
    assert folder.returncode == 0, folder.stderr[-2000:]
    assert re.search(FPS_LINE.format(FRAMES, re.escape(backend)), folder.stdout)
    for a, b in zip(read_video(str(tmp_path / "f" / "frames.mp4")), video):
        assert np.abs(a.astype(int) - b).mean() < 1
    if backend == "onnxruntime":
        same = run_script(script, *args, "--image_path", setup["clip"], "--save_dir",
                          tmp_path / "i")
        assert same.returncode == 0, same.stderr[-2000:]
        assert len(read_video(str(tmp_path / "i" / "clip.mp4"))) == FRAMES


def test_predict_writes_overlay_video_matching_per_image_overlays(setup, tmp_path):
    common = ["--config", setup["config"], "--model_path", setup["weights"], "--device", "cpu"]
    proc = run_module("paddle_rtseg.predict", *common, "--video_path", setup["clip"],
                      "--save_dir", tmp_path / "v")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(FPS_LINE.format(FRAMES, "paddle-dygraph-cpu"), proc.stdout), proc.stdout
    per_image = run_module("paddle_rtseg.predict", *common, "--image_path", setup["folder"],
                           "--save_dir", tmp_path / "img", "--save_label")
    assert per_image.returncode == 0, per_image.stderr[-2000:]
    expected, masks = ([cv2.imread(str(tmp_path / "img" / folder / "f{}.png".format(i)),
                                   cv2.IMREAD_UNCHANGED) for i in range(FRAMES)]
                       for folder in ("added_prediction", "label"))
    assert len(np.unique(np.stack(masks))) >= 2
    check_video(str(tmp_path / "v" / "clip.mp4"), expected, masks)
    assert no_leftovers(tmp_path / "v")


def _bad_inputs(setup, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.RandomState(0).bytes(4096))
    empty = str(tmp_path / "empty.mp4")  # a valid container with zero frames
    cv2.VideoWriter(empty, cv2.VideoWriter_fourcc(*"mp4v"), 10, (WIDTH, HEIGHT)).release()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "a.png"), setup["frames"][0])
    cv2.imwrite(str(mixed / "b.png"), setup["frames"][1][:64])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = str(tmp_path / "out")
    return {
        "corrupt": (["--video_path", corrupt, "--save_dir", out], "Cannot read a frame"),
        "zero frames": (["--video_path", empty, "--save_dir", out], "Cannot read a frame"),
        "missing": (["--video_path", tmp_path / "nope.mp4", "--save_dir", out], "does not exist"),
        "both": (["--video_path", setup["clip"], "--image_path", setup["folder"], "--save_dir",
                  out], "not both"),
        "mixed sizes": (["--image_path", mixed, "--save_video", "--save_dir", out],
                        "must share a size"),
        "zero fps": (["--video_path", setup["clip"], "--video_fps", 0, "--save_dir", out],
                     "--video_fps must be positive"),
        "unwritable": (["--video_path", setup["clip"], "--save_dir", blocker / "sub"],
                       "blocker"),
    }


def test_bad_video_input_exits_2_and_writes_nothing(setup, tmp_path):
    script, args = runner_args(setup, "onnxruntime")
    for case, (flags, message) in _bad_inputs(setup, tmp_path).items():
        proc = run_script(script, *args, *flags)
        assert proc.returncode == 2, (case, proc.stderr[-2000:])
        assert proc.stderr.startswith("error: ") and message in proc.stderr, (case, proc.stderr)
        assert "Traceback" not in proc.stderr, case
        out = tmp_path / "out"
        assert not out.exists() or not os.listdir(out), (case, os.listdir(out))
    same = tmp_path / "same"
    same.mkdir()
    data = open(setup["clip"], "rb").read()
    (same / "clip.mp4").write_bytes(data)
    proc = run_script(script, *args, "--video_path", same / "clip.mp4", "--save_dir", same)
    assert proc.returncode == 2 and "would replace the input video" in proc.stderr, proc.stderr
    assert (same / "clip.mp4").read_bytes() == data and os.listdir(same) == ["clip.mp4"]
    proc = run_module("paddle_rtseg.predict", "--config", setup["config"], "--model_path",
                      setup["weights"], "--video_path", tmp_path / "corrupt.mp4", "--save_dir",
                      tmp_path / "out")
    assert proc.returncode == 2 and "Cannot read a frame" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_interrupted_video_leaves_no_file_and_progress_is_printed(setup, tmp_path):
    source = du.FrameSource(setup["folder"], du.list_images(setup["folder"]), du.read_image)
    calls = []

    def failing(frame):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return np.zeros(frame.shape[:2], np.uint8), 0.001

    out = io.StringIO()
    with pytest.raises(RuntimeError):
        du.segment_video(source, failing, str(tmp_path), du.color_map(), "test",
                         progress_every=2, out=out)
    assert os.listdir(tmp_path) == []  # the temporary video is gone, nothing renamed into place
    assert [l.split(":")[0] for l in out.getvalue().splitlines()] == ["frame 2/8", "frame 4/8"]
    source = du.FrameSource(setup["folder"], du.list_images(setup["folder"]), du.read_image)
    out = io.StringIO()
    path, meter = du.segment_video(source, lambda f: (np.ones(f.shape[:2], np.uint8), 0.001),
                                   str(tmp_path), du.color_map(), "test", progress_every=3,
                                   out=out)
    lines = out.getvalue().splitlines()
    assert [l.split(":")[0] for l in lines[:2]] == ["frame 3/8", "frame 6/8"]
    assert meter.frames == FRAMES and lines[2].startswith("Segmented 8 frames")
    assert os.listdir(tmp_path) == ["frames.mp4"]
