"""RTFormer: our layers against their definitions, our model against paddleseg.models.RTFormer."""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from conftest import randomize_state
from paddleseg.models import RTFormer as PaddleSegRTFormer

from paddle_rtseg.layers import (AdaptiveMaxPool2D, CrossResolutionAttention, GPUFriendlyAttention,
                                 grouped_double_normalization)
from paddle_rtseg.models import RTFormer

SLIM = dict(base_channels=32, head_channels=64, use_injection=[True, True])
BASE = dict(base_channels=64, head_channels=128, use_injection=[True, False])
TINY = dict(base_channels=8, head_channels=16, num_heads=4, use_injection=[True, False],
            cross_size=8)


@pytest.mark.parametrize("bins", [1, 5, 12])
def test_adaptive_max_pool_is_exact(bins):
    """Bit for bit against ``nn.AdaptiveMaxPool2D``, for maps smaller than, equal to, multiples of
    and not multiples of the bins."""
    reference = nn.AdaptiveMaxPool2D(bins)
    for h in range(1, 40):
        for w in (1, 3, 7, 12, 13, 31, 32, 64, 65):
            x = paddle.randn([2, 3, h, w])
            np.testing.assert_array_equal(AdaptiveMaxPool2D(bins)(x).numpy(), reference(x).numpy())


def test_adaptive_max_pool_is_exact_with_runtime_sizes():
    """The path a dynamic-H/W export runs (sizes as tensors at trace time), non-square bins."""
    for bins in [(3, 7), (12, 12), (5, 1)]:
        layer = paddle.jit.to_static(AdaptiveMaxPool2D(bins), input_spec=[
            paddle.static.InputSpec([None, 3, None, None], "float32")], full_graph=True)
        for h, w in [(1, 1), (4, 9), (13, 17), (16, 32), (40, 7)]:
            x = paddle.randn([2, 3, h, w])
            np.testing.assert_array_equal(layer(x).numpy(), nn.AdaptiveMaxPool2D(bins)(x).numpy())


def test_gdn_normalises_pixels_then_group_channels():
    x = paddle.randn([2, 8, 5, 6])
    y = grouped_double_normalization(x, groups=2).numpy().reshape(2, 2, 4, 30)
    soft = np.exp(x.numpy().reshape(2, 2, 4, 30))
    soft /= soft.sum(-1, keepdims=True)
    np.testing.assert_allclose(y, soft / (soft.sum(2, keepdims=True) + 1e-6), rtol=1e-5)


def test_gfa_equals_external_attention_formula():
    layer = GPUFriendlyAttention(6, 6, inter_channels=8, num_heads=2)
    layer.eval()
    x = paddle.randn([2, 6, 5, 7])
    xn = layer.norm(x).numpy().reshape(2, 6, 35)
    k, v = layer.k.numpy()[:, :, 0, 0], layer.v.numpy()[:, :, 0, 0]
    sim = np.einsum("ic,bcp->bip", k, xn)                          # X K^T, Eq. 3
    attn = grouped_double_normalization(paddle.to_tensor(sim.reshape(2, 8, 5, 7)), 2).numpy()
    expected = np.einsum("oi,bip->bop", v, attn.reshape(2, 8, 35)).reshape(2, 6, 5, 7)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_cross_resolution_attention_equals_grouped_conv_form():
    """The batched-matmul form computes PaddleSeg's conv2d(groups=batch) function."""
    n, c, t, h, w = 2, 6, 9, 5, 4
    layer = CrossResolutionAttention(c, num_tokens=t)
    layer.eval()
    x, key, value = paddle.randn([n, c, h, w]), paddle.randn([n, c, t]), paddle.randn([n, c, t])
    xn = layer.norm(x).reshape([1, n * c, h, w])
    k_filter = key.transpose([0, 2, 1]).reshape([n * t, c, 1, 1])
    v_filter = value.reshape([n * c, t, 1, 1])
    a = F.conv2d(xn, k_filter, groups=n).reshape([n, t, h, w]) * t ** -0.5
    a = F.softmax(a, axis=1).reshape([1, n * t, h, w])
    expected = F.conv2d(a, v_filter, groups=n).reshape([n, c, h, w])
    np.testing.assert_allclose(layer(x, key, value).numpy(), expected.numpy(), rtol=1e-4,
                               atol=1e-6)


def _pair(settings, num_classes=7):
    ours = RTFormer(num_classes=num_classes, **settings)
    theirs = PaddleSegRTFormer(num_classes=num_classes, **settings)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    state = randomize_state(theirs)
    ours.set_state_dict(state)
    ours.eval()
    theirs.eval()
    return ours, theirs


def _assert_same(ours, theirs, shape):
    x = paddle.randn(shape)
    with paddle.no_grad():
        mine, ref = ours(x), theirs(x)
    assert len(mine) == len(ref) == 1
    assert mine[0].shape == [shape[0], 7, shape[2], shape[3]]
    scale = np.abs(ref[0].numpy()).max()
    np.testing.assert_allclose(mine[0].numpy(), ref[0].numpy(), atol=1e-4 * scale, rtol=0)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 96, 72), (2, 3, 100, 75)])
def test_tiny_matches_paddleseg(shape):
    _assert_same(*_pair(TINY), shape)


@pytest.mark.slow
@pytest.mark.parametrize("settings", [SLIM, BASE], ids=["slim", "base"])
@pytest.mark.parametrize("shape", [(1, 3, 128, 256), (2, 3, 200, 136)])
def test_real_variants_match_paddleseg(settings, shape):
    _assert_same(*_pair(settings), shape)


def test_parameter_names_shapes_and_lr_mult_match_paddleseg():
    ours, theirs = RTFormer(19, **TINY), PaddleSegRTFormer(19, **TINY)
    mine = {k: (p.shape, p.optimize_attr["learning_rate"])
            for k, p in ours.named_parameters()}
    ref = {k: (p.shape, p.optimize_attr["learning_rate"]) for k, p in theirs.named_parameters()}
    assert mine == ref


@pytest.mark.slow
@pytest.mark.parametrize("settings,expected", [(SLIM, 5.37e6), (BASE, 17.77e6)],
                         ids=["slim", "base"])
def test_parameter_counts(settings, expected):
    """Trainable parameters without the aux head: REFERENCES.md §1.4 (Slim 5.37M, Base 17.77M)."""
    model = RTFormer(19, use_aux_head=False, **settings)
    count = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    print("RTFormer params", settings["base_channels"], count)
    assert abs(count - expected) / expected < 0.005
