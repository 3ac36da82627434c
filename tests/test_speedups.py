"""Every speed-up of docs/training_speed.md keeps logits and gradients within 1e-5 of the plain path.

* Paddle's CPU math threads (``--cpu_threads``, default: the CPUs available, Paddle's own is 1):
  the same training forward/backward at 1 and at 2 threads, per family.
* ``paddle.jit.to_static`` (PaddleSeg's ``to_static_training``, and val/predict): the converted
  model against the dygraph one on the same weights, per family.
* PalQuant's rounding in two float32 ops (``round_to_levels``) against the floor-based
  ``round_half_even``: the same values on every tie and its neighbours, and the same logits and
  gradients of a PalQuant ResNet in training and eval mode (exactly: the rounding is exact).

The models are the benchmark's (``paddle_rtseg.benchmarks.bench_train.build_ours``) at tiny widths.
Train mode: dropout and drop path draw the same masks because the seed is reset before each pass;
BatchNorm normalises with batch statistics. The weights are restored between passes.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle.base import core

from paddle_rtseg.benchmarks.bench_train import build_ours, logits_of
from paddle_rtseg.cli import cpu_threads

FAMILIES = ["seaformer", "segformer", "segformer_pp", "rtformer", "palquant"]
TOL = 1e-5


def _batch(family):
    """Two images; 128 px for RTFormer, whose tiny model's BatchNorms at 64 px normalise 2x2 maps
    (8 values) and magnify float32 rounding in the backward to ~3e-3 (measured 1 vs 2 threads)."""
    size = 128 if family == "rtformer" else 64
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((2, 3, size, size)).astype("float32"))
    if family == "palquant":
        y = paddle.to_tensor(rng.integers(0, 5, (2,)).astype("int64"))
    else:
        y = paddle.to_tensor(rng.integers(0, 5, (2, size, size)).astype("int64"))
    return x, y


def _logits_and_grads(model, call, family, x, y):
    """Training-mode logits and every parameter's gradient after cross-entropy backward."""
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    model.train()
    paddle.seed(123)
    out = call(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    if family == "palquant":
        loss = F.cross_entropy(outs[0], y)
    else:
        loss = sum(F.cross_entropy(o, y, axis=1) for o in outs)
    loss.backward()
    result = {"logits": logits_of(out).numpy()}
    result.update({"grad/" + p.name: p.grad.numpy() for p in model.parameters()
                   if p.grad is not None})
    model.clear_gradients()
    model.set_state_dict(state)
    return result


def _assert_close(fast, plain):
    assert sorted(fast) == sorted(plain)
    assert len(plain) > 2  # logits and gradients
    for key, ref in plain.items():
        scale = max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(fast[key] - ref).max())
        assert diff <= TOL * scale, "{}: max |diff| {:.2e} (scale {:.2e})".format(key, diff, scale)


def _model(family, x):
    paddle.seed(0)
    model = build_ours(family, 5, tiny=True)
    if family == "palquant":  # the authors' quantizer initialisation on a batch, as training does
        from paddle_rtseg.layers.palquant_conv import init_quantizers
        init_quantizers(model, x)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_cpu_threads_keep_logits_and_gradients(family):
    x, y = _batch(family)
    model = _model(family, x)
    try:
        core.set_num_threads(1)
        plain = _logits_and_grads(model, model, family, x, y)
        core.set_num_threads(2)
        fast = _logits_and_grads(model, model, family, x, y)
    finally:
        core.set_num_threads(1)
    _assert_close(fast, plain)


# val/predict --to_static and PaddleSeg's to_static_training (both opt-in); two families to keep the
# suite short (each conversion costs 10-40 s here; RTFormer, SegFormer and PalQuant passed the same
# test once, see docs/training_speed.md)
@pytest.mark.parametrize("family", ["seaformer", "segformer_pp"])
def test_to_static_keeps_logits_and_gradients(family):
    x, y = _batch(family)
    model = _model(family, x)
    plain = _logits_and_grads(model, model, family, x, y)
    static = paddle.jit.to_static(model)
    fast = _logits_and_grads(model, static, family, x, y)
    _assert_close(fast, plain)


def test_cpu_threads_flag_values(monkeypatch):
    for name in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    cpus = cpu_threads.available_cpus()
    assert cpu_threads.resolve("auto") == cpus >= 1
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(cpus))  # workers side by side share them
    assert cpu_threads.resolve("auto") == 1
    assert cpu_threads.resolve("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="--cpu_threads must be 'auto' or an integer >= 1"):
            cpu_threads.resolve(bad)


def test_palquant_fast_rounding_is_exact(monkeypatch):
    import paddle_rtseg.layers.palquant_conv as pq
    halves = np.arange(0, 2 ** 12, 0.5, dtype=np.float32)  # every tie up to 4095.5, and neighbours
    values = np.concatenate([halves, np.nextafter(halves, np.float32(-1)),
                             np.nextafter(halves, np.float32(2 ** 13)),
                             np.random.default_rng(0).uniform(0, 255, 10 ** 5).astype("float32")])
    v = paddle.to_tensor(values)
    expected = np.round(values)  # numpy rounds ties to even, as torch.round
    np.testing.assert_array_equal(pq.round_to_levels(v).numpy(), expected)
    np.testing.assert_array_equal(pq.round_half_even(v).numpy(), expected)
    np.testing.assert_array_equal(pq.round_to_levels(v.astype("float64")).numpy(), expected)

    x, y = _batch("palquant")
    model = _model("palquant", x)
    fast = _logits_and_grads(model, model, "palquant", x, y)
    model.eval()
    with paddle.no_grad():
        fast_eval = model(x).numpy()
    monkeypatch.setattr(pq, "round_to_levels", pq.round_half_even)  # the plain path
    plain = _logits_and_grads(model, model, "palquant", x, y)
    model.eval()
    with paddle.no_grad():
        plain_eval = model(x).numpy()
    assert sorted(fast) == sorted(plain) and len(plain) > 2
    for key, ref in plain.items():
        np.testing.assert_array_equal(fast[key], ref, err_msg=key)
    np.testing.assert_array_equal(fast_eval, plain_eval)
