"""Data-parallel training with paddle.distributed.launch: two CPU processes over gloo."""
import os
import re

import paddle_rtseg.cli.train as train_module
from conftest import CONFIGS, run_module, write_config


def test_two_process_data_parallel_training(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(tmp_path / "tiny.yml",
                          os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml"),
                          model=dict(base_channels=8, head_channels=16, num_heads=4), **datasets)
    out = run_module("paddle.distributed.launch", "--nproc_per_node", 2, "--log_dir", tmp_path / "log",
                     train_module.__file__, "--config", config, "--iters", 10, "--log_iters", 5,
                     "--save_interval", 10, "--save_dir", tmp_path / "out", cwd=tmp_path)
    logs = [(tmp_path / "log" / "workerlog.{}".format(i)).read_text() for i in range(2)]
    assert out.returncode == 0, out.stdout[-2000:] + logs[0][-2000:] + logs[1][-2000:]
    for log in logs:
        assert "dp_degree: 2" in log
    assert re.search(r"\[TRAIN\].*iter: 10/10", logs[0])
    assert os.path.isfile(tmp_path / "out" / "iter_10" / "model.pdparams")
