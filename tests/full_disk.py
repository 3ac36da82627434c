"""Run ``python -m <module> args...`` on a disk that is full, without filling one.

    python tests/full_disk.py paddle_rtseg.cli.train --config ... --save_dir out

Every output of the CLIs goes through a temporary file or folder (``tempfile.mkstemp`` /
``mkdtemp``) before it is renamed into place. Here those temporary files, and the files written into
those temporary folders, are symbolic links to ``/dev/full``, on which every write fails with the
kernel's own ``ENOSPC`` ("No space left on device"), exactly as on a full disk. Linux only.
"""
import os
import runpy
import sys
import tempfile

FULL = "/dev/full"
# what paddle.jit.save and the exporter write into their temporary folder
EXPORT_FILES = ("model.pdmodel", "model.pdiparams", "model.json", "model.pdiparams.info",
                "deploy.yaml")

_mkstemp, _mkdtemp = tempfile.mkstemp, tempfile.mkdtemp


def mkstemp(*args, **kwargs):
    fd, path = _mkstemp(*args, **kwargs)
    os.close(fd)
    os.remove(path)
    os.symlink(FULL, path)
    return os.open(path, os.O_WRONLY), path


def mkdtemp(*args, **kwargs):
    path = _mkdtemp(*args, **kwargs)
    if os.path.basename(path).startswith(".export-") and "-old-" not in os.path.basename(path):
        for name in EXPORT_FILES:
            os.symlink(FULL, os.path.join(path, name))
    return path


if __name__ == "__main__":
    tempfile.mkstemp, tempfile.mkdtemp = mkstemp, mkdtemp
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
