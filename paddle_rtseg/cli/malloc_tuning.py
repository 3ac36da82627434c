"""glibc malloc settings for the command-line tools: keep freed memory for the next call.

Paddle's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (dynamic,
at most 32 MiB) with a fresh ``mmap`` and gives them back with ``munmap`` when freed, and trims
the heap's free top above its trim threshold; either way the next tensor of that size starts
on pages the kernel must fault in and zero again. A dygraph forward pass allocates and frees
many large activations (MiT stage 1 at 1024x1024: 32-64 MiB each), so it pays that on every
call: SegFormer++-B0 at 1024x1024 took 210,000-230,000 minor page faults and 1.0-1.4 s of system
time a call here (``scripts/process_setting_speedup.py --setting malloc`` measures it). Paddle
Inference reuses its own buffers and does not fault.

:func:`apply` sets ``M_MMAP_MAX=0`` (every block from the heap) and ``M_TRIM_THRESHOLD`` to its
maximum (freed memory stays in the process), with ``mallopt``. The cost is that the process
keeps its peak heap until it exits, which is why the command-line tools apply it
(:func:`paddle_rtseg.cli.errors.run_cli`, so also a tool's ``main()`` called from Python) and
importing the package does not: a program that imports paddle_rtseg calls :func:`apply` itself if
it wants it. Nothing is changed where the C library is not glibc, where another allocator is
preloaded (jemalloc, tcmalloc, mimalloc), where the user set the same settings
(``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``
or their ``GLIBC_TUNABLES``), or with ``PADDLE_RTSEG_MALLOC=system``.
"""
import ctypes
import os
import platform

OPT_OUT = "PADDLE_RTSEG_MALLOC"
OPT_OUT_VALUE = "system"
#: glibc's environment settings for malloc; any of them set means the user chose already.
GLIBC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                   "MALLOC_TOP_PAD_")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
SETTINGS = (("M_MMAP_MAX", M_MMAP_MAX, 0), ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, 2 ** 31 - 1))
#: GLIBC_TUNABLES names for the same settings; any of them set means the user chose already.
TUNABLES = ("glibc.malloc.mmap_max", "glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold",
            "glibc.malloc.top_pad")

_outcome = []  # what apply() did once it called mallopt (applied, or refused), for current()


def decide(environ=None, libc_name=None):
    """``(True or False, reason)``: whether :func:`apply` would change malloc's settings, and why."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").strip().lower() == OPT_OUT_VALUE:
        return False, "{}={}: glibc's own malloc settings".format(OPT_OUT, OPT_OUT_VALUE)
    if libc_name is None:
        try:
            libc_name = platform.libc_ver()[0]
        except OSError:  # no glibc to ask, and sys.executable unreadable (musl fallback)
            libc_name = ""
    if libc_name != "glibc":
        return False, "C library {!r}, not glibc: malloc left as it is".format(libc_name or "unknown")
    preload = environ.get("LD_PRELOAD", "")
    other = [name for name in OTHER_ALLOCATORS if name in preload]
    if other:
        return False, "{} is preloaded: malloc left to it".format(other[0])
    chosen = [v for v in GLIBC_VARIABLES if v in environ]
    tunables = environ.get("GLIBC_TUNABLES", "")
    chosen += [t for t in TUNABLES if t + "=" in tunables]
    if chosen:
        return False, "{} set by the user: malloc left as it is".format(", ".join(chosen))
    return True, ("glibc malloc keeps freed memory (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1; "
                  "{}={} to keep glibc's own settings)".format(OPT_OUT, OPT_OUT_VALUE))


def apply(environ=None, libc_name=None, libc=None):
    """Apply the settings where :func:`decide` says so (once per process); returns the reason.

    ``libc`` (tests): an object with ``mallopt(param, value)`` instead of the process's C library.
    """
    if _outcome:
        return _outcome[0]
    change, reason = decide(environ, libc_name)
    if not change:
        return reason
    if libc is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return "mallopt not found: malloc left as it is"
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    else:
        mallopt = libc.mallopt
    refused = [name for name, param, value in SETTINGS if mallopt(param, value) != 1]
    if refused:
        reason = "mallopt refused {}: malloc {}".format(
            " and ".join(refused), "left as it is" if len(refused) == len(SETTINGS) else
            "partly tuned (the other setting applied)")
    _outcome.append(reason)
    return reason


def current():
    """What malloc runs with in this process, in words (benchmarks print it next to their times)."""
    if _outcome:
        return _outcome[0]
    change, reason = decide()
    return "glibc's default malloc settings (malloc_tuning.apply() not called)" if change else reason
