"""The command-line tools' malloc settings (paddle_rtseg.cli.malloc_tuning): when they apply, that they
stop the page faults of freeing and re-allocating large tensors, and that run_cli applies them.

What they change in speed is measured by scripts/process_setting_speedup.py --setting malloc."""
import os
import subprocess
import sys

import pytest

from paddle_rtseg.cli import errors, malloc_tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("environ,libc,expected", [
    ({}, "glibc", True),
    ({"PADDLE_RTSEG_MALLOC": "system"}, "glibc", False),
    ({"PADDLE_RTSEG_MALLOC": " System "}, "glibc", False),
    ({"PADDLE_RTSEG_MALLOC": ""}, "glibc", True),
    ({}, "", False),                               # musl and others: platform.libc_ver() is empty
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "glibc", False),
    ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "glibc", False),
    ({"LD_PRELOAD": "/opt/libfaketime.so"}, "glibc", True),
    ({"MALLOC_ARENA_MAX": "2"}, "glibc", True),    # arenas, not what apply() sets
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "glibc", False),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "glibc", False),
    ({"GLIBC_TUNABLES": "glibc.cpu.x86_ibt=on:glibc.malloc.mmap_max=4"}, "glibc", False),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "glibc", True),   # not what apply() sets
    ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"}, "glibc", True),
])
def test_decide(environ, libc, expected):
    change, reason = malloc_tuning.decide(environ, libc)
    assert change is expected, reason
    assert reason


class FakeLibc:
    def __init__(self, result=1, refuse=()):
        self.calls = []
        self.result = result
        self.refuse = refuse

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 0 if param in self.refuse else self.result


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(malloc_tuning, "_outcome", [])


def test_apply_sets_both_settings_once_per_process(fresh):
    libc = FakeLibc()
    malloc_tuning.apply({}, "glibc", libc)
    malloc_tuning.apply({}, "glibc", libc)
    assert libc.calls == [(-4, 0), (-1, 2 ** 31 - 1)]  # M_MMAP_MAX, M_TRIM_THRESHOLD (<malloc.h>)


def test_apply_leaves_malloc_alone_when_opted_out_or_refused(fresh):
    libc = FakeLibc()
    assert "system" in malloc_tuning.apply({"PADDLE_RTSEG_MALLOC": "system"}, "glibc", libc)
    assert libc.calls == []
    refused = malloc_tuning.apply({}, "glibc", FakeLibc(result=0))
    assert refused == "mallopt refused M_MMAP_MAX and M_TRIM_THRESHOLD: malloc left as it is"
    assert malloc_tuning.current() == refused  # what benchmarks print: not "not called"


def test_a_partial_refusal_is_named(fresh):
    libc = FakeLibc(refuse=(-1,))
    reason = malloc_tuning.apply({}, "glibc", libc)
    assert reason == ("mallopt refused M_TRIM_THRESHOLD: malloc partly tuned "
                      "(the other setting applied)")
    assert libc.calls == [(-4, 0), (-1, 2 ** 31 - 1)]  # both tried
    assert malloc_tuning.apply({}, "glibc", FakeLibc()) == reason  # once per process


def test_apply_after_apply_reports_what_was_applied(fresh):
    first = malloc_tuning.apply({}, "glibc", FakeLibc())
    assert malloc_tuning.apply({"PADDLE_RTSEG_MALLOC": "system"}, "glibc", FakeLibc()) == first


def test_run_cli_applies_it_before_main(monkeypatch):
    order = []
    monkeypatch.setattr(malloc_tuning, "apply", lambda: order.append("apply"))
    assert errors.run_cli(lambda: order.append("main") or 7) == 7
    assert order == ["apply", "main"]


CHURN = r"""
import resource, sys
import paddle
from paddle_rtseg.cli import malloc_tuning
if sys.argv[1] == "tuned":
    assert malloc_tuning.apply().startswith("glibc malloc keeps"), malloc_tuning.decide()
def churn():
    x = paddle.ones([16 * 1024 * 1024])  # 64 MiB, far above glibc's mmap threshold
    y = x * 2.0                           # another 64 MiB, freed with x
    return float(y[0])
for _ in range(5):  # the heap grows to the working set in a few calls (fragmentation), then holds
    churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    churn()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 6)
"""


def _thp_always():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(malloc_tuning.decide({}, None)[0] is False, reason="C library is not glibc")
@pytest.mark.skipif(_thp_always(), reason="transparent huge pages 'always': 2 MiB faults, few")
def test_freed_tensors_are_reused_without_page_faults():
    """Each 64 MiB tensor is a fresh mmap by default (16k faulted 4 KiB pages); tuned, the heap keeps
    them once it has grown to the working set (measured here: 49k faults a call against 0)."""
    env = {k: v for k, v in os.environ.items() if k not in malloc_tuning.GLIBC_VARIABLES
           + (malloc_tuning.OPT_OUT, "GLIBC_TUNABLES", "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    faults = {}
    for mode in ("default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", CHURN, mode], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        faults[mode] = float(proc.stdout.split()[-1])
    assert faults["default"] > 30000, faults  # at least two 64 MiB tensors: 32k pages
    assert faults["tuned"] < 0.2 * faults["default"], faults


def test_current_says_what_the_process_runs_with(fresh, monkeypatch):
    monkeypatch.setattr(malloc_tuning, "decide", lambda *a: (True, "would tune"))
    assert "not called" in malloc_tuning.current()
    malloc_tuning.apply({}, "glibc", FakeLibc())
    assert malloc_tuning.current() == "would tune"  # apply's reason, from decide()
