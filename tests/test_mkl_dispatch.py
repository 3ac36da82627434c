"""MKL's AVX2 path on AMD CPUs (paddle_rtseg_runtime.mkl_dispatch): when it is chosen (faked cpuinfo), that
a user's own setting wins, and that importing paddle_rtseg sets it before Paddle (and so MKL) loads.
What it changes in speed is measured by scripts/process_setting_speedup.py, not asserted here."""
import json
import os
import subprocess
import sys

from conftest import ROOT
from paddle_rtseg_runtime import cpu_features, mkl_dispatch

ZEN = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n"
HYGON = "processor\t: 0\nvendor_id\t: HygonGenuine\nflags\t\t: fpu sse2 avx avx2 fma\n"
OLD_AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx\n"
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n"


def write(tmp_path, text, name="cpuinfo"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def decide(tmp_path, text, environ=None):
    path = write(tmp_path, text)
    return mkl_dispatch.decide(environ if environ is not None else {},
                               cpu_features.cpu_vendor(path), cpu_features.cpu_flags(path))


def test_avx2_path_only_on_amd_cpus_that_have_avx2_and_fma(tmp_path):
    value, reason = decide(tmp_path, ZEN)
    assert value == "5" and "AuthenticAMD" in reason
    assert decide(tmp_path, HYGON)[0] == "5"
    value, reason = decide(tmp_path, OLD_AMD)
    assert value is None and "avx2 and fma" in reason
    value, reason = decide(tmp_path, INTEL)
    assert value is None and "GenuineIntel" in reason
    assert decide(tmp_path, "")[0] is None  # no cpuinfo (not Linux): leave MKL alone


def test_a_users_setting_is_left_alone_even_empty(tmp_path):
    for user in ("", "4"):
        environ = {"MKL_DEBUG_CPU_TYPE": user}
        value, reason = decide(tmp_path, ZEN, environ)
        assert value is None and "set by the user" in reason
        path = write(tmp_path, ZEN)
        mkl_dispatch.apply(environ, cpu_features.cpu_vendor(path), cpu_features.cpu_flags(path))
        assert environ == {"MKL_DEBUG_CPU_TYPE": user}
    environ = {}
    path = write(tmp_path, ZEN)
    mkl_dispatch.apply(environ, cpu_features.cpu_vendor(path), cpu_features.cpu_flags(path))
    assert environ == {"MKL_DEBUG_CPU_TYPE": "5"}


def test_cpuinfo_vendor_and_flags(tmp_path):
    path = write(tmp_path, ZEN)
    assert cpu_features.cpu_vendor(path) == "AuthenticAMD"
    assert cpu_features.cpu_flags(path) >= {"avx2", "fma", "avx512f"}
    assert cpu_features.cpu_vendor(str(tmp_path / "missing")) == ""
    arm = write(tmp_path, "processor\t: 0\nFeatures\t: fp asimd asimddp\n", "arm")
    assert cpu_features.cpu_flags(arm) == {"fp", "asimd", "asimddp"}


# Records MKL_DEBUG_CPU_TYPE at the moment `paddle` is first imported (MKL is loaded with it and
# reads the variable on its first call), then imports paddle_rtseg.
CHILD = r"""
import importlib.abc, json, os, sys
seen = {}
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "paddle" and "at_paddle_import" not in seen:
            seen["at_paddle_import"] = os.environ.get("MKL_DEBUG_CPU_TYPE")
        return None
sys.meta_path.insert(0, Watch())
import paddle_rtseg
seen["after"] = os.environ.get("MKL_DEBUG_CPU_TYPE")
seen["reason"] = paddle_rtseg.MKL_DISPATCH
print(json.dumps(seen))
"""


def import_with(tmp_path, text, user=None):
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    env["PADDLE_RTSEG_CPUINFO"] = write(tmp_path, text)
    if user is not None:
        env["MKL_DEBUG_CPU_TYPE"] = user
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_package_sets_it_before_paddle_loads(tmp_path):
    seen = import_with(tmp_path, ZEN)
    assert seen["at_paddle_import"] == "5" and seen["after"] == "5", seen
    seen = import_with(tmp_path, INTEL)
    assert seen["at_paddle_import"] is None and seen["after"] is None, seen
    seen = import_with(tmp_path, ZEN, user="")
    assert seen["after"] == "" and "set by the user" in seen["reason"], seen


def test_the_runners_set_it_too(tmp_path):
    """deploy/common.py imports the runtime package (no Paddle) and applies it."""
    code = ("import os, sys; sys.path.insert(0, {!r}); import common; "
            "print(os.environ.get('MKL_DEBUG_CPU_TYPE'), 'paddle' in sys.modules)").format(
                os.path.join(ROOT, "deploy"))
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    env["PADDLE_RTSEG_CPUINFO"] = write(tmp_path, ZEN)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["5", "False"]


def test_speedup_script_refuses_unknown_models_in_one_line():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "process_setting_speedup.py"),
                           "--models", "seaformer_huge"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model(s) seaformer_huge")
    assert "Traceback" not in proc.stderr
