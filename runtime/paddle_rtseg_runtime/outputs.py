"""Model folders are written without deleting anything the project did not write.

A writer builds its files in a staging folder, then :func:`publish` moves them into the output
folder one by one: other files there (a checkpoint, the user's notes) are never touched. The
folder's ``.paddle_rtseg_files`` lists the files the project wrote into it (:func:`record`; the
converters record their ``model.onnx`` / ``.nb`` too), so a re-export removes the previous
export's files that it does not write again (``model.json`` after a ``--format pir`` export, a
``model.onnx`` converted from the old weights) and nothing else.

``deploy.yaml`` is the completion marker every runner reads first: :func:`publish` removes it
before it changes anything and moves the new one in last, so a folder whose writer was killed
half-way has no ``deploy.yaml`` and is refused as incomplete instead of mixing old and new files.
"""
import json
import os

from .files import write_bytes_atomic

MANIFEST = ".paddle_rtseg_files"
MARKER = "deploy.yaml"


def written(folder):
    """Names of the files the project recorded as written into ``folder`` (empty if none)."""
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            names = json.load(f)
    except (OSError, ValueError):
        return set()
    if not isinstance(names, list):
        return set()
    return {n for n in names if isinstance(n, str) and n and os.path.basename(n) == n
            and n not in (".", "..", MANIFEST)}


def _write(folder, names):
    write_bytes_atomic(os.path.join(folder, MANIFEST),
                       (json.dumps(sorted(names)) + "\n").encode())


def record(path):
    """Record the file ``path`` as written by the project in its folder's list."""
    folder, name = os.path.split(os.path.abspath(path))
    _write(folder, written(folder) | {name})


def publish(staging, dest, marker=MARKER):
    """Move every file of the flat folder ``staging`` into ``dest`` (created if needed), replacing
    files of the same names that an earlier publish or :func:`record` listed, and removing the
    listed ones this one does not write; ``marker`` is removed first and moved in last. Removes
    ``staging``. Returns the names moved. A file of the same name that is not listed (the user's)
    is never replaced: :class:`DeployError`, before anything changes (``staging`` is left)."""
    names = sorted(os.listdir(staging))
    dirs = [n for n in names if not os.path.isfile(os.path.join(staging, n))]
    if dirs or MANIFEST in names:
        raise ValueError("publish() takes a flat folder of files, got {} in {}".format(
            ", ".join(dirs + [MANIFEST] * (MANIFEST in names)), staging))
    os.makedirs(dest, exist_ok=True)
    old = written(dest)
    foreign = [n for n in names if n not in old and os.path.lexists(os.path.join(dest, n))]
    if foreign:  # a file of the same name that no run of ours wrote: the user's, never replaced
        from .errors import DeployError
        raise DeployError("{} already holds {} that paddle_rtseg did not write (not listed in its "
                          "{}); it is not replaced. Write into another folder, or move {} away."
                          .format(dest, ", ".join(foreign), MANIFEST,
                                  "it" if len(foreign) == 1 else "them"))
    for name in names:  # programs we wrote load without a probe (program_probe)
        stem, ext = os.path.splitext(name)
        if ext in (".pdmodel", ".json") and stem + ".pdiparams" in names:
            from .program_probe import record_written
            record_written(os.path.join(staging, name), os.path.join(staging, stem + ".pdiparams"))
    _write(dest, old | set(names))  # a kill from here on leaves every file we touch listed
    if marker in names and os.path.lexists(os.path.join(dest, marker)):
        os.remove(os.path.join(dest, marker))  # the folder reads as incomplete until the end
    for name in sorted(old - set(names)):
        path = os.path.join(dest, name)
        if os.path.isfile(path) or os.path.islink(path):
            os.remove(path)
    for name in names:
        if name != marker:
            os.replace(os.path.join(staging, name), os.path.join(dest, name))
    _write(dest, names)
    if marker in names:
        os.replace(os.path.join(staging, marker), os.path.join(dest, marker))
    os.rmdir(staging)
    return names


# run_lock removes the ones a killed run left in a folder it locks: a name no user folder has
STAGING_PREFIX = ".paddle_rtseg-staging-"


def staging(dest):
    """A new empty staging folder beside ``dest`` for :func:`publish`."""
    import tempfile
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=STAGING_PREFIX + os.path.basename(os.path.abspath(dest)) + ".",
                            dir=parent)
