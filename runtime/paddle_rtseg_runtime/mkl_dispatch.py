"""Intel MKL's AVX2 code path on AMD CPUs, for Paddle's MKL-backed CPU kernels.

Paddle's x86 CPU wheels link MKLML (``paddle/libs/libmklml_intel.so``) for the kernels that do not
go through oneDNN: every dygraph ``matmul``, ``conv2d`` (im2col + GEMM) and the vector math behind
softmax, so ``train``, ``val``, ``predict`` and the dygraph benchmarks, and
Paddle Inference with ``use_mkldnn=False`` (PTQ calibration). That MKL chooses its code path by CPU
vendor and runs a slower generic path on AMD CPUs, even ones with AVX2 and AVX-512;
``MKL_DEBUG_CPU_TYPE=5`` (read by this MKL generation, dropped in MKL 2020.1+) makes it take its
AVX2 path. ``scripts/process_setting_speedup.py`` measures what that changes, in child processes
alternately on the same machine.

:func:`apply` sets it, before MKL's first call (importing ``paddle_rtseg`` does that, and so does
``deploy/common.py`` for the runners), only where it is safe and useful: a CPU whose ``vendor_id`` is AMD's (or Hygon's, the same cores) with the
``avx2`` and ``fma`` flags, and only if the variable is not set already. To keep MKL's own choice,
set ``MKL_DEBUG_CPU_TYPE=`` (empty) before starting Python. oneDNN (Paddle Inference's CPU engine),
OpenVINO, ONNX Runtime and Paddle Lite's ARM kernels have their own kernels and are not affected;
Paddle Lite's x86 runtime bundles the same MKL (``paddlelite/libs/libmklml_intel.so``) and is.
"""
import os

from .cpu_features import cpu_flags, cpu_vendor

VARIABLE = "MKL_DEBUG_CPU_TYPE"
AVX2_PATH = "5"
AMD_VENDORS = ("AuthenticAMD", "HygonGenuine")


def decide(environ=None, vendor=None, flags=None):
    """``(value or None, reason)``: what :func:`apply` would set ``MKL_DEBUG_CPU_TYPE`` to, and why."""
    environ = os.environ if environ is None else environ
    if VARIABLE in environ:
        return None, "{}={!r} was set by the user; left as it is".format(VARIABLE,
                                                                       environ[VARIABLE])
    vendor = cpu_vendor() if vendor is None else vendor
    if vendor not in AMD_VENDORS:
        return None, "CPU vendor {!r}: MKL already picks its best path".format(vendor or "unknown")
    flags = cpu_flags() if flags is None else flags
    missing = [f for f in ("avx2", "fma") if f not in flags]
    if missing:
        return None, "{} CPU without {}: MKL's AVX2 path cannot run here".format(
            vendor, " and ".join(missing))
    return AVX2_PATH, "{} CPU with AVX2: {}={} (MKL's AVX2 path)".format(vendor, VARIABLE,
                                                                       AVX2_PATH)


def apply(environ=None, vendor=None, flags=None):
    """Set ``MKL_DEBUG_CPU_TYPE`` where :func:`decide` says so; returns the reason. Has an effect
    only before MKL's first call in this process (it reads the variable once)."""
    environ = os.environ if environ is None else environ
    value, reason = decide(environ, vendor, flags)
    if value is not None:
        environ[VARIABLE] = value
    return reason
