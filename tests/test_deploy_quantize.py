"""`python -m paddle_rtseg.quantize` end to end on a tiny RTFormer (a measurement tool: this checks it
runs and reports every variant, not the numbers)."""
import os

import paddle
import pytest

from conftest import CONFIGS, run_module, write_config
from paddle_rtseg import build_model
from paddle_rtseg import deployment as du


@pytest.mark.slow
def test_quantize_reports_every_variant(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(
        tmp_path / "tiny.yml",
        os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml"),
        model=dict(base_channels=8, head_channels=16, spp_channels=16, num_heads=4), **datasets)
    weights = str(tmp_path / "w.pdparams")
    paddle.save(build_model(config).state_dict(), weights)
    proc = run_module("paddle_rtseg.quantize", "--config", config, "--model_path", weights,
                      "--save_dir", tmp_path / "q", "--calib_batches", 1, "--val_images", 2,
                      "--algo", "abs_max")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for variant in ("fp32", "PTQ int8", "weight-only int8"):
        assert variant in proc.stdout
    assert os.path.isfile(tmp_path / "q" / "lite_ptq_arm.nb")
    assert os.path.isfile(tmp_path / "q" / "lite_wint8_arm.nb")
    assert all(os.path.isfile(f) for f in du.openvino_int8_paths(str(tmp_path / "q" / "ptq_int8")))
    if du.openvino_available():  # the QDQ program runs on OpenVINO (the row has an mIoU)
        row = next(line for line in proc.stdout.splitlines() if "OpenVINO int8" in line)
        assert "QDQ form" in row and "nan" not in row, row
