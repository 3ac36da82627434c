"""Atomic, paddle-free file writes shared by the exporter, the CLIs and the runners."""
import os
import tempfile

from .errors import reporting_full_disk


def default_mode(path):
    """Give ``path`` (made 0600/0700 by ``mkstemp``/``mkdtemp``) the mode a plain open()/mkdir()
    would, so renamed-into-place outputs are readable like any other."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def write_bytes_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` via a temporary file renamed into place; a full disk
    raises :class:`DiskFullError` and leaves nothing behind."""
    folder = os.path.dirname(os.path.abspath(path))
    with reporting_full_disk(path):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with reporting_full_disk(path), os.fdopen(fd, "wb") as f:
            f.write(data)
        default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def not_a_file(path):
    """Why ``path`` is not a file to read, as the end of a sentence: ``does not exist``, ``is a
    folder, not a file`` or ``is not a regular file (a device, pipe or socket)``; messages said
    "does not exist" for a folder or ``/dev/null``."""
    if os.path.isdir(path):
        return "is a folder, not a file"
    if os.path.lexists(path):
        return "is not a regular file (a device, pipe or socket)"
    return "does not exist"
