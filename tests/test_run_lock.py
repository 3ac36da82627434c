"""One run owns its --save_dir: a live run's folder is refused to a second train/export (real
processes), a killed run's lock and temporaries are taken over and removed, racing runs cannot both
take a stale lock."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import run_module
from paddle_rtseg_runtime import run_lock

# a process holding the lock of argv[1] until its stdin closes (run_lock is loaded from its file:
# stdlib only, so the holder starts in milliseconds, without Paddle)
HOLDER = """
import sys, time
from paddle_rtseg_runtime import run_lock  # no Paddle: the runtime package
if len(sys.argv) > 2:  # a race: wait at the start line, and take time to judge a lock stale
    while not __import__("os").path.exists(sys.argv[2]):
        time.sleep(0.01)
    why_stale = run_lock.why_stale
    run_lock.why_stale = lambda info: time.sleep(0.3) or why_stale(info)
try:  # HOLD_WRITES: the sub-folders the holder declares it writes (JSON list; default: all)
    writes = __import__("json").loads(__import__("os").environ.get("HOLD_WRITES", "null"))
    with run_lock.run_folder(sys.argv[1], writes=writes):
        print("locked", flush=True)
        sys.stdin.read()
except run_lock.RunLockError as e:
    print("refused", flush=True)
"""


def hold(folder, *start_line, writes=None):
    env = dict(os.environ, HOLD_WRITES=json.dumps(None if writes is None else list(writes)))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), *map(str, start_line)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if not start_line:
        assert proc.stdout.readline().strip() == "locked"
    return proc


def lock_of(folder):
    with open(os.path.join(folder, run_lock.LOCK_NAME)) as f:
        return json.load(f)


def test_second_train_and_export_are_refused_while_a_run_holds_the_folder(tmp_path,
                                                                          tiny_rtformer_config):
    out = tmp_path / "out"
    holder = hold(out)
    try:
        assert lock_of(out)["pid"] == holder.pid
        train = run_module("paddle_rtseg.train", "--config", tiny_rtformer_config, "--iters", 2,
                           "--save_dir", out, cwd=tmp_path)
        export = run_module("paddle_rtseg.export", "--config", tiny_rtformer_config,
                            "--save_dir", out, cwd=tmp_path)
        for proc in (train, export):
            assert proc.returncode == 2, proc.stderr[-2000:]
            assert "Traceback" not in proc.stderr
            error = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
            assert len(error) == 1, proc.stderr[-2000:]
            assert "--save_dir {} is in use by another run: pid {} on host {}".format(
                out, holder.pid, socket.gethostname()) in error[0]
            assert "Choose another --save_dir, or wait until that run ends" in error[0]
        assert sorted(os.listdir(out)) == [run_lock.LOCK_NAME]  # nothing written by either
    finally:
        holder.stdin.close()
        holder.wait()
    assert not out.exists()  # released on exit (and the folder it created, left empty, removed)


@pytest.mark.slow
def test_killed_runs_lock_and_temporaries_are_taken_over(tmp_path, tiny_rtformer_config):
    out = tmp_path / "out"
    holder = hold(out)
    holder.send_signal(signal.SIGKILL)  # killed: no chance to remove its lock
    holder.wait()
    assert lock_of(out)["pid"] == holder.pid
    (out / "iter_5").mkdir()
    (out / "iter_5" / ".tmp-k3j2model.pdparams").write_bytes(b"half a checkpoint")
    (out / ".write-test-abc").write_bytes(b"")
    (out / "other_run").mkdir()  # a folder of its own run inside: not ours to clean
    (out / "other_run" / run_lock.LOCK_NAME).write_text("{}")
    (out / "other_run" / ".tmp-live").write_bytes(b"")
    proc = run_module("paddle_rtseg.train", "--config", tiny_rtformer_config, "--iters", 2,
                      "--save_interval", 2, "--log_iters", 1, "--save_dir", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert "Taking over the lock of --save_dir {}: process {} is no longer running".format(
        out, holder.pid) in log
    assert "Removed 2 temporary file(s) left in {} by a run killed while writing: " \
           ".write-test-abc, iter_5/.tmp-k3j2model.pdparams".format(out) in log
    assert not (out / "iter_5" / ".tmp-k3j2model.pdparams").exists()
    assert (out / "other_run" / ".tmp-live").exists()
    assert (out / "iter_2" / "model.pdparams").is_file()
    assert not (out / run_lock.LOCK_NAME).exists()


def test_stale_means_provably_dead(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        mine = dict(run_lock._owner(), pid=sleeper.pid,
                    pid_start=run_lock._process_start(sleeper.pid))
        assert run_lock.why_stale(mine) is None
        if mine["pid_start"] is not None:  # Linux: a reused pid is told apart by its start time
            assert "belongs to another process" in run_lock.why_stale(dict(mine, pid_start=1))
        if mine["boot_id"]:
            assert "rebooted" in run_lock.why_stale(dict(mine, boot_id="another-boot"))
        assert run_lock.why_stale(dict(mine, host="elsewhere", pid=1)) is None  # cannot check
        assert "unreadable" in run_lock.why_stale(None)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "no longer running" in run_lock.why_stale(dict(mine, pid_start=None))
    # another host's lock is refused with the way out (delete the lock file)
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / run_lock.LOCK_NAME).write_text(json.dumps(dict(mine, host="elsewhere")))
    with pytest.raises(run_lock.RunLockError, match="another machine.*delete .*paddle_rtseg.lock"):
        with run_lock.run_folder(str(folder)):
            pass


def test_racing_runs_take_a_stale_lock_only_once(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / run_lock.LOCK_NAME).write_text(json.dumps(dict(run_lock._owner(), pid=2 ** 22 + 7)))
    go = tmp_path / "go"
    racers = [hold(out, go) for _ in range(4)]
    time.sleep(0.5)  # all four started and waiting at the start line
    go.write_text("")
    answers = [p.stdout.readline().strip() for p in racers]  # (all 4 "locked" without flock)
    for p in racers:
        p.stdin.close()
        p.wait()
    assert sorted(answers) == ["locked", "refused", "refused", "refused"]


def test_nested_and_failed_runs(tmp_path):
    folder = str(tmp_path / "new")
    with run_lock.run_folder(folder):
        with run_lock.run_folder(folder):  # re-entrant (deploy_all -> export)
            assert lock_of(folder)["pid"] == os.getpid()
        assert os.path.exists(os.path.join(folder, run_lock.LOCK_NAME))
        assert run_lock.child_env(folder)
    assert not os.path.exists(folder)  # created by the run and left empty: removed
    with pytest.raises(ValueError):
        with run_lock.run_folder(folder):
            raise ValueError("the run failed")
    assert not os.path.exists(folder)  # released on an exception too


def test_runners_clean_only_the_top_of_their_folder(tmp_path):
    """recursive=False (the deploy/ runners, which write only at --save_dir's top and are often
    pointed at folders holding other things): a dead run's temporaries there are removed, nothing
    below is touched."""
    (tmp_path / ".tmp-mask.png").write_bytes(b"half")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / ".tmp-other.png").write_bytes(b"someone else's")
    logged = []
    with run_lock.run_folder(str(tmp_path), log=logged.append, recursive=False):
        pass
    assert not (tmp_path / ".tmp-mask.png").exists()
    assert (tmp_path / "results" / ".tmp-other.png").exists()
    assert logged and ".tmp-mask.png" in logged[0] and "other" not in logged[0]


def test_a_re_run_child_dies_with_its_killed_parent(tmp_path):
    """export / quantize / fit_budget re-run themselves in a child (FLAGS_enable_pir_api) with
    ``preexec_fn=run_lock.die_with_parent``: ``kill -9`` of the command the user started ends the
    child too (it went on writing and holding the lock as an orphan)."""
    pid_file = tmp_path / "child.pid"
    (tmp_path / "child.py").write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    (tmp_path / "parent.py").write_text(
        "import subprocess, sys\nfrom paddle_rtseg_runtime.run_lock import die_with_parent\n"
        "subprocess.Popen([sys.executable] + sys.argv[1:], preexec_fn=die_with_parent).wait()\n")
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"),
                               str(tmp_path / "child.py"), str(pid_file)])
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open("/proc/{}/stat".format(child)) as f:  # reaped by init once it has exited
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its killed parent by 10 s")
