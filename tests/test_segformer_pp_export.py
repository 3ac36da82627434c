"""Every SegFormer++ strategy exports (``paddle_rtseg.exporting.static_graph`` with ``token_merging`` chosen at export
time on unmodified weights) to a legacy static graph that Paddle Inference (oneDNN and its OpenVINO
engine), ONNX Runtime (paddle2onnx, opset 17) and Paddle Lite (x86 runtime here; every op has an ARM kernel) run with the
dygraph outputs. bsm strategies need a fixed H/W; n2d ('2x2') and 'downsample' take any size."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from conftest import write_config

import paddle_rtseg
import paddle_rtseg_runtime as du
from paddle_rtseg.exporting.static_graph import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml")
TINY_MODEL = dict(embedding_dim=32, backbone=dict(
    type="RTSeg_MiT_B0", embed_dims=[16, 32, 48, 64], num_heads=[1, 2, 3, 4], depths=[1, 1, 1, 1]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SegFormer++ config and a checkpoint of it with non-trivial BN statistics."""
    tmp = tmp_path_factory.mktemp("segpp")
    config = write_config(tmp / "tiny.yml", BASE, model=TINY_MODEL)
    paddle.seed(0)
    model = paddle_rtseg.build_model(config)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    for k, v in state.items():
        if k.endswith("_variance"):
            state[k] = rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)
        elif k.endswith("_mean"):
            state[k] = rng.normal(0, 0.1, v.shape).astype(v.dtype)
    model.set_state_dict(state)
    path = str(tmp / "model.pdparams")
    paddle.save(model.state_dict(), path)
    return config, path, tmp


def dygraph(config, path, strategy, x):
    model = paddle_rtseg.build_model(config, token_merging=strategy)
    paddle_rtseg.load_checkpoint(model, path)
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x))[0].numpy()


def lite_x86(model_dir, out_prefix, x):
    """Paddle Lite's light runtime on an x86 ``.nb``, in a fresh process: in a process where Paddle
    already ran, Lite's x86 kernels intermittently return garbage for a few elements (seen on every
    strategy, never in a clean process)."""
    nb = du.convert_lite(model_dir, out_prefix, target="x86")
    np.save(out_prefix + "_x.npy", np.ascontiguousarray(x))
    code = ("import numpy as np, sys\n"
            "from paddlelite.lite import MobileConfig, create_paddle_predictor\n"
            "c = MobileConfig(); c.set_model_from_file(sys.argv[1])\n"
            "p = create_paddle_predictor(c); p.get_input(0).from_numpy(np.load(sys.argv[2]))\n"
            "p.run(); np.save(sys.argv[3], p.get_output(0).numpy())\n")
    out = subprocess.run([sys.executable, "-c", code, nb, out_prefix + "_x.npy",
                          out_prefix + "_y.npy"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return np.load(out_prefix + "_y.npy")


@pytest.mark.parametrize("strategy", ["none", "hq", "fast", "2x2", "downsample"])
def test_strategy_exports_and_runs_in_every_backend(tiny, strategy, monkeypatch):
    config, path, tmp = tiny
    monkeypatch.chdir(tmp)  # paddle2onnx leaves sym_shape_infer_temp.onnx in the working directory
    save_dir = str(tmp / ("export_" + strategy))
    export(config, save_dir, model_path=path, input_shape=[-1, 3, 128, 128], output_op="none",
           model_overrides={"token_merging": strategy})
    x = np.random.default_rng(1).normal(size=(2, 3, 128, 128)).astype("float32")
    expected = dygraph(config, path, strategy, x)
    tol = 1e-4 * np.abs(expected).max()
    # no nearest resize anywhere (2x2 unmerges by repeating): oneDNN's fast bilinear path stays on
    assert du.onednn_resize_is_exact(du.model_paths(save_dir)[0])

    got = du.PaddleInferencePredictor(save_dir, use_mkldnn=True)(x)  # dynamic batch
    np.testing.assert_allclose(got, expected, atol=tol)

    if du.openvino_available():  # Paddle 3.0's OpenVINO engine (bsm sorts with topk when exported)
        got = du.PaddleInferencePredictor(save_dir, use_openvino=True)(x)
        np.testing.assert_allclose(got, expected, atol=tol)

    onnx_path = du.convert_onnx(save_dir, os.path.join(save_dir, "model.onnx"))
    np.testing.assert_allclose(du.OnnxPredictor(onnx_path)(x), expected, atol=tol)

    ops, supported = du.lite_model_ops(save_dir, target="arm")
    assert supported, {op: t for op, t in ops.items() if not t}
    got = lite_x86(save_dir, os.path.join(save_dir, "lite_x86"), x[:1])
    np.testing.assert_allclose(got, expected[:1], atol=tol)


# '2x2' with dynamic size (MiT-B0, these sizes and more, every backend): the conformance suite,
# tests/test_models_export.py (segformer_pp)
@pytest.mark.parametrize("strategy", ["downsample"])
def test_size_free_strategies_export_with_dynamic_size(tiny, strategy):
    config, path, tmp = tiny
    save_dir = str(tmp / ("dynamic_" + strategy))
    export(config, save_dir, model_path=path, output_op="none",
           model_overrides={"token_merging": strategy})  # [-1, 3, -1, -1]
    predictor = du.PaddleInferencePredictor(save_dir, use_mkldnn=True)
    for size in [(96, 160), (75, 133)]:  # odd sizes: ceil-mode pooling and floor(H/2) crops
        x = np.random.default_rng(2).normal(size=(1, 3) + size).astype("float32")
        expected = dygraph(config, path, strategy, x)
        np.testing.assert_allclose(predictor(x), expected, atol=1e-4 * np.abs(expected).max())


def test_bsm_with_dynamic_size_says_to_fix_the_input_shape(tiny):
    from paddle_rtseg.exporting.static_graph import ExportError
    config, path, tmp = tiny
    with pytest.raises(ExportError, match="fixed input height and width|--input_shape"):
        export(config, str(tmp / "dynamic_hq"), model_path=path, output_op="none",
               model_overrides={"token_merging": "hq"})


@pytest.mark.parametrize("head", ["paddleseg", "mmseg"])
def test_export_form_has_materialized_filters(tiny, head, monkeypatch):
    """Exports run the per-stage decoder (fusion BN folded) and Mix-FFN on the NCHW map with every
    filter materialized at export time (``prepare_export``): each conv's filter is a persistable
    variable (``paddle_lite_opt --valid_targets=arm`` crashes on computed ones) and no 4-way concat
    is left; Lite ARM's opt converts it; the outputs are dygraph's; checkpoints keep their keys."""
    config, path, tmp = tiny
    monkeypatch.chdir(tmp)
    if head != "paddleseg":  # a checkpoint of mmseg's head with non-trivial BN
        paddle.seed(1)
        model = paddle_rtseg.build_model(config, head=head)
        rng = np.random.default_rng(1)
        model.set_state_dict({k: rng.uniform(0.5, 1.5, v.shape).astype("float32")
                              if k.endswith(("_variance", "bn.weight")) else v.numpy()
                              for k, v in model.state_dict().items()})
        path = str(tmp / "mmseg.pdparams")
        paddle.save(model.state_dict(), path)
    keys = set(paddle.load(path))
    save_dir = str(tmp / ("form_" + head))
    export(config, save_dir, model_path=path, input_shape=[1, 3, 128, 96], output_op="none",
           model_overrides={"head": head})
    block = du.read_program(du.model_paths(save_dir)[0]).blocks[0]
    persistable = {v.name for v in block.vars if v.persistable}
    convs = [op for op in block.ops if op.type in ("conv2d", "depthwise_conv2d")]
    filters = [a for op in convs for i in op.inputs if i.parameter == "Filter" for a in i.arguments]
    assert len(filters) == len(convs) and set(filters) <= persistable
    types = [op.type for op in block.ops]
    assert "concat" not in types
    assert types.count("batch_norm") == (0 if head == "paddleseg" else 4)  # fusion BN folded
    assert du.convert_lite(save_dir, os.path.join(save_dir, "arm"), target="arm").endswith(".nb")

    x = np.random.default_rng(3).normal(size=(1, 3, 128, 96)).astype("float32")
    model = paddle_rtseg.build_model(config, head=head)
    assert set(model.state_dict()) == keys  # the export-only parameters are not in checkpoints
    paddle_rtseg.load_checkpoint(model, path)
    model.eval()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x))[0].numpy()
    tol = 1e-4 * np.abs(expected).max()
    np.testing.assert_allclose(du.PaddleInferencePredictor(save_dir, use_mkldnn=True)(x), expected,
                               atol=tol)
    onnx_path = du.convert_onnx(save_dir, os.path.join(save_dir, "model.onnx"))
    np.testing.assert_allclose(du.OnnxPredictor(onnx_path)(x), expected, atol=tol)


def test_camvid_deploy_merging_rows(tiny, tmp_path):
    """scripts/camvid_deploy.py's token-merging table (docs/camvid.md runs it on the real-trained
    B0) on the tiny checkpoint: every preset scored in dygraph and Paddle Inference, no merging as
    each engine's reference (change 0, speed-up 1), both engines giving the same classes, the
    paper's column, and the markdown section. It reuses this file's strategy exports when they ran
    first (camvid_deploy reuses any export in ``merging_<preset>``), else exports them itself."""
    import shutil
    import types
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import camvid_deploy
    config, path, tmp = tiny
    out = tmp_path / "deploy"
    for strategy in camvid_deploy.STRATEGIES:
        done = tmp / ("export_" + strategy)
        if (done / "deploy.yaml").is_file():
            shutil.copytree(str(done), str(out / ("merging_" + strategy)))
    model = paddle_rtseg.build_model(config)
    paddle_rtseg.load_checkpoint(model, path)
    model.eval()
    rng = np.random.default_rng(3)
    inputs = [rng.normal(size=(1, 3, 128, 128)).astype("float32") for _ in range(2)]
    labels = [rng.integers(0, 5, (128, 128)) for _ in range(2)]
    rows = camvid_deploy.merging(model, config, path, [], inputs, labels, 5, 255, str(out),
                                 types.SimpleNamespace(rounds=1), size=(128, 128))
    assert [r["strategy"] for r in rows] == list(camvid_deploy.STRATEGIES)
    for r in rows:
        assert r["paper_delta"] == camvid_deploy.PAPER_MERGING_DELTA.get(r["strategy"], 0.0)
        for engine in ("dygraph", "Paddle Inference"):
            e = r[engine]
            assert 0 < e["miou"] <= 1 and e["latency_ms"] > 0 and np.isfinite(e["delta"]), r
        assert abs(r["dygraph"]["miou"] - r["Paddle Inference"]["miou"]) < 1e-3, r
    none = rows[0]
    assert all(none[e]["delta"] == 0 and none[e]["speedup"] == 1 for e in ("dygraph",
                                                                           "Paddle Inference"))
    md = camvid_deploy.markdown(dict(val_every=1, val_images=2, arm_every=1, arm_images=0,
                                     date="today", cpu="cpu", families=[dict(
                                         name="SegFormer++ B0", weights="w", rows=[],
                                         merging=rows)]))
    assert "Token merging on the unmodified checkpoint" in md and "| downsample | " in md
