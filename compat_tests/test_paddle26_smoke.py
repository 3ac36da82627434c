"""Smoke test on Paddle 2.6 (the PyPI GPU wheel's version): import, build, forward, parity.

Run by `make test` in a second venv (.venv-paddle26, pins in requirements-paddle26.txt).
"""
import subprocess
import sys

import numpy as np
import paddle
import pytest


def test_running_on_paddle_26():
    assert paddle.__version__.startswith("2.6"), paddle.__version__


def test_import_registers_without_warnings():
    out = subprocess.run([sys.executable, "-W", "default", "-c", "import paddle_rtseg"],
                         capture_output=True, text=True, check=True)
    assert "exists already" not in out.stderr


@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (2, 3, 100, 75)])
def test_rtformer_matches_paddleseg(shape):
    import paddle_rtseg  # noqa: F401
    from paddleseg.models import RTFormer as Reference

    from paddle_rtseg.models import RTFormer

    settings = dict(base_channels=16, head_channels=32, num_heads=4, cross_size=4)
    paddle.seed(0)
    ours, theirs = RTFormer(5, **settings), Reference(5, **settings)
    ours.set_state_dict(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = paddle.randn(shape)
    a, b = ours(x)[0].numpy(), theirs(x)[0].numpy()
    assert a.shape == (shape[0], 5, shape[2], shape[3])
    np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max(), rtol=0)


def test_compat_fixes_train_step():
    import paddle_rtseg  # noqa: F401
    from paddleseg.models.losses import CrossEntropyLoss
    from paddleseg.utils import metrics

    from paddle_rtseg.models import RTFormer

    model = RTFormer(3, base_channels=8, head_channels=16, num_heads=4, cross_size=4)
    x, label = paddle.randn([2, 3, 64, 64]), paddle.randint(0, 3, [2, 64, 64], dtype="int64")
    loss = CrossEntropyLoss()(model(x)[0], label)
    loss.backward()
    area = metrics.calculate_area(label, label, 3)
    assert int(area[0].sum()) == 2 * 64 * 64


def test_safe_reader_matches_paddle_load(tmp_path):
    """Paddle 2.6's paddle.save files (AdamW + LR-scheduler state, protocols 2 and 4) read through
    paddle_rtseg's restricted unpickler exactly as paddle.load returns them."""
    from paddle_rtseg.models import RTFormer
    from paddle_rtseg.weights.safe_pickle import load_paddle

    model = RTFormer(3, base_channels=8, head_channels=16, num_heads=4, cross_size=4)
    lr = paddle.optimizer.lr.PolynomialDecay(0.01, 100)
    opt = paddle.optimizer.AdamW(lr, parameters=model.parameters())
    model(paddle.randn([1, 3, 32, 32]))[0].mean().backward()
    opt.step()
    lr.step()
    for protocol in (2, 4):
        for name, obj in (("model.pdparams", model.state_dict()), ("model.pdopt", opt.state_dict())):
            path = str(tmp_path / "{}-{}".format(protocol, name))
            paddle.save(obj, path, protocol=protocol)
            ref, ours = paddle.load(path), load_paddle(path, return_numpy=False)
            assert list(ref) == list(ours)
            for k in ref:
                if isinstance(ref[k], paddle.Tensor):
                    assert ref[k].name == ours[k].name and ref[k].dtype == ours[k].dtype
                    assert np.array_equal(ref[k].numpy(), ours[k].numpy())
                else:
                    assert ref[k] == ours[k]


@pytest.mark.parametrize("output_op", ["argmax", "none"])
def test_export_runs_in_paddle_inference(tmp_path, output_op):
    """`python -m paddle_rtseg.export` on Paddle 2.6 (the GPU wheel's version): a tiny RTFormer with
    dynamic batch and size, run by Paddle Inference, equal to dygraph."""
    import os
    import yaml

    import paddle_rtseg
    import paddle_rtseg_runtime as du

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = os.path.join(root, "configs", "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
    config = tmp_path / "tiny.yml"
    config.write_text(yaml.safe_dump({"_base_": base, "model": dict(
        base_channels=8, head_channels=16, spp_channels=16, num_heads=4)}))
    model = paddle_rtseg.build_model(str(config))
    weights = str(tmp_path / "w.pdparams")
    paddle.save(model.state_dict(), weights)
    out = subprocess.run([sys.executable, "-m", "paddle_rtseg.export", "--config", str(config),
                          "--model_path", weights, "--save_dir", str(tmp_path / "export"),
                          "--output_op", output_op], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    model.eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 96)).astype("float32")
    want = model(paddle.to_tensor(x))[0].numpy()
    got = du.PaddleInferencePredictor(str(tmp_path / "export"), threads=1)(x)
    if output_op == "argmax":
        assert (got == want.argmax(1)).mean() > 0.999
    else:
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_palquant_integer_export_and_exact_int8(tmp_path):
    """PalQuant on Paddle 2.6: the integer-form export (QConv.prepare_export) and the exact int8
    program (Paddle's PTQ with exact scales; 2.6 asserts its data loader is a DataLoader) give
    the dygraph fake-quant logits up to float rounding in Paddle Inference. (`quantize` itself also
    converts to ONNX: paddle2onnx is not in this venv.)"""
    import os
    import yaml

    import paddle_rtseg
    import paddle_rtseg_runtime as du
    from paddle_rtseg.layers.palquant_conv import init_quantizers

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = os.path.join(root, "configs", "palquant", "palquant_r18_g2w2a2_synthetic_128x128_2k.yml")
    config = tmp_path / "tiny.yml"
    config.write_text(yaml.safe_dump({"_base_": base, "model": dict(
        head_channels=16, backbone=dict(base_channels=4))}))
    model = paddle_rtseg.build_model(str(config))
    init_quantizers(model, paddle.randn([2, 3, 64, 64]))
    model.eval()
    weights = str(tmp_path / "w.pdparams")
    paddle.save(model.state_dict(), weights)
    out = subprocess.run([sys.executable, "-m", "paddle_rtseg.export", "--config", str(config),
                          "--model_path", weights, "--save_dir", str(tmp_path / "q" / "fp32"),
                          "--output_op", "none"], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    from paddle_rtseg.quantization.palquant_int8 import quantize_exact  # quantize's PalQuant step
    quantize_exact(str(tmp_path / "q" / "fp32"), str(tmp_path / "q" / "ptq_int8"),
                   [np.zeros((1, 3, 64, 64), "float32")])
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 96)).astype("float32")
    want = model(paddle.to_tensor(x))[0].numpy()
    for folder, flags in (("fp32", {}), ("ptq_int8", dict(use_mkldnn=False))):
        got = du.PaddleInferencePredictor(str(tmp_path / "q" / folder), threads=1, **flags)(x)
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)
