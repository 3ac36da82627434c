"""python -m paddle_rtseg.bench_segformer_pp end to end at a small size: it trains (2 iterations),
measures agreement, times every strategy in dygraph and, exported per strategy, in Paddle Inference
(oneDNN, and OpenVINO where Paddle has it), and writes results.json and the plot. Speed is not
asserted (benchmarks are not tests); what the report says is."""
import json
import os

import pytest

from conftest import CONFIGS, run_module, write_config
import paddle_rtseg_runtime as du

STRATEGIES = ["none", "hq", "fast", "2x2", "downsample"]


@pytest.mark.slow
def test_bench_segformer_pp_reports_every_strategy_in_every_engine(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(tmp_path / "b0.yml", os.path.join(
        CONFIGS, "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml"), **datasets)
    out = tmp_path / "bench"
    proc = run_module("paddle_rtseg.bench_segformer_pp", "--config", config, "--train_iters", 2,
                      "--size", 128, "--rounds", 1, "--calls", 2, "--paddle_inference",
                      "--save_dir", out,
                      cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["calls"] == 2 and "1 rounds of 2 call(s)" in proc.stdout
    engines = ["B0", "B0-PI"] + (["B0-PI-OpenVINO"] if du.openvino_available() else [])
    assert sorted(results["speed"]) == sorted(engines)
    for engine in engines:
        assert sorted(results["speed"][engine]) == sorted(STRATEGIES), engine
        assert all(t > 0 for t in results["speed"][engine].values()), results["speed"][engine]
    none = results["agreement"]["none"]
    assert none["pixel_acc_vs_none_128"] == 1.0 and none["miou_vs_none_128"] == 1.0
    for s in STRATEGIES:
        assert 0.0 <= results["agreement"][s]["pixel_acc_vs_none_big"] <= 1.0
    macs = results["b0_macs"]
    assert macs["downsample"] < macs["fast"] < macs["none"] and macs["hq"] < macs["none"]
    assert results["sgemm_gflops"] > 0 and "MKL:" in proc.stdout
    assert (out / "segformer_pp_bench.png").stat().st_size > 0
    for s in STRATEGIES:  # each export keeps oneDNN's bilinear resize pass (said per export)
        assert (out / "export_{}_128".format(s) / "model.pdmodel").exists()


def test_calls_below_one_is_refused(capsys):
    from paddle_rtseg.benchmarks.bench_segformer_pp import parse_args
    with pytest.raises(SystemExit) as e:
        parse_args(["--calls", "0"])
    assert e.value.code == 2 and "--calls must be at least 1" in capsys.readouterr().err
    assert parse_args(["--calls", "3"]).calls == 3
