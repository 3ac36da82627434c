"""One run owns its output folder: a lock file in ``--save_dir`` a killed run cannot leave stuck.

``<save_dir>/.paddle_rtseg.lock`` holds the owner's pid, host, boot id, process start time, start
date and command (JSON). It is created with ``O_CREAT | O_EXCL`` and removed when the run ends, on
success or on an exception. A second run into the same folder fails with :class:`RunLockError`
naming the owner; a lock whose process is gone (same host, and the pid is dead, reused by another
process, or from before a reboot) is stale and taken over with a warning. Check-and-create happens
under ``flock`` on the parent folder, so two runs racing for one stale lock cannot both win.

A run's lock covers the parts of its folder tree it writes (``run_folder(writes=...)``; all of it
unless declared: ``train`` declares ``iter_*`` and ``best_model``): a run whose folder lies inside
them (an export into a training's ``iter_N/``), or that would write into a live run's folder, is
refused too, unless that run is this process or one of its parents (``quantize`` exporting into
``<save_dir>/fp32``).

Once the lock is ours, any temporary file of the atomic writers (``.tmp-*``, ``.write-test-*``) or
staging folder (``.paddle_rtseg-staging-*``) in the folder belongs to a dead run and is removed (sub-folders
holding their own lock are left alone).
The lock is re-entrant in one process (``demo`` -> ``train``, ``deploy_all`` -> ``export``) and is
handed to a child process through :func:`child_env` (the exporter re-running itself).
"""
import contextlib
import fnmatch
import datetime
import json
import os
import shutil
import socket
import sys

LOCK_NAME = ".paddle_rtseg.lock"
TEMP_PREFIXES = (".tmp-", ".write-test-")
STAGING_PREFIX = ".paddle_rtseg-staging-"  # folders of outputs.staging(), same name there
_INHERIT_ENV = "_RTSEG_INHERITED_LOCK"
_held = {}  # realpath of a folder -> how many nested run_folder() blocks hold its lock
_created = set()  # folders the lock created: removed again if the run leaves them empty


class RunLockError(OSError):
    """The output folder is in use by another run (or its lock cannot be written)."""


def _warn(message):
    sys.stderr.write("warning: {}\n".format(message))


def _read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid):
    """Start time of ``pid`` in clock ticks since boot (Linux), or None where unknown."""
    stat = _read_text("/proc/{}/stat".format(pid))
    if not stat:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces
    except (IndexError, ValueError):
        return None


def _boot_id():
    return _read_text("/proc/sys/kernel/random/boot_id")


def _owner():
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
            "pid_start": _process_start(os.getpid()),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}


def _pid_alive(pid):
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there; assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def why_stale(info):
    """Why the lock described by ``info`` (dict, or None if unreadable) belongs to a dead run, or
    None if its owner may still be running."""
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
        return "the lock file is empty or unreadable (a run killed while creating it)"
    if info.get("host") != socket.gethostname():
        return None  # another machine's process: cannot be checked from here
    boot = _boot_id()
    if info.get("boot_id") and boot and info["boot_id"] != boot:
        return "it was written before this machine rebooted"
    if not _pid_alive(info["pid"]):
        return "process {} is no longer running".format(info["pid"])
    start = _process_start(info["pid"])
    if info.get("pid_start") is not None and start is not None and start != info["pid_start"]:
        return "process {} is no longer running (its pid now belongs to another process)".format(
            info["pid"])
    return None


def _read_lock(path):
    text = _read_text(path)
    try:
        info = json.loads(text) if text else None
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _same_owner(a, b):
    return isinstance(a, dict) and isinstance(b, dict) and all(
        a.get(k) == b.get(k) for k in ("pid", "host", "pid_start"))


@contextlib.contextmanager
def folder_guard(folder):
    """Exclusive ``flock`` on the parent of ``folder`` while the block runs (a few system calls):
    serialises lock check-and-create, release and the exporter's folder swap. Best effort where
    ``flock`` is unavailable."""
    parent = os.path.dirname(os.path.abspath(folder))
    try:
        import fcntl
        fd = os.open(parent, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. a file system without flock: go on unguarded
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


def _create(path, info):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
        f.write("\n")


MAX_TREE_FOLDERS = 20000  # sub-folders searched for a nested run's lock (a bound on the walk)


def _ancestor_pids():
    """This process and its parents (Linux: the whole chain; elsewhere the parent only)."""
    pids, pid = [os.getpid()], os.getppid()
    while pid > 1 and pid not in pids and len(pids) < 64:
        pids.append(pid)
        stat = _read_text("/proc/{}/stat".format(pid))
        try:
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (AttributeError, IndexError, ValueError):
            break
    return pids


def _live_foreign(lock_path):
    """The owner of ``lock_path`` if that lock is live and held by another process tree, else
    None (stale locks of other folders are left to their own next run)."""
    info = _read_lock(lock_path)
    if info is None or why_stale(info) is not None:
        return None
    if info.get("host") == socket.gethostname() and info.get("pid") in _ancestor_pids():
        return None
    return info


def _nested_locks(folder):
    """Lock files below ``folder`` (not its own), searching at most MAX_TREE_FOLDERS folders."""
    for seen, (root, _, files) in enumerate(os.walk(folder)):
        if seen >= MAX_TREE_FOLDERS:
            return
        if root != folder and LOCK_NAME in files:
            yield os.path.join(root, LOCK_NAME)


def _writes_into(writes, folder, inner):
    """Whether a run of ``folder`` that writes the sub-folders ``writes`` (glob patterns of names
    directly below ``folder``; None: anywhere below it) would write into ``inner``."""
    if writes is None:
        return True
    first = os.path.relpath(inner, folder).split(os.sep)[0]
    return any(fnmatch.fnmatchcase(first, pattern) for pattern in writes)


def _check_tree(save_dir, what, nested=True, writes=None):
    """Refuse ``save_dir`` when it lies inside a part of a live run's folder that run writes (the
    whole tree unless it declared its sub-folders, as ``train`` does: ``iter_*``, ``best_model``),
    or (``nested``) contains a live run's folder inside a part this run writes (``writes``): one
    run's files would replace the other's. PaddleSeg's layout, an export or predict into
    ``output/xxx`` while a training writes ``output/iter_N``, stays allowed."""
    real = os.path.realpath(save_dir)
    parent = real
    while os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
        path = os.path.join(parent, LOCK_NAME)
        info = _live_foreign(path) if os.path.lexists(path) else None
        if info and _writes_into(info.get("writes"), parent, real):
            raise RunLockError(_tree_message(save_dir, what, "lies inside", parent, path, info))
    for path in (_nested_locks(real) if nested and os.path.isdir(real) else ()):
        info = _live_foreign(path)
        if info and _writes_into(writes, real, os.path.dirname(path)):
            raise RunLockError(_tree_message(save_dir, what, "contains", os.path.dirname(path),
                                             path, info))


def _tree_message(save_dir, what, relation, other, path, info):
    return ("{} {} {} the folder {} of another run: pid {} on host {}, started {} ({}). A run owns "
            "the parts of its folder tree it writes (an export into a training's iter_N/ would "
            "replace that checkpoint). Choose a {} outside what that run writes, or wait until it "
            "ends; if it is no longer running, delete {}.".format(
                what, save_dir, relation, other, info.get("pid"), info.get("host"),
                info.get("started", "?"), info.get("command", "?"), what, path))


def _in_use_message(save_dir, what, path, info):
    owner = "pid {} on host {}".format(info.get("pid"), info.get("host"))
    if info.get("host") != socket.gethostname():
        owner += " (another machine, so it cannot be checked from here)"
    return ("{} {} is in use by another run: {}, started {} ({}). Two runs in one folder overwrite "
            "each other's files (best_model/ would hold the other run's weights). Choose another "
            "{}, or wait until that run ends; if it is no longer running, delete {}.".format(
                what, save_dir, owner, info.get("started", "?"), info.get("command", "?"), what,
                path))


def _acquire(save_dir, what, log, nested=True, writes=None):
    """Take the lock of ``save_dir``; returns False when this process (tree) already holds it.
    ``nested``: also refuse a folder that contains a live run's folder (see :func:`_check_tree`)."""
    top = os.path.abspath(save_dir)  # the topmost folder this call creates
    while not os.path.isdir(os.path.dirname(top)) and os.path.dirname(top) != top:
        top = os.path.dirname(top)
    try:
        if not os.path.isdir(save_dir):
            with contextlib.suppress(FileExistsError):  # unless another run just made it
                os.makedirs(save_dir)
                _created.add(os.path.realpath(save_dir))
    except OSError as e:
        raise RunLockError("Cannot create {} {} ({}). Choose a folder you can write to.".format(
            what, save_dir, e.strerror or e)) from None
    key = os.path.realpath(save_dir)
    if key in _held:
        _held[key] += 1
        return False
    path = os.path.join(save_dir, LOCK_NAME)
    try:
        with folder_guard(save_dir):
            _check_tree(save_dir, what, nested, writes)
            current = _read_lock(path) if os.path.lexists(path) else False
            inherited = os.environ.get(_INHERIT_ENV, "")
            if (current and inherited == "{}:{}".format(key, current.get("pid"))
                    and current.get("pid") == os.getppid()):
                _held[key] = 1  # our parent holds it and handed it to us: nested, not released here
                return False
            if current is not False:
                reason = why_stale(current)
                if reason is None:
                    raise RunLockError(_in_use_message(save_dir, what, path, current))
                log("Taking over the lock of {} {}: {}{}.".format(
                    what, save_dir, reason, "" if not current else " (it was pid {}: {})".format(
                        current.get("pid"), current.get("command", "?"))))
                os.remove(path)
            _create(path, dict(_owner(), writes=None if writes is None else list(writes)))
    except OSError as e:
        if key in _created:  # refused: leave none of the (empty) folders it made behind
            _created.discard(key)
            folder = os.path.abspath(save_dir)
            with contextlib.suppress(OSError):
                while True:
                    os.rmdir(folder)
                    if folder == top:
                        break
                    folder = os.path.dirname(folder)
        if isinstance(e, RunLockError):
            raise
        raise RunLockError("Cannot lock {} {} ({}). Choose a folder you can write to.".format(
            what, save_dir, e.strerror or e)) from None
    _held[key] = 1
    return True


def _release(save_dir):
    key = os.path.realpath(save_dir)
    _held[key] -= 1
    if _held[key]:
        return
    del _held[key]
    path = os.path.join(save_dir, LOCK_NAME)
    with folder_guard(save_dir):
        if _same_owner(_read_lock(path), _owner()):
            os.remove(path)
        if key in _created:  # a failed run leaves no empty folder behind
            _created.discard(key)
            with contextlib.suppress(OSError):
                os.rmdir(save_dir)


def release_all():
    """Remove every lock this process holds, at once: for a process about to end without
    unwinding (``os._exit`` from a data-loader thread), so no lock is left behind."""
    for key in list(_held):  # the main thread may be releasing the same lock meanwhile
        path = os.path.join(key, LOCK_NAME)
        with contextlib.suppress(OSError):
            if _same_owner(_read_lock(path), _owner()):
                os.remove(path)
        _held.pop(key, None)


def remove_stale_temporaries(save_dir, recursive=True):
    """Delete the atomic writers' temporaries under ``save_dir`` (call only while holding its lock:
    then every one is from a dead run); ``recursive=False``: in ``save_dir`` itself only.
    Sub-folders with their own lock file are skipped. Returns the removed paths, relative to
    ``save_dir``."""
    removed = []
    for root, dirs, files in os.walk(save_dir):
        for name in [d for d in dirs if d.startswith(STAGING_PREFIX)]:  # outputs.staging()
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(os.path.relpath(os.path.join(root, name), save_dir) + "/")
        dirs[:] = [d for d in dirs if recursive and not d.startswith(STAGING_PREFIX) and
                   not os.path.lexists(os.path.join(root, d, LOCK_NAME))]
        for name in files:
            if name.startswith(TEMP_PREFIXES):
                try:
                    os.remove(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                removed.append(os.path.relpath(os.path.join(root, name), save_dir))
    return sorted(removed)


@contextlib.contextmanager
def run_folder(save_dir, what="--save_dir", log=_warn, recursive=True, writes=None):
    """Hold the lock of ``save_dir`` for the block (creating the folder); on first entry remove the
    temporaries a killed run left there (``recursive=False``: only in ``save_dir`` itself, for runs
    that write nothing deeper, such as the runners, often pointed at folders holding other things),
    and say so through ``log``. ``writes``: glob patterns of the sub-folders the run writes (None:
    any), so that other runs may use the rest of its tree (:func:`_check_tree`)."""
    if _acquire(save_dir, what, log, nested=recursive, writes=writes):
        removed = remove_stale_temporaries(save_dir, recursive)
        if removed:
            log("Removed {} temporary file(s) left in {} by a run killed while writing: {}".format(
                len(removed), save_dir, ", ".join(removed[:10]) + (" ..." if len(removed) > 10
                                                                   else "")))
    try:
        yield
    finally:
        _release(save_dir)


def child_env(save_dir):
    """Environment entries that hand this process's lock of ``save_dir`` to a child process."""
    key = os.path.realpath(save_dir)
    return {_INHERIT_ENV: "{}:{}".format(key, os.getpid())} if key in _held else {}


def die_with_parent():
    """``preexec_fn`` for a child that does its parent's work (the ``FLAGS_enable_pir_api`` re-runs
    of export and quantize): the kernel sends it SIGTERM when the parent dies, so a killed command
    does not go on writing and holding its folder's lock in an orphan (seen after ``kill -9`` of
    quantize). Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing."""
    import signal
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
