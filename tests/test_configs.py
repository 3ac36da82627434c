"""Every shipped config parses, passes the checks and builds its model; overrides work."""
import glob
import os

import paddle
import pytest
from conftest import CONFIGS

import paddle_rtseg

ALL = sorted(p for p in glob.glob(os.path.join(CONFIGS, "**", "*.yml"), recursive=True)
             if os.path.basename(os.path.dirname(p)) != "_base_")


@pytest.mark.parametrize("path", ALL, ids=[os.path.relpath(p, CONFIGS) for p in ALL])
def test_config_builds(path):
    cfg = paddle_rtseg.load_config(path)
    assert cfg.model_cfg["type"].startswith("RTSeg_")
    assert cfg.iters > 0 and cfg.batch_size > 0
    model = paddle_rtseg.build_model(path)
    assert isinstance(model, paddle.nn.Layer)
    assert model.training  # a freshly built model trains; callers call eval()


def test_build_model_overrides():
    path = os.path.join(CONFIGS, "rtformer", "rtformer_slim_cityscapes_1024x512_120k.yml")
    model = paddle_rtseg.build_model(path, num_classes=3, base_channels=8, head_channels=16,
                                     num_heads=4)
    model.eval()
    assert model(paddle.randn([1, 3, 64, 64]))[0].shape == [1, 3, 64, 64]
    with pytest.raises(paddle_rtseg.ConfigError, match="takes no argument 'base_width'"):
        paddle_rtseg.build_model(path, base_width=8)


def test_opts_override_nested_keys():
    path = os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
    cfg = paddle_rtseg.load_config(path, opts=["model.base_channels=16", "batch_size=2"])
    assert cfg.model_cfg["base_channels"] == 16 and cfg.batch_size == 2
    with pytest.raises(paddle_rtseg.ConfigError):
        paddle_rtseg.load_config(path, opts=["modle.base_channels=16"])
