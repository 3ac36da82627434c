"""The conformance suite (timm's tests/test_models.py): every registered segmentation model, at tiny
widths, in dygraph. For each model of MODELS:

* forward at odd sizes and batch 2: a list of logits at input resolution (PaddleSeg's contract),
  finite; one logit map in eval, the aux heads' maps too in training;
* backward: a loss on every output reaches every trainable parameter, with finite gradients;
* checkpoint round-trip: ``paddle.save`` of the state dict -> ``paddle_rtseg.load_checkpoint`` into a
  fresh model -> nothing missing, unexpected or mismatched, and identical logits.

The same models exported with dynamic shapes and run on every backend (Paddle Inference, ONNX
Runtime, Paddle Lite) are tests/test_models_export.py (a second file, so that pytest-xdist's
``--dist loadfile`` gives the two halves to two workers). Family files keep what only that family
has: parity with PaddleSeg's, PaddleClas's or the authors' code, papers' numbers, parameter counts,
token merging. tests/test_arm.py runs FAMILIES on Paddle Lite's ARM kernels.
"""
import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from conftest import CONFIGS, randomize_state
from paddleseg.cvlibs import manager

from paddle_rtseg import build_model, load_checkpoint, load_config
from paddle_rtseg.layers.palquant_conv import QConv
from paddle_rtseg.registry import registered_names

# RTFormer at tiny width; cross_size 12 (RTFormer's default) so the pooled 1/32 map is never a
# multiple of it
RTFORMER_TINY = dict(base_channels=8, head_channels=16, spp_channels=16, num_heads=4, cross_size=12)
# (config, model overrides: top-level ``model:`` keys replaced, as build_model(config, **overrides)).
# FAMILIES is also what tests/test_arm.py runs on the ARM kernels (through tests/test_deploy.py):
# adding a family there adds an emulated ARM run.
FAMILIES = {
    "rtformer": (os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml"),
                 RTFORMER_TINY),
    "seaformer": (os.path.join(CONFIGS, "seaformer", "seaformer_tiny_synthetic_128x128_2k.yml"), {}),
    "segformer_pp": (os.path.join(CONFIGS, "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml"),
                     dict(token_merging="2x2")),
    # B0's widths, one block per stage (every layer type of the family; 4x less to trace than
    # B0's 2-2-6-2), 64-wide All-MLP head
    "mixformer": (os.path.join(CONFIGS, "mixformer", "mixformer_b0_synthetic_128x128_2k.yml"),
                  dict(embedding_dim=64, backbone=dict(type="RTSeg_MixFormer_B0", depths=[1, 1, 1, 1],
                                                       drop_path_rate=0.0))),
}
TINY_MIXFORMER = dict(type="RTSeg_MixFormer_B0", embed_dim=16, depths=[1, 1, 1, 1],
                      num_heads=[1, 1, 2, 2], drop_path_rate=0.0)
MODELS = dict(
    FAMILIES,
    mixformer_upernet=(os.path.join(CONFIGS, "mixformer", "mixformer_b1_upernet_ade20k_512x512_160k.yml"),
                       dict(channels=16, aux_channels=8, backbone=TINY_MIXFORMER)),
    palquant=(os.path.join(CONFIGS, "palquant", "palquant_r18_g2w2a2_synthetic_128x128_2k.yml"),
              dict(head_channels=16, backbone=dict(type="RTSeg_PalQuantResNet18", groups=2,
                                                   weight_levels=4, act_levels=4, base_channels=4))),
    # RTFormer's conv stages as G=2 parallel W2A2 groups, RTFormer's tiny widths
    palquant_rtformer=(os.path.join(CONFIGS, "palquant",
                                    "palquant_rtformer_slim_g2w2a2_synthetic_128x128_2k.yml"),
                       dict(RTFORMER_TINY, base_channels=4)),
)
NAMES = sorted(MODELS)
# logit maps in training (main + aux heads); eval gives the first one only
TRAIN_OUTPUTS = {"rtformer": 2, "mixformer_upernet": 2, "palquant_rtformer": 2}
SIZES = [(65, 97), (96, 128)]  # odd sides, and one that is not a multiple of 64


def num_classes(name):
    config, overrides = MODELS[name]
    return overrides.get("num_classes") or load_config(config).dic["model"]["num_classes"]


def build(name, seed=0):
    """The tiny model ``name``, freshly initialised with ``seed`` (training mode)."""
    config, overrides = MODELS[name]
    paddle.seed(seed)
    return build_model(config, **overrides)


def trained_like(name, seed=0):
    """The tiny model in eval mode with weights that look trained: quantizers initialised on a
    training batch (PalQuant), non-trivial BatchNorm statistics and attention keys/values
    (conftest.randomize_state)."""
    model = build(name, seed)
    if any(isinstance(m, QConv) for m in model.sublayers()):
        with paddle.no_grad():
            model(paddle.randn([2, 3, 64, 64]))  # training mode: PalQuant's one-batch init
    randomize_state(model, seed=seed)
    model.eval()
    return model


def relative_error(out, ref):
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def test_every_registered_model_is_in_the_suite():
    """A model registered in PaddleSeg's manager without an entry in MODELS fails here; so does a
    registered backbone family no suite model uses."""
    types, modules = set(), set()
    for name, (config, overrides) in MODELS.items():
        types.add(dict(load_config(config).dic["model"], **overrides)["type"])
        modules |= {type(layer).__module__ for layer in build(name).sublayers(include_self=True)}
    assert set(registered_names(manager.MODELS)) <= types, sorted(
        set(registered_names(manager.MODELS)) - types)
    backbones = {manager.BACKBONES[n].__module__ for n in registered_names(manager.BACKBONES)}
    assert backbones <= modules, sorted(backbones - modules)


@pytest.mark.parametrize("name", NAMES)
def test_forward_odd_sizes_batch2(name):
    model = build(name)
    classes = num_classes(name)
    model.eval()
    for h, w in SIZES:
        x = paddle.randn([2, 3, h, w])
        with paddle.no_grad():
            logits = model(x)
        assert isinstance(logits, (list, tuple)) and len(logits) == 1, (h, w)
        assert logits[0].shape == [2, classes, h, w]
        assert np.isfinite(logits[0].numpy()).all(), (h, w)
    model.train()
    h, w = SIZES[0]
    with paddle.no_grad():
        logits = model(paddle.randn([2, 3, h, w]))
    assert isinstance(logits, (list, tuple)) and len(logits) == TRAIN_OUTPUTS.get(name, 1)
    for logit in logits:
        assert logit.shape == [2, classes, h, w]
        assert np.isfinite(logit.numpy()).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    model = build(name)
    model.train()
    classes = num_classes(name)
    h, w = SIZES[0]
    x = paddle.randn([2, 3, h, w])
    label = paddle.to_tensor(np.random.RandomState(0).randint(0, classes, (2, h, w)))
    logits = model(x)
    loss = paddle.add_n([F.cross_entropy(logit, label, axis=1) for logit in logits])
    assert np.isfinite(float(loss))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    assert trainable
    assert [n for n, p in trainable if p.grad is None] == []
    assert [n for n, p in trainable if not np.isfinite(p.grad.numpy()).all()] == []
    assert any(float(p.grad.abs().max()) > 0 for _, p in trainable)
    # the classifier(s) always get a gradient: the loss reaches the parameters through the logits
    heads = [p for n, p in trainable if p.shape and p.shape[0] == classes]
    assert heads and all(float(p.grad.abs().max()) > 0 for p in heads)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(name, tmp_path):
    source = trained_like(name, seed=0)
    path = str(tmp_path / "model.pdparams")
    paddle.save(source.state_dict(), path)
    target = build(name, seed=1)
    assert load_checkpoint(target, path) == dict(missing=[], unexpected=[], mismatched=[])
    target.eval()
    loaded = target.state_dict()
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(loaded[key].numpy(), value.numpy(), err_msg=key)
    x = paddle.randn([2, 3] + list(SIZES[0]))
    with paddle.no_grad():
        expected, got = source(x)[0].numpy(), target(x)[0].numpy()
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    np.testing.assert_array_equal(got, expected)
