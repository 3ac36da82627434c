"""The Paddle 2.6 smoke suite (``compat_tests/``, in ``.venv-paddle26``) as one test of `make test`'s
parallel run, so that it shares the two workers with the rest instead of running alone after them.

`make test` builds ``.venv-paddle26`` in the background while the suite runs and names it here
(``RTSEG_PADDLE26_VENV``, and the builder's process id in ``RTSEG_PADDLE26_BUILD_PID``); this test
waits for the build's stamp (it runs among the last files, long after the build is done), fails
with the build log if the builder ended without one, then runs the compat suite there. Elsewhere it
skips with one line: ``make smoke-paddle26`` runs the same suite on its own.
"""
import os
import subprocess
import time

import pytest

from conftest import ROOT

WAIT_SECONDS = 3600


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_paddle26_smoke_suite_passes():
    venv = os.environ.get("RTSEG_PADDLE26_VENV")
    if not venv:
        pytest.skip("Paddle 2.6 smoke suite: run by make test (RTSEG_PADDLE26_VENV), or alone with "
                    "make smoke-paddle26")
    venv = os.path.join(ROOT, venv)
    stamp, log = os.path.join(venv, ".installed"), venv + ".log"
    builder = int(os.environ.get("RTSEG_PADDLE26_BUILD_PID", "0"))
    deadline = time.time() + WAIT_SECONDS
    while not os.path.isfile(stamp):
        if not (builder and _alive(builder)) or time.time() > deadline:
            text = open(log, errors="replace").read()[-4000:] if os.path.isfile(log) else ""
            pytest.fail("building {} ended without its stamp ({}): {}".format(venv, stamp, text))
        time.sleep(2)
    proc = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pytest", "-p",
                           "no:cacheprovider", "-c", "compat_tests/pytest.ini", "compat_tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout.splitlines()[-1] and "skipped" not in proc.stdout.splitlines()[-1]
