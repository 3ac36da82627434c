"""MixFormer's fixed-shape export (``paddle_rtseg.exporting.static_graph``, legacy program) with
unequal window padding, with UperNet and with the All-MLP decoder of the real-time configs: Paddle
Inference (oneDNN), ONNX Runtime (paddle2onnx) and Paddle Lite (x86 runtime here) within 1e-4 of
dygraph. The dynamic-shape export of both (batch 1 and 2; whole and padded windows, odd merges) on
every backend, opset 17's single LayerNormalization nodes and Lite ARM's op support are the
conformance suite's (tests/test_models_export.py: mixformer, mixformer_upernet)."""
import os

import numpy as np
import paddle
import pytest
from conftest import randomize_state, write_config
from test_segformer_pp_export import lite_x86

import paddle_rtseg
import paddle_rtseg_runtime as du
from paddle_rtseg.exporting.static_graph import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "mixformer")
BACKBONE = dict(type="RTSeg_MixFormer_B0", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])
HEADS = {  # tiny widths of the shipped configs
    "upernet": ("mixformer_b1_upernet_ade20k_512x512_160k.yml",
                dict(channels=16, aux_channels=8, backbone=BACKBONE)),  # 150 classes
    "all_mlp": ("mixformer_b0_synthetic_128x128_2k.yml", dict(embedding_dim=16, backbone=BACKBONE)),
}


@pytest.fixture(scope="module", params=sorted(HEADS))
def tiny(tmp_path_factory, request):
    """A tiny MixFormer segmentor config and a checkpoint with non-trivial BN statistics."""
    tmp = tmp_path_factory.mktemp("mixformer_" + request.param)
    base, model = HEADS[request.param]
    config = write_config(tmp / "tiny.yml", os.path.join(CONFIGS, base), model=model)
    paddle.seed(0)
    model = paddle_rtseg.build_model(config)
    randomize_state(model, seed=0)
    path = str(tmp / "model.pdparams")
    paddle.save(model.state_dict(), path)
    return config, path, tmp


def dygraph(config, path, x):
    model = paddle_rtseg.build_model(config)
    paddle_rtseg.load_checkpoint(model, path)
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x))[0].numpy()


def test_fixed_shape_export_with_unequal_window_padding(tiny, monkeypatch):
    """At 96x160 the 1/4 map (24x40) needs 4 rows but 2 columns of window padding: a fixed-shape
    export makes both constants (Paddle Lite's pad3d once swapped unequal H/W amounts)."""
    config, path, tmp = tiny
    monkeypatch.chdir(tmp)
    save_dir = str(tmp / "export_fixed")
    export(config, save_dir, model_path=path, input_shape=[1, 3, 96, 160], output_op="none")
    x = np.random.default_rng(3).normal(size=(1, 3, 96, 160)).astype("float32")
    expected = dygraph(config, path, x)
    tol = 1e-4 * np.abs(expected).max()
    np.testing.assert_allclose(du.PaddleInferencePredictor(save_dir, use_mkldnn=True)(x),
                               expected, atol=tol)
    onnx_path = du.convert_onnx(save_dir, os.path.join(save_dir, "model.onnx"))
    np.testing.assert_allclose(du.OnnxPredictor(onnx_path)(x), expected, atol=tol)
    got = lite_x86(save_dir, os.path.join(save_dir, "lite"), x)
    np.testing.assert_allclose(got, expected, atol=tol)
