"""Atomic writes: a file appears complete or not at all (no half-written checkpoint after a kill)."""
import contextlib
import os
import tempfile

import paddle

from .deployment.files import default_mode


def atomic_save(obj, path, **kwargs):
    """``paddle.save`` to a temporary file in the same folder, then rename it onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)  # paddle.save creates missing folders too
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        _PADDLE_SAVE(obj, tmp, **kwargs)
        default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_PADDLE_SAVE = paddle.save


@contextlib.contextmanager
def atomic_paddle_save():
    """Within the block, ``paddle.save(obj, "<path>")`` is atomic (PaddleSeg's trainer saves with it)."""

    def save(obj, path, **kwargs):
        if isinstance(path, (str, os.PathLike)):
            return atomic_save(obj, os.fspath(path), **kwargs)
        return _PADDLE_SAVE(obj, path, **kwargs)

    paddle.save = save
    try:
        yield
    finally:
        paddle.save = _PADDLE_SAVE

