"""Video in, overlay video out: the real-time path shared by ``python -m paddle_rtseg.predict`` and
the runners in ``deploy/``.

Frames come from a video file (``--video_path``, or an ``--image_path`` that is a video) or from a
folder of frames (``--image_path frames/ --save_video``). Each frame is segmented, blended with its
colour mask (as the per-image overlays are) and written with OpenCV's ``VideoWriter`` as MPEG-4
Part 2 (``mp4v``) in ``<save_dir>/<name>.mp4``; the file is written under a temporary name and
renamed only when complete. The run prints frames per second, end to end (decode + preprocessing +
model + overlay + encode) and model only, with the backend and precision.
"""
import os
import sys
import tempfile
import time

import numpy as np

from .errors import DeployError
from .files import default_mode
from .visualize import overlay

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ts")
OUTPUT_EXTENSION = ".mp4"
FOURCC = "mp4v"  # the pinned opencv-python wheel's FFmpeg writes mp4v/.mp4 and MJPG/.avi, not avc1
DEFAULT_FPS = 25.0
PROGRESS_EVERY = 100  # frames between progress lines


def add_video_args(parser):
    """The video flags of ``predict`` and the runners (``--video_path`` as in PaddleSeg's
    PP-HumanSeg and Matting demos)."""
    parser.add_argument("--video_path", default=None,
                        help="a video file to segment into <save_dir>/<name>.mp4 (an --image_path "
                             "that is a video file works too)")
    parser.add_argument("--save_video", action="store_true",
                        help="with a folder of frames as --image_path: write one overlay video "
                             "<save_dir>/<folder>.mp4 instead of per-image files")
    parser.add_argument("--video_fps", type=float, default=None,
                        help="frame rate of the written video (default: the input video's, or "
                             "{:g} for a folder of frames)".format(DEFAULT_FPS))


def is_video(path):
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def video_input(args):
    """The path to segment as a video (a video file or, with ``--save_video``, a folder of frames),
    or None for the per-image path. Raises :class:`DeployError` for conflicting flags."""
    image_path = getattr(args, "image_path", None)
    if args.video_fps is not None and not args.video_fps > 0:
        raise DeployError("--video_fps must be positive, got {:g}.".format(args.video_fps))
    if args.video_path and image_path:
        raise DeployError("Pass either --image_path or --video_path, not both.")
    if not args.video_path and not image_path:
        raise DeployError("Nothing to segment: pass --image_path (an image or a folder of images) "
                          "or --video_path (a video file).")
    if args.video_path:
        if os.path.isdir(args.video_path):
            raise DeployError("--video_path {} is a folder; pass a folder of frames as "
                              "--image_path with --save_video.".format(args.video_path))
        if not os.path.isfile(args.video_path):
            raise DeployError("--video_path {} does not exist.".format(args.video_path))
        return args.video_path
    if is_video(image_path):
        return image_path
    if args.save_video:
        if not os.path.isdir(image_path):
            raise DeployError("--save_video needs a folder of frames as --image_path; {} is not a "
                              "folder.".format(image_path))
        return image_path
    if args.video_fps is not None:
        raise DeployError("--video_fps applies only to a video input or --save_video.")
    return None


class _stderr_captured:
    """Collect what C code (FFmpeg inside OpenCV) writes to file descriptor 2 meanwhile, so a bad
    video gives one error paragraph instead of FFmpeg's log lines before it."""

    def __enter__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)

    def text(self):
        self._file.seek(0)
        text = self._file.read().decode("utf-8", "replace").strip()
        self._file.close()
        return text


class FrameSource:
    """BGR uint8 frames of a video file, or of a list of image files read with ``read``.

    ``name`` names the output video, ``fps`` is the input's frame rate (None for images) and
    ``count`` the expected number of frames (the container's count for a video: an estimate).
    """

    def __init__(self, path, images=None, read=None):
        import cv2
        self.path = path
        self.name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "video"
        self._images, self._read, self._capture = images, read, None
        if images is not None:
            if not images:
                raise DeployError("No frames in {}.".format(path))
            self.fps, self.count = None, len(images)
            self._first = read(images[0])
        else:
            with _stderr_captured() as log:
                capture = cv2.VideoCapture(path)
                ok, first = capture.read() if capture.isOpened() else (False, None)
            if not ok or first is None:
                capture.release()
                said = " ".join(line.split("] ")[-1] for line in log.text().splitlines()[-2:])
                raise DeployError("Cannot read a frame from video {}{}: the file is corrupt, empty "
                                  "or in a format this OpenCV build cannot decode. Re-encode it "
                                  "(e.g. `ffmpeg -i in -c:v libx264 out.mp4`) or extract its "
                                  "frames into a folder and pass that with --save_video.".format(
                                      path, " (FFmpeg: {})".format(said) if said else ""))
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if np.isfinite(fps) and 0 < fps < 1000 else None
            self.count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) or None
            self._capture, self._first = capture, first
        self.size = self._first.shape[1], self._first.shape[0]  # (W, H), as VideoWriter takes it

    def __iter__(self):
        first, self._first = self._first, None
        if first is None:
            raise DeployError("A FrameSource can be iterated once.")
        yield self._check(first, 0)
        if self._images is not None:
            for i, path in enumerate(self._images[1:], 1):
                yield self._check(self._read(path), i)
        else:
            try:
                while True:
                    ok, frame = self._capture.read()
                    if not ok:
                        break
                    yield frame
            finally:
                self._capture.release()

    def _check(self, frame, index):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise DeployError("Frame {} is not a 3-channel colour image.".format(
                self._images[index] if self._images else index))
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise DeployError("Frame {} is {}x{} but the first frame is {}x{}: the frames of one "
                              "video must share a size. Resize them, or segment the folder without "
                              "--save_video.".format(self._images[index], frame.shape[1],
                                                     frame.shape[0], *self.size))
        return frame


class AtomicVideoWriter:
    """``cv2.VideoWriter`` into a temporary file next to ``path``, renamed onto it by
    :meth:`commit`; :meth:`discard` (or leaving the ``with`` block uncommitted) deletes it."""

    def __init__(self, path, fps, size, fourcc=FOURCC):
        import cv2
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1],
                                            dir=folder)
            os.close(fd)
        except OSError as e:
            raise DeployError("Cannot write to --save_dir {} ({}). Choose a folder you can write "
                              "to.".format(folder, e.strerror or e)) from None
        self.path, self.frames, self.writer = path, 0, None
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps),
                                      tuple(size))
        if not self.writer.isOpened():
            self.discard()
            raise DeployError("OpenCV cannot write {} video {} ({}x{} at {:g} FPS); this build "
                              "writes mp4v .mp4 and MJPG .avi.".format(fourcc, path, size[0],
                                                                       size[1], fps))

    def write(self, frame):
        self.writer.write(np.ascontiguousarray(frame))
        self.frames += 1

    def commit(self):
        self.writer.release()
        if not os.path.isfile(self.tmp) or os.path.getsize(self.tmp) == 0:
            self.discard()
            raise DeployError("OpenCV wrote nothing to {}.".format(self.path))
        default_mode(self.tmp)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self):
        if self.writer is not None:
            self.writer.release()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if os.path.exists(self.tmp):
            self.discard()


class FpsMeter:
    """Frames per second end to end (wall time from the first frame read) and model only (the
    summed time of the calls the caller reports)."""

    def __init__(self):
        self.frames, self.model_seconds, self.start, self.seconds = 0, 0.0, time.perf_counter(), 0.0

    def add(self, model_seconds):
        self.frames += 1
        self.model_seconds += model_seconds
        self.seconds = time.perf_counter() - self.start

    @property
    def fps(self):
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    @property
    def model_fps(self):
        return self.frames / self.model_seconds if self.model_seconds > 0 else float("inf")


def segment_video(source, segment, save_dir, palette, backend, precision="fp32", fps=None,
                  progress_every=PROGRESS_EVERY, out=sys.stdout):
    """Segment every frame of ``source`` with ``segment(frame) -> (label, model_seconds)``, write
    the overlays to ``<save_dir>/<source.name>.mp4`` and print progress and the FPS summary.
    Returns ``(path, meter)``."""
    fps = fps if fps is not None else source.fps or DEFAULT_FPS
    if not fps > 0:
        raise DeployError("--video_fps must be positive, got {:g}.".format(fps))
    path = os.path.join(save_dir, source.name + OUTPUT_EXTENSION)
    if os.path.abspath(path) == os.path.abspath(source.path) or (
            os.path.exists(path) and os.path.samefile(path, source.path)):
        raise DeployError("The overlay video {} would replace the input video; choose another "
                          "--save_dir.".format(path))
    total = "/{}".format(source.count) if source.count else ""
    with AtomicVideoWriter(path, fps, source.size) as writer:
        meter = FpsMeter()
        for frame in source:
            label, seconds = segment(frame)
            writer.write(overlay(frame, label, palette))
            meter.add(seconds)
            if progress_every and meter.frames % progress_every == 0:
                print("frame {}{}: {:.1f} FPS".format(meter.frames, total, meter.fps), file=out,
                      flush=True)
        writer.commit()
    print("Segmented {} frames of {} into {}: {:.1f} FPS end to end, {:.1f} FPS model only "
          "(backend {}, precision {})".format(meter.frames, source.path, path, meter.fps,
                                              meter.model_fps, backend, precision), file=out,
          flush=True)
    return path, meter
