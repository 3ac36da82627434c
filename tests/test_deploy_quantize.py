"""`python -m paddle_rtseg.quantize` end to end on a tiny RTFormer (a measurement tool: this checks it
runs and reports every variant, not the numbers)."""
import os

import paddle
import pytest

from conftest import CONFIGS, run_module, write_config
from paddle_rtseg import build_model
import paddle_rtseg_runtime as du


@pytest.mark.slow
def test_quantize_reports_every_variant(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(
        tmp_path / "tiny.yml",
        os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml"),
        model=dict(base_channels=8, head_channels=16, spp_channels=16, num_heads=4), **datasets)
    weights = str(tmp_path / "w.pdparams")
    paddle.save(build_model(config).state_dict(), weights)
    # without VNNI/AMX the ONNX Runtime and OpenVINO int8 models need 7-bit weights to be right
    reduce_range = not du.cpu_features.support("int8")[0]
    proc = run_module("paddle_rtseg.quantize", "--config", config, "--model_path", weights,
                      "--save_dir", tmp_path / "q", "--calib_batches", 1, "--val_images", 2,
                      "--algo", "abs_max", "--reduce_range", str(reduce_range).lower())
    assert proc.returncode == 0, proc.stderr[-3000:]
    for variant in ("fp32", "PTQ int8", "weight-only int8"):
        assert variant in proc.stdout
    assert os.path.isfile(tmp_path / "q" / "lite_ptq_arm.nb")
    assert os.path.isfile(tmp_path / "q" / "lite_wint8_arm.nb")
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith("|")]
    # every int8 path runs on every CPU with its kernels (AVX2 and up): a row with an mIoU
    runtimes = ["Paddle Inference oneDNN int8", "ONNX Runtime int8"]
    if du.openvino_available():  # the QDQ program is written and runs on OpenVINO
        assert all(os.path.isfile(f)
                   for f in du.openvino_int8_paths(str(tmp_path / "q" / "ptq_int8")))
        info = du.read_deploy_yaml(str(tmp_path / "q" / "ptq_int8"))
        assert info.get("qdq_weight_bits") == (7 if reduce_range else 8), info
        runtimes.append("Paddle Inference OpenVINO int8")
    for runtime in runtimes:
        row = next(r for r in rows if r[1] == runtime)
        assert 0.0 <= float(row[2]) <= 100.0, row
    notes = [n for n in proc.stdout.splitlines()
             if n.startswith("note:") and any(r in n for r in runtimes)]
    assert not notes, proc.stdout[-2000:]
