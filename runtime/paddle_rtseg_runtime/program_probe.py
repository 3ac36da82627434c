"""A Paddle Inference program is loaded in a child process first, unless it is known to load.

A ``.pdmodel`` that parses, has ops and whose parameters file walks tensor by tensor
(:func:`~paddle_rtseg_runtime.model_dir.check_program_files`) can still be corrupt in its meaning
(a byte flipped inside an op's attribute or a variable's shape) and crash Paddle's native loader by
a signal, which ends the app: no Python handler can catch it. So before this process creates a
predictor for a program it does not know, a child process creates the same predictor (same
settings) and exits; a child that fails, dies by a signal or hangs gives :class:`DeployError`.

Known programs are recorded by content (sha256 of the program and parameters files) in a per-user
folder, ``$PADDLE_RTSEG_TRUST_DIR`` (default ``~/.cache/paddle_rtseg/loadable_programs``), as
empty files: ``<digest>`` for a program this project wrote (:func:`record_written`, called by
:func:`~paddle_rtseg_runtime.outputs.publish` for every export and quantization), and
``<digest>.<settings>`` for one a probe loaded with those predictor settings. A folder that cannot
be written only means the probe runs again next time. A downloaded model therefore costs one
child process (Python + Paddle's import and the predictor's creation, seconds) on its first load
with each setting; an exported one none.
"""
import hashlib
import json
import os
import subprocess
import sys

from .errors import DeployError

TRUST_DIR_ENV = "PADDLE_RTSEG_TRUST_DIR"
CHILD_ENV = "PADDLE_RTSEG_PROBE_CHILD"  # set in the probe child: it loads without probing again
PROBE_TIMEOUT = 600  # seconds the child may take (OpenVINO compiles the whole model) before refusal

_PROBE = """
import json, sys
from paddle_rtseg_runtime.paddle_inference import PaddleInferencePredictor
PaddleInferencePredictor(**json.loads(sys.argv[1]))
"""


def trust_dir():
    configured = os.environ.get(TRUST_DIR_ENV)
    if configured:
        return configured
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "paddle_rtseg", "loadable_programs")


def digest(model_file, params_file):
    """sha256 over both files' sizes and contents."""
    h = hashlib.sha256()
    for path in (model_file, params_file):
        h.update(str(os.path.getsize(path)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _settings_key(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _mark(name):
    folder = trust_dir()
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb"):
            pass
    except OSError:  # read-only home, full disk: the probe simply runs again next time
        pass


def record_written(model_file, params_file):
    """Record a program this project has just written as loadable with any settings."""
    _mark(digest(model_file, params_file))


def check_loads(model_file, params_file, settings):
    """Make sure creating a Paddle Inference predictor for ``model_file``/``params_file`` with
    ``settings`` (the keyword arguments of
    :class:`~paddle_rtseg_runtime.paddle_inference.PaddleInferencePredictor`) cannot end this
    process: known programs return at once, others are loaded once in a child process."""
    if os.environ.get(CHILD_ENV) == "1":
        return
    key = digest(model_file, params_file)
    folder = trust_dir()
    with_settings = "{}.{}".format(key, _settings_key(settings))
    if any(os.path.isfile(os.path.join(folder, n)) for n in (key, with_settings)):
        return
    env = dict(os.environ, **{CHILD_ENV: "1"})
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(settings)],
                              capture_output=True, text=True, errors="replace", env=env,
                              timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc = subprocess.CompletedProcess([], 1, "", "loading it took over {} s".format(
            PROBE_TIMEOUT))
    if proc.returncode == 0:
        _mark(with_settings)
        return
    # Paddle reports a fatal signal on stdout, errors on stderr
    lines = [l.strip() for l in (proc.stdout + "\n" + proc.stderr).splitlines() if l.strip()]
    # our own refusal in the child (DeployError) is the most precise reason; else its last line
    ours = [l.split("DeployError: ", 1)[1] for l in lines if "DeployError: " in l]
    if ours:
        raise DeployError(ours[-1])
    # Paddle's own last words: its error or signal report, not Python's warnings about imports
    telling = [l.strip("[]") for l in lines if any(k in l for k in ("Error", "SignalInfo", "error:"))]
    quiet = [l for l in lines if "warn" not in l.lower()]
    reason = (telling or quiet or ["no message"])[-1][:300]
    how = ("signal {}".format(-proc.returncode) if proc.returncode < 0
           else "exit code {}".format(proc.returncode))
    raise DeployError("Paddle Inference cannot load {} with {}: a test load in a child process "
                      "ended by {} ({}), so this process does not load it. The program is corrupt "
                      "or not a Paddle Inference program: re-export the model or download it "
                      "again.".format(model_file, params_file, how, reason))
