"""The deployment runtime (``runtime/``, package ``paddle_rtseg_runtime``) installs on its own into a
clean virtual environment without Paddle, and its ONNX runner there segments images exactly like
the development environment does (issue 26: a runtime a device can ``pip install``)."""
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, run_module

pytestmark = pytest.mark.slow


def _run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900,
                          **kwargs)
    assert proc.returncode == 0, "{}\n{}\n{}".format(cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory):
    """A fresh venv (no system site-packages) with only ``pip install ./runtime[onnx]``."""
    venv = tmp_path_factory.mktemp("runtime_venv") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", venv])
    python = venv / "bin" / "python"
    # not editable: a normal install, as on a device; pip's cache serves the pinned wheels. From a
    # copy (the package and the pins it reads), so the build writes nothing into the repository.
    source = venv.parent / "source"
    shutil.copytree(os.path.join(ROOT, "runtime"), str(source / "runtime"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    shutil.copy(os.path.join(ROOT, "requirements.txt"), str(source))
    _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "--no-build-isolation", str(source / "runtime") + "[onnx]"], cwd=str(venv))
    return python


def test_runtime_installs_without_paddle(runtime_venv):
    probe = ("import importlib.util, sys\n"
             "import paddle_rtseg_runtime as du\n"
             "print(du.__file__)\n"
             "print(all(importlib.util.find_spec(m) is None for m in ('paddle', 'paddleseg', 'paddle_rtseg')))\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'paddle_rtseg')))\n")
    out = _run([runtime_venv, "-c", probe], cwd="/").stdout.split("\n")
    assert os.path.dirname(os.path.dirname(runtime_venv)) in out[0]  # the venv's copy, not the repo's
    assert out[1] == "True", out
    assert out[2] == "[]", out


def test_onnx_runner_in_the_runtime_venv_matches_development(runtime_venv, tmp_path,
                                                             tiny_rtformer_config):
    export_dir = tmp_path / "export"
    proc = run_module("paddle_rtseg.export", "--config", tiny_rtformer_config, "--save_dir",
                      export_dir, "--output_op", "argmax")
    assert proc.returncode == 0, proc.stderr
    import paddle_rtseg_runtime as du
    onnx_path = du.convert_onnx(str(export_dir), str(export_dir / "model.onnx"))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(97, 131), (64, 80)]):
        cv2.imwrite(str(images / "img{}.png".format(i)), rng.integers(0, 256, (h, w, 3), np.uint8))
    runner = os.path.join(ROOT, "deploy", "onnx", "infer.py")
    results = {}
    for name, python in [("runtime_venv", runtime_venv), ("development", sys.executable)]:
        out = tmp_path / name
        proc = _run([python, runner, "--model_dir", export_dir, "--onnx_file", onnx_path,
                     "--image_path", images, "--save_dir", out], cwd=str(tmp_path))
        assert "Segmented 2 image(s)" in proc.stdout, proc.stdout
        results[name] = {f: cv2.imread(str(out / f), cv2.IMREAD_UNCHANGED)
                         for f in sorted(os.listdir(out)) if f.endswith(".png")}
    assert results["runtime_venv"].keys() == results["development"].keys()
    assert len(results["development"]) >= 2
    for f, mask in results["development"].items():
        assert mask is not None and mask.shape[:2] in [(97, 131), (64, 80)]
        np.testing.assert_array_equal(results["runtime_venv"][f], mask, err_msg=f)
