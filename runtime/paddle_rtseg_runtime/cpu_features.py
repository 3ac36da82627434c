"""Which low-precision instructions this CPU has, and whether a ``--precision`` can run fast on it.

Reads the ``flags`` line of ``/proc/cpuinfo`` (Linux; no Paddle needed). ``PADDLE_RTSEG_CPUINFO``
names another file to read instead (to check what a runner would say on another CPU, and in tests).

What each precision needs to be faster than fp32 (oneDNN's and ONNX Runtime's x86 kernels):

- ``bf16``: ``avx512_bf16`` (AVX512-BF16 dot products, e.g. AMD Zen 4, Intel Cooper Lake) or
  ``amx_bf16`` (AMX tiles, Intel Sapphire Rapids and later; the fastest). Without either, oneDNN
  emulates bf16 with fp32 arithmetic plus conversions: slower than fp32, so it is refused.
- ``int8``: ``avx512_vnni`` / ``avx_vnni`` (VNNI dot products) or ``amx_int8``. Without them int8
  kernels use 16-bit intermediate products and gain little or nothing over fp32, and ONNX Runtime's
  uint8 x int8 kernels add pairs of them with saturation, which 8-bit weights can overflow
  (largest errors 32-47 % of the largest output on the blocks of ``tests/test_onnx_int8.py -k
  saturate`` on an AVX2-only EPYC) unless the weights were quantized to 7 bits
  (``onnx_int8.quantize_onnx_int8(reduce_range=True)``).

Where each path's kernels exist at all, fast or not (:func:`kernels`; what the precision tests run on
every CPU, and what the predictors' ``allow_slow=True`` accepts), measured with
``tests/test_precision.py``:

- oneDNN bf16 needs AVX-512 with BW (oneDNN's ``avx512_core``; bf16 dot products emulated without
  AVX512-BF16): on an AVX2-only CPU Paddle Inference silently runs fp32 (logits equal to fp32's,
  seen on an AVX2-only EPYC). The AVX-512-without-BF16 case is Paddle's documented rule, not
  measured here.
- OpenVINO bf16 needs AVX512-BF16 or AMX-BF16: it runs fp32 otherwise.
- int8 runs on AVX2 in oneDNN, OpenVINO and ONNX Runtime. Without VNNI/AMX, OpenVINO's and ONNX
  Runtime's uint8 x int8 kernels saturate their 16-bit pair sums: their int8 models need 7-bit
  weights there (``quantize --reduce_range true``; docs/deployment.md 5). oneDNN's int8 path keeps
  fp32's accuracy with 8-bit weights there (tests/test_precision.py).
"""
import os

from .errors import DeployError

CPUINFO = "/proc/cpuinfo"
# precision -> (flags that make it fast, best first), human names for messages
NEEDS = {
    "bf16": ("amx_bf16", "avx512_bf16"),
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni"),
}
NAMES = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "amx_int8": "AMX-INT8",
         "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI", "avx512f": "AVX512F", "avx2": "AVX2",
         "avx512bw": "AVX512BW"}
PRECISIONS = ("fp32", "bf16", "int8")
ENGINES = ("onednn", "openvino", "onnxruntime")
# (precision, engine) -> flags of which one must be present for the kernels to run at all
KERNELS = {
    ("bf16", "onednn"): ("avx512bw",),  # oneDNN's avx512_core: F + BW (+ VL, DQ, which come with it)
    ("bf16", "openvino"): ("amx_bf16", "avx512_bf16"),
    ("int8", "onednn"): ("avx2", "avx512f"),
    ("int8", "openvino"): ("avx2", "avx512f"),
    ("int8", "onnxruntime"): ("avx2", "avx512f"),
}
NO_KERNELS = {
    ("bf16", "onednn"): "oneDNN has no bf16 kernels without AVX-512 BW (Paddle Inference would "
                        "silently run fp32)",
    ("bf16", "openvino"): "OpenVINO runs bf16 only with AVX512-BF16 or AMX-BF16 (it would "
                          "silently run fp32)",
    ("bf16", "onnxruntime"): "ONNX Runtime's CPU provider has no bf16 kernels",
}
# engines whose uint8 x int8 kernels saturate 16-bit pair sums without VNNI/AMX
SATURATING = ("openvino", "onnxruntime")


def cpu_field(name, path=None):
    """The first processor's ``name`` field of ``/proc/cpuinfo`` (e.g. ``vendor_id``), or ``""``
    where the file is missing or lacks it (not Linux)."""
    path = path or os.environ.get("PADDLE_RTSEG_CPUINFO") or CPUINFO
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags(path=None):
    """The set of CPU feature flags (``/proc/cpuinfo``'s ``flags`` line, ``Features`` on ARM; lower
    case); an empty set where the file is missing or has no flags line (not Linux)."""
    return set((cpu_field("flags", path) or cpu_field("Features", path)).lower().split())


def cpu_vendor(path=None):
    """``vendor_id``: ``GenuineIntel``, ``AuthenticAMD``, ``HygonGenuine``, ... or ``""``."""
    return cpu_field("vendor_id", path)


def summary(flags=None):
    """One line naming every low-precision feature this CPU has and lacks."""
    flags = cpu_flags() if flags is None else flags
    names = ("avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    have = [NAMES[n] for n in names if n in flags]
    lack = [NAMES[n] for n in names if n not in flags]
    return "CPU has: {}; lacks: {}".format(", ".join(have) or "none of them",
                                           ", ".join(lack) or "nothing")


def support(precision, flags=None):
    """``(ok, reason)``: whether ``precision`` has fast instructions on this CPU, and which."""
    if precision == "fp32":
        return True, "fp32"
    if precision not in NEEDS:
        raise DeployError("Unknown precision {!r}: use one of {}.".format(
            precision, ", ".join(PRECISIONS)))
    flags = cpu_flags() if flags is None else flags
    found = [NAMES[f] for f in NEEDS[precision] if f in flags]
    if found:
        amx = NEEDS[precision][0]
        return True, "{} via {}{}".format(precision, " and ".join(found), "" if amx in flags
                                          else " (no {}, which would be faster)".format(NAMES[amx]))
    how = {"bf16": "emulated with fp32 arithmetic plus conversions, slower than fp32",
           "int8": "16-bit intermediate products, no faster than fp32 (and ONNX Runtime's "
                   "uint8 x int8 kernels saturate their pair sums: large errors)"}[precision]
    return False, "this CPU has none of {} (flags in {}), so {} would run {}".format(
        ", ".join(NAMES[f] for f in NEEDS[precision]),
        os.environ.get("PADDLE_RTSEG_CPUINFO") or CPUINFO, precision, how)


def kernels(precision, engine, flags=None):
    """``(ok, reason)``: whether ``engine`` (one of :data:`ENGINES`) has ``precision`` kernels on
    this CPU at all, fast or not (see the module docstring)."""
    if precision == "fp32":
        return True, "fp32"
    if precision not in NEEDS:
        support(precision, flags)  # the error naming the precisions
    if engine not in ENGINES:
        raise ValueError("engine must be one of {}, not {!r}".format(ENGINES, engine))
    flags = cpu_flags() if flags is None else flags
    needed = KERNELS.get((precision, engine))
    if needed is None:
        return False, NO_KERNELS[precision, engine]
    if not any(f in flags for f in needed):
        return False, "{}; this CPU has none of {}".format(
            NO_KERNELS.get((precision, engine)) or "{} needs {}".format(precision, " or ".join(
                NAMES[f] for f in needed)), ", ".join(NAMES[f] for f in needed))
    fast, why = support(precision, flags)
    if fast:
        return True, why
    if precision == "int8" and engine in SATURATING:
        return True, "int8 without VNNI/AMX: 16-bit pair sums, 7-bit weights needed"
    return True, "{} kernels without {} (no faster than fp32)".format(
        precision, " or ".join(NAMES[f] for f in NEEDS[precision]))


def needs_7bit_weights(precision, engine, flags=None):
    """Whether ``engine``'s int8 kernels on this CPU saturate 8-bit weights (no VNNI/AMX)."""
    return (precision == "int8" and engine in SATURATING
            and not support(precision, cpu_flags() if flags is None else flags)[0])


def require(precision, backend, flags=None, engine=None, allow_slow=False):
    """:class:`DeployError` unless this CPU runs ``precision`` fast; returns the reason string.
    ``allow_slow`` (with ``engine``) accepts a precision whose kernels merely exist
    (:func:`kernels`): slower than with the instructions, for checking accuracy on any CPU."""
    if allow_slow and engine:
        ok, reason = kernels(precision, engine, flags)
        if not ok:
            raise DeployError("--precision {} on {}: {}.".format(precision, backend, reason))
        return reason
    ok, reason = support(precision, flags)
    if not ok:
        raise DeployError("--precision {} on {}: {}. Use --precision fp32 on this machine, or run "
                          "on a CPU with {}.".format(precision, backend, reason, " or ".join(
                              NAMES[f] for f in NEEDS[precision])))
    return reason
