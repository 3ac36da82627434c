import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

import paddle_rtseg  # noqa: F401  (applies compat fixes, registers components)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


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
    paddle.seed(0)
    np.random.seed(0)
