"""``python -m paddle_rtseg.bench_train`` on tiny models: the PaddleSeg rows are timed on the same
weights, the authors' PyTorch rows are skipped with one line without ``--torch_python``."""
import json
import os

import pytest

from paddle_rtseg.benchmarks import bench_train
from paddle_rtseg.cli.errors import run_cli


def test_tiny_run_times_paddleseg_rows_and_skips_torch_rows(tmp_path, capsys):
    result = bench_train.main(["--tiny", "--families", "rtformer", "seaformer", "--repeats", "1",
                               "--batch_size", "1", "--train_size", "32", "--infer_size", "32",
                               "--paddle_threads", "1", "--save_dir", str(tmp_path)])
    out = capsys.readouterr().out
    rows = result["rows"]
    assert [(r["family"], r["kind"], r["reference"]) for r in rows] == [
        ("rtformer", "train step", "PaddleSeg"), ("rtformer", "inference", "PaddleSeg")]
    for r in rows:
        assert r["ours_ms"] > 0 and r["ref_ms"] > 0 and r["ratio"] > 0
        assert r["logit_diff"] < 1e-4  # same weights: ours equals PaddleSeg's RTFormer
    skips = [line for line in out.splitlines() if "rows skipped" in line]
    assert skips == ["seaformer: the authors' PyTorch rows skipped (pass --torch_python "
                     "VENV/bin/python --authors_dir DIR)"]
    with open(os.path.join(str(tmp_path), "bench_train.json")) as f:
        assert json.load(f)["rows"] == rows
    assert result["paddle_threads"] == 1


def test_child_env_undoes_paddles_thread_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("KMP_INIT_AT_FORK", "FALSE")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/x/site-packages/cv2/../../lib64:/opt/lib")
    env = bench_train.child_env(2)
    assert env["OMP_NUM_THREADS"] == "2" and "KMP_INIT_AT_FORK" not in env
    assert env["LD_LIBRARY_PATH"] == "/opt/lib"


def test_bad_flags_are_one_paragraph(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: bench_train.main(["--torch_python", str(tmp_path / "nope"),
                                          "--save_dir", str(tmp_path)]))
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: --torch_python") and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "many"])
def test_bad_paddle_threads(tmp_path, value):
    with pytest.raises(ValueError, match="--cpu_threads must be 'auto' or an integer >= 1"):
        bench_train.parse_args(["--paddle_threads", value])


def test_profile_lists_operators(tmp_path, capsys):
    result = bench_train.main(["--profile", "--tiny", "--families", "seaformer", "--batch_size",
                               "1", "--train_size", "32", "--paddle_threads", "1",
                               "--save_dir", str(tmp_path)])
    ops = result["seaformer"]
    assert any(name.startswith("conv2d") for name in ops)
    assert any(name.endswith("GradNode") or "GradNode" in name for name in ops)
    assert "profile seaformer (2 steps, batch 1 at 32px" in capsys.readouterr().out


def test_dygraph_probes_script_reports_each_probe():
    """scripts/dygraph_probes.py (docs/training_speed.md's per-layer and A/B numbers), at a small
    input: the rounding A/B runs both roundings on equal results, the layer probe lists every
    convolution slowest first, the oneDNN probe prints both times and the difference."""
    import re
    import subprocess
    import sys
    from conftest import ROOT
    script = os.path.join(ROOT, "scripts", "dygraph_probes.py")

    def probe(*args):
        proc = subprocess.run([sys.executable, script, *args, "--size", "64", "--repeats", "1"],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = probe("rounding")
    assert re.search(r"inference 64x64: fast [\d.]+ ms, floor-based [\d.]+ ms, ratio", out), out
    assert "training forward+backward 2x224x224: fast" in out, out
    out = probe("layers", "--family", "palquant", "--top", "1000")
    assert "conv1 7x7 groups 1 filter [32, 3, 7, 7] stride [2, 2]" in out, out
    ms = [float(line.split()[0]) for line in out.splitlines() if line.startswith("  ")]
    assert len(ms) > 20 and ms == sorted(ms, reverse=True), out  # every conv, slowest first
    assert len(probe("layers", "--family", "palquant", "--top", "3").splitlines()) == 4
    out = probe("onednn", "--family", "seaformer")
    assert re.search(r"FLAGS_use_mkldnn off [\d.]+ ms, on [\d.]+ ms, max \|output diff\|", out), out
    proc = subprocess.run([sys.executable, script, "layers", "--size", "8"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "--size needs at least 32" in proc.stderr
