"""Atomic writes: a file appears complete or not at all (no half-written checkpoint after a kill)."""
import contextlib
import os
import re
import shutil
import tempfile

import paddle

from paddle_rtseg_runtime.errors import DiskFullError, reporting_full_disk
from paddle_rtseg_runtime.files import default_mode


def atomic_save(obj, path, **kwargs):
    """``paddle.save`` to a temporary file in the same folder, then rename it onto ``path``.
    A full disk raises :class:`DiskFullError` naming the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    with reporting_full_disk(path):
        os.makedirs(folder, exist_ok=True)  # paddle.save creates missing folders too
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        with reporting_full_disk(path):
            _PADDLE_SAVE(obj, tmp, **kwargs)
        default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_PADDLE_SAVE = paddle.save


class NonFiniteError(ValueError):
    """A checkpoint about to be saved holds NaN or infinite values (training diverged)."""


def non_finite(obj):
    """Names of the floating-point tensors/arrays in the state dict ``obj`` holding NaN or inf."""
    import numpy as np
    bad = []
    for name, value in (obj.items() if isinstance(obj, dict) else ()):
        if isinstance(value, dict):
            bad += ["{}.{}".format(name, n) for n in non_finite(value)]
            continue
        if isinstance(value, paddle.Tensor):
            if value.dtype not in (paddle.float16, paddle.float32, paddle.float64, paddle.bfloat16):
                continue
            finite = bool(paddle.isfinite(value.astype("float32")).all())
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            finite = bool(np.isfinite(value).all())
        else:
            continue
        if not finite:
            bad.append(str(name))
    return bad


def _refuse_non_finite(obj, path):
    bad = non_finite(obj)
    if bad:
        raise NonFiniteError(
            "Training diverged: the weights to be saved in {} hold NaN or infinite values ({} "
            "tensor(s), e.g. {}), so that checkpoint was not written.".format(
                path, len(bad), ", ".join(bad[:3])))


@contextlib.contextmanager
def atomic_paddle_save(finite=False):
    """Within the block, ``paddle.save(obj, "<path>")`` is atomic (PaddleSeg's trainer saves with it).
    ``finite``: a state dict holding NaN/inf is not saved (:class:`NonFiniteError`), and a checkpoint
    folder ``iter_N/`` it was part of is removed, so the last checkpoint left is a good one."""

    def save(obj, path, **kwargs):
        if not isinstance(path, (str, os.PathLike)):
            return _PADDLE_SAVE(obj, path, **kwargs)
        try:
            if finite:
                _refuse_non_finite(obj, os.fspath(path))
            return atomic_save(obj, os.fspath(path), **kwargs)
        except (DiskFullError, NonFiniteError):
            _drop_incomplete_checkpoint(os.fspath(path))
            raise

    paddle.save = save
    try:
        yield
    finally:
        paddle.save = _PADDLE_SAVE


def _drop_incomplete_checkpoint(path):
    """PaddleSeg writes a fresh ``iter_N/`` folder per checkpoint (``model.pdparams`` then
    ``model.pdopt``): when a save into one fails, remove the folder rather than leave a
    checkpoint that ``--resume_model`` cannot use."""
    folder = os.path.dirname(os.path.abspath(path))
    if re.fullmatch(r"iter_\d+", os.path.basename(folder)):
        shutil.rmtree(folder, ignore_errors=True)
