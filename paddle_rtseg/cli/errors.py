"""User-facing errors and the CLI wrapper that prints them as one paragraph (no stack trace)."""
import os
import sys
import tempfile
import threading

from paddle_rtseg.weights.checkpoints import CheckpointMismatchError
from paddle_rtseg.config import ConfigError
from paddle_rtseg.datasets.checked_io import DataError
from paddle_rtseg_runtime import DeployError
from paddle_rtseg_runtime.errors import DISK_FULL, DiskFullError, bounded, disk_full_message
from paddle_rtseg.exporting.static_graph import ExportError
from paddle_rtseg.cli import malloc_tuning
from paddle_rtseg_runtime.run_lock import RunLockError, release_all
from paddle_rtseg.weights.torch_reader import UnsafeCheckpointError


class OutputError(OSError):
    """An output location that cannot be written."""


class TrainingError(RuntimeError):
    """Training cannot go on (its loss or weights became NaN/inf); the message says what to do."""


USER_ERRORS = (ConfigError, DataError, CheckpointMismatchError, UnsafeCheckpointError, OutputError,
               RunLockError, ExportError, DeployError, FileNotFoundError, TrainingError)


def writable_dir(path, what="--save_dir"):
    """Create ``path`` if needed and prove it is writable; raise :class:`OutputError` otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        if e.errno in DISK_FULL:
            raise DiskFullError(disk_full_message(path)) from None
        raise OutputError("Cannot write to {} {} ({}). Choose a folder you can write to, or fix its "
                          "permissions.".format(what, path, e.strerror or e)) from None
    return path


def _raised_here(error, package=None):
    """True if the innermost frame of ``error``'s traceback is in this package (or ``package``)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    packages = [package] if package else ["paddle_rtseg", "paddle_rtseg_runtime"]
    dirs = tuple(os.path.dirname(os.path.abspath(__import__(p).__file__)) + os.sep for p in packages)
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(dirs)


_THREAD_ERROR = threading.Event()  # a user error ended another thread: its message
_THREAD_MESSAGE = []
_MAIN_REPORTED = threading.Event()  # the main thread printed it and is exiting
# Paddle's reader thread kills its queue before it re-raises a worker's error, so the main thread
# fails at the same time with this message and no reason
_READER_DIED = "Blocking queue is killed because the data reader raises an exception"


def _user_errors_in_threads_end_the_run():
    """Paddle's ``DataLoader`` with worker processes re-raises a worker's exception in its reader
    thread, which then dies alone; the main thread fails with "Blocking queue is killed" (a
    traceback without the reason). A user error ending any thread is therefore handed to the main
    thread, which prints it as the one paragraph and exits with status 2, unwinding normally (the
    run's lock released, the loader's worker processes ended). Should the main thread not report it
    within 30 s (stuck elsewhere), the hook does: lock released, workers ended, exit status 2.
    Other exceptions keep Python's default report."""
    default = threading.excepthook
    if getattr(default, "_paddle_rtseg", False):
        return

    def hook(args):
        if not isinstance(args.exc_value, USER_ERRORS):
            return default(args)
        message = str(args.exc_value)
        if "Traceback (most recent call last)" in message:  # Paddle's worker.reraise wraps it
            lines = [line for line in message.splitlines() if line.strip()]
            message = lines[-1].split(": ", 1)[-1]
        _THREAD_MESSAGE.append(message)
        _THREAD_ERROR.set()
        if _MAIN_REPORTED.wait(30):
            return
        sys.stderr.write("error: {}\n".format(bounded(" ".join(message.split()))))
        sys.stderr.flush()
        release_all()
        import multiprocessing
        for child in multiprocessing.active_children():  # the loader's workers would outlive us
            child.terminate()
        os._exit(2)

    hook._paddle_rtseg = True
    threading.excepthook = hook


def run_cli(main):
    """Run ``main()``; a user error prints ``error: <message>`` on stderr and exits with status 2
    (one line of at most :data:`~paddle_rtseg_runtime.errors.MAX_MESSAGE_CHARS` characters).

    Before ``main()`` it applies the command-line tools' malloc settings
    (:func:`paddle_rtseg.cli.malloc_tuning.apply`: freed tensors stay in the process for the next call).
    """
    malloc_tuning.apply()
    _user_errors_in_threads_end_the_run()
    try:
        return main()
    except USER_ERRORS as e:
        message = str(e)
    except OSError as e:  # a full disk anywhere we did not wrap (logs, PaddleSeg's own writes)
        if e.errno not in DISK_FULL:
            raise
        message = disk_full_message(e.filename)
    except SystemError as e:  # Paddle's reader thread died (see _READER_DIED)
        if _READER_DIED not in str(e):
            raise
        if _THREAD_ERROR.wait(10):  # the thread re-raises right after killing the queue
            message = _THREAD_MESSAGE[0]
        else:
            message = ("The data loader stopped: its reader thread raised the error printed "
                       "above. Fix that file or transform (or run with --num_workers 0).")
    except RuntimeError as e:  # PaddleSeg's builder wraps constructor errors in RuntimeError
        if "Tried to create a" not in str(e) and "was not found" not in str(e):
            raise
        cause = e.__context__ if isinstance(e.__context__, (ValueError, TypeError)) else e
        message = "The config could not be built: " + " ".join(str(cause).split())
    except ValueError as e:  # our own argument checks (e.g. an unknown token-merging mode)
        if not _raised_here(e):
            raise
        message = str(e)
    except AssertionError as e:  # PaddleSeg's builder asserts on incomplete configs
        if not _raised_here(e, "paddleseg") or not str(e):
            raise
        message = "Incomplete config: {}".format(e)
    _MAIN_REPORTED.set()
    sys.stderr.write("error: {}\n".format(bounded(" ".join(message.split("\n")))))
    sys.exit(2)
