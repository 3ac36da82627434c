"""Run ``.nb`` models on the real Paddle Lite ARM kernels from this x86 machine: the C++ programs of
``deploy/lite/cpp`` cross-compiled against an armv8 Paddle Lite library and run under qemu user-mode
emulation (the kernels are exactly a phone's; the speed is not).

Needs ``PADDLE_LITE_ARM_DIR`` (a Paddle Lite armlinux armv8 *with_extra* light-API library: its
``include/paddle_api.h`` and ``lib/libpaddle_light_api_shared.so``), ``aarch64-linux-gnu-g++``,
``qemu-aarch64-static``, cmake and arm64 libjpeg/libpng (``scripts/setup_arm.sh`` installs them on
Debian). Builds are cached in ``build/lite_arm/<hash of sources and library>``.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from .errors import DeployError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CPP_DIR = os.path.join(ROOT, "deploy", "lite", "cpp")
SETUP_HINT = ("set PADDLE_LITE_ARM_DIR to a Paddle Lite armv8 with_extra library (e.g. "
              "../shared/paddle-lite-armv8) and install qemu-user-static, g++-aarch64-linux-gnu, "
              "cmake, libjpeg62-turbo-dev:arm64 and libpng-dev:arm64 (scripts/setup_arm.sh)")
QEMU_SYSROOT = "/usr/aarch64-linux-gnu"


def lite_arm_dir():
    path = os.environ.get("PADDLE_LITE_ARM_DIR", "")
    return os.path.abspath(path) if path else ""


# deploy/lite/cpp's programs: the demo, the tests' raw-tensor runner, the demo's image reader alone
PROGRAMS = ("rtseg_lite_demo", "rtseg_lite_raw", "rtseg_image_dump")


def unavailable_reason():
    """``None`` when ARM ``.nb`` files can be run here, else one line saying what is missing."""
    lite = lite_arm_dir()
    if not lite:
        return "PADDLE_LITE_ARM_DIR is not set; " + SETUP_HINT
    if not os.path.isfile(os.path.join(lite, "lib", "libpaddle_light_api_shared.so")):
        return "PADDLE_LITE_ARM_DIR={} has no lib/libpaddle_light_api_shared.so; {}".format(
            lite, SETUP_HINT)
    missing = [tool for tool in ("qemu-aarch64-static", "aarch64-linux-gnu-g++", "cmake")
               if shutil.which(tool) is None]
    if missing:
        return "{} not found; {}".format(", ".join(missing), SETUP_HINT)
    if not os.path.isdir(CPP_DIR):
        return "deploy/lite/cpp is missing (not a source checkout)"
    return None


def _source_hash(lite):
    digest = hashlib.sha256(lite.encode())
    with open(os.path.join(lite, "lib", "libpaddle_light_api_shared.so"), "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
    for name in sorted(os.listdir(CPP_DIR)):
        with open(os.path.join(CPP_DIR, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def build_tools(build_root=None):
    """Cross-compile :data:`PROGRAMS` (once per source/library hash); returns the folder holding
    them."""
    reason = unavailable_reason()
    if reason:
        raise DeployError(reason)
    lite = lite_arm_dir()
    build_root = build_root or os.path.join(ROOT, "build", "lite_arm")
    out = os.path.join(build_root, _source_hash(lite))
    if all(os.path.isfile(os.path.join(out, t)) for t in PROGRAMS):
        return out
    work = out + ".tmp{}".format(os.getpid())
    shutil.rmtree(work, ignore_errors=True)
    steps = [["cmake", "-S", CPP_DIR, "-B", work, "-DPADDLE_LITE_DIR=" + lite,
              "-DCMAKE_TOOLCHAIN_FILE=" + os.path.join(CPP_DIR, "aarch64-linux-gnu.cmake")],
             ["cmake", "--build", work, "-j2"]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DeployError("building the ARM programs failed ({}):\n{}".format(
                " ".join(cmd), (proc.stdout + proc.stderr)[-3000:]))
    os.makedirs(build_root, exist_ok=True)
    try:
        os.rename(work, out)
    except OSError:  # another process finished the same build first
        shutil.rmtree(work, ignore_errors=True)
    return out


def qemu_command(program, *args):
    """The command line running an arm64 ``program`` under qemu (sysroot of the cross compiler)."""
    return ["qemu-aarch64-static", "-L", QEMU_SYSROOT, program, *map(str, args)]


def _run(cmd, timeout):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise DeployError("ARM run failed (rc {}): {}\n{}".format(
            proc.returncode, " ".join(cmd), (proc.stdout + proc.stderr)[-3000:]))
    return proc


def run_raw(nb_path, inputs, tools=None, threads=1, timeout=900):
    """Run float32 NCHW arrays ``inputs`` in order through ONE ARM predictor of ``nb_path`` (one
    emulated process); returns the outputs (float32 scores or int32 class ids)."""
    tools = tools or build_tools()
    with tempfile.TemporaryDirectory(prefix="rtseg_arm_") as tmp:
        lines = []
        for i, x in enumerate(inputs):
            x = np.ascontiguousarray(x, dtype=np.float32)
            if x.ndim != 4:
                raise DeployError("ARM runner inputs are N,C,H,W; got shape {}".format(x.shape))
            src, dst = os.path.join(tmp, "in{}.bin".format(i)), os.path.join(tmp, "out{}.bin".format(i))
            x.tofile(src)
            lines.append("{} {} {} {} {} {}".format(src, dst, *x.shape))
        listing = os.path.join(tmp, "list.txt")
        with open(listing, "w") as f:
            f.write("\n".join(lines) + "\n")
        _run(qemu_command(os.path.join(tools, "rtseg_lite_raw"), nb_path, listing, threads), timeout)
        outputs = []
        for i in range(len(inputs)):
            dst = os.path.join(tmp, "out{}.bin".format(i))
            with open(dst + ".txt") as f:
                dtype, *shape = f.read().split()
            outputs.append(np.fromfile(dst, dtype=dtype).reshape([int(d) for d in shape]))
        return outputs


def run_demo(nb_path, image_path, out_dir, mean, std, tools=None, threads=1, timeout=600):
    """The C++ demo on one image file: writes ``<out_dir>/<name>.png`` and ``<name>_overlay.jpg``."""
    tools = tools or build_tools()
    os.makedirs(out_dir, exist_ok=True)
    triple = lambda v: ",".join("{!r}".format(float(a)) for a in v)  # noqa: E731
    return _run(qemu_command(os.path.join(tools, "rtseg_lite_demo"), nb_path, image_path,
                             out_dir, threads, triple(mean), triple(std)), timeout)
