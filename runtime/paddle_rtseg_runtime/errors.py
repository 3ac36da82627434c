"""The error types of the deployment runtime (shared by the CLIs)."""
import contextlib
import errno
import os


#: The most characters an error message may have (one error line was once 600 KB: the repr of a
#: huge object). Longer messages keep their start and their end (the fix), and say what was cut.
MAX_MESSAGE_CHARS = 2000


def bounded(message, most=MAX_MESSAGE_CHARS):
    """``message`` cut to at most about ``most`` characters: its head and tail, the middle named."""
    message = str(message)
    if len(message) <= most:
        return message
    tail = most // 4
    head = most - tail - 40
    return "{} [... {} characters cut ...] {}".format(message[:head], len(message) - head - tail,
                                                      message[-tail:])


class DeployError(ValueError):
    """A model directory, image or option the runner cannot use; the message says the fix
    (bounded by :data:`MAX_MESSAGE_CHARS`)."""

    def __init__(self, message="", *args):
        super().__init__(bounded(message), *args)


class DiskFullError(DeployError):
    """An output could not be written because its disk (or quota) is full."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(where):
    """The one message for a full disk; ``where`` is the folder (or file) being written."""
    return ("The disk is full at {} (no space left on device). Free space or choose another "
            "--save_dir.".format(where or "the output folder"))


@contextlib.contextmanager
def reporting_full_disk(path):
    """Turn "no space left on device" (or a full quota) while writing ``path`` into
    :class:`DiskFullError` naming where; other errors pass through unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        raise DiskFullError(disk_full_message(os.path.dirname(os.path.abspath(path)))) from None
