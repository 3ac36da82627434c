"""MixFormer, with UperNet and with the All-MLP decoder of the real-time configs, exports
(``paddle_rtseg.exporting.static_graph``) to a legacy static graph with dynamic batch and H/W that Paddle
Inference (oneDNN, and its OpenVINO engine where Paddle has it), ONNX Runtime (paddle2onnx, opset
17) and Paddle Lite (x86 runtime here;
``opt --valid_targets=arm`` supports every op) run within 1e-4 of dygraph, including sizes that
need window padding and odd merges."""
import os

import numpy as np
import onnx
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


def test_dynamic_shape_export_runs_in_every_backend(tiny, monkeypatch):
    config, path, tmp = tiny
    monkeypatch.chdir(tmp)  # paddle2onnx leaves sym_shape_infer_temp.onnx in the working directory
    save_dir = str(tmp / "export")
    export(config, save_dir, model_path=path, output_op="none")  # [-1, 3, -1, -1]
    onnx_path = du.convert_onnx(save_dir, os.path.join(save_dir, "model.onnx"))
    # opset 17 (the default): every LayerNorm is one LayerNormalization node; at 13 paddle2onnx
    # writes nine ops each, some of which ONNX Runtime then fails to fuse back
    layer_norms = sum(isinstance(layer, paddle.nn.LayerNorm)
                      for layer in paddle_rtseg.build_model(config).sublayers())
    node_types = [node.op_type for node in onnx.load(onnx_path).graph.node]
    assert layer_norms > 0 and node_types.count("LayerNormalization") == layer_norms
    ops, supported = du.lite_model_ops(save_dir, target="arm")
    assert supported, {op: t for op, t in ops.items() if not t}
    predictors = [du.PaddleInferencePredictor(save_dir, use_mkldnn=True), du.OnnxPredictor(onnx_path)]
    if du.openvino_available():  # Paddle 3.0 (not 2.6)
        predictors.append(du.PaddleInferencePredictor(save_dir, use_openvino=True))
    # 128x128: whole windows at 1/4; 96x160 and 75x133: padded windows, odd merges, stem padding
    for shape in [(2, 3, 128, 128), (1, 3, 96, 160), (1, 3, 75, 133)]:
        x = np.random.default_rng(1).normal(size=shape).astype("float32")
        expected = dygraph(config, path, x)
        tol = 1e-4 * np.abs(expected).max()
        for predictor in predictors:
            np.testing.assert_allclose(predictor(x), expected, atol=tol,
                                       err_msg="{} {}".format(predictor.name, shape))
        # Lite's x86 Python runtime misbehaves when the size changes on one predictor (REFERENCES
        # §7.4): one fresh process and .nb per size
        got = lite_x86(save_dir, os.path.join(save_dir, "lite_{}x{}".format(*shape[2:])), x[:1])
        np.testing.assert_allclose(got, expected[:1], atol=tol, err_msg=str(shape))


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
