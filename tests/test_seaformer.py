"""SeaFormer: layers against their formulas, parity with the authors' code, checkpoints, configs.

Fixtures in tests/fixtures/seaformer/ were produced by running the authors' code, unmodified
(fudan-zvg/SeaFormer @ 9718d05: seaformer-seg/mmseg/models/backbones/seaformer.py,
decode_heads/light_head.py and their decode_head.py BaseDecodeHead, whose loss/sampler builders were
stubbed as they are unused at inference), on PyTorch 2.13 CPU with mmcv 1.7.2 (ConvModule,
build_norm_layer), float32, eval mode; the logits are their ``LightHead(SeaFormer(x))``:

* ``authors_mini_segmentor.pth``: ``torch.save({'meta': {...}, 'state_dict': ...})`` of their
  ``SeaFormer`` backbone + ``LightHead`` (keys ``backbone.*`` / ``decode_head.*``, as mmseg writes)
  at tiny widths: cfgs ``[[3,1,8,1],[3,2,8,2]], [[3,2,16,2]], [[3,2,16,2]], [[3,2,16,2]],
  [[3,2,24,2]]``, channels ``[8,8,16,16,16,24]``, key_dims ``[4,4,4]``, depths ``[1,1,1]``,
  emb_dims ``[16,16,24]``, num_heads 2, mlp_ratios ``[2,2,2]``, drop_path_rate 0.1; head
  in_channels ``[16,16,16,24]``, in_index ``[0,1,2,3]``, channels 16, embed_dims ``[8,8,16]``,
  5 classes, is_dw, dropout 0.1. Three transformer stages (like Large), an expand-ratio-1 block.
  Every float parameter and buffer was overwritten with ``0.2 * randn`` (torch.Generator seed 0;
  running_var ``|.| + 0.5``), so the zero-initialised BN scales are exercised too.
* ``authors_mini_logits_1x8.npy``: their ``head(backbone(x))`` (1/8 resolution, before mmseg's final
  bilinear resize) for ``x = mini_input()`` below, shape (2, 5, 19, 12); ``..._40x56.npy`` the same
  for ``mini_input((1, 3, 40, 56))`` (features 5x7, 3x4, 2x2, 1x1), shape (1, 5, 5, 7).
* ``authors_keys.json.gz``: names and shapes of their state dicts: ``seg_<variant>`` for backbone +
  LightHead with 150 classes (mmseg prefixes), ``imagenet_<variant>`` for seaformer-cls/seaformer.py's
  ``SeaFormer_T/S/B/L`` (the ImageNet checkpoints' layout, with the ``linear`` classifier).

The real variants were also checked against the authors' code on random weights (not committed:
the checkpoints are 7-56 MB): max |logit diff| at 512x512 with 150 classes Tiny 9.5e-7, Small
4.8e-7, Base 1.1e-6, Large 8.3e-7, Base at 480x640 with 19 classes 5.4e-7 (logit std 0.36-0.51);
argmax identical everywhere.
"""
import gzip
import json
import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from conftest import CONFIGS, randomize_state
from paddleseg.cvlibs import SegBuilder
from torchfile import save_malicious, save_torch_state_dict

from paddle_rtseg import build_model, load_checkpoint, load_config
from paddle_rtseg.layers import SeaAttention, SqueezeAxialAttention
from paddle_rtseg.layers.axial_position import SqueezeAxialPositionalEmbedding
from paddle_rtseg.layers.hard_sigmoid import hard_sigmoid
from paddle_rtseg.models import seaformer as S
from paddle_rtseg.weights.torch_reader import UnsafeCheckpointError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "seaformer")
VARIANTS = ["tiny", "small", "base", "large"]
# tiny in the quick suite, the bigger variants in the slow one
VARIANTS_SLOW = ["tiny"] + [pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS[1:]]
# Trainable parameters of the authors' backbone + LightHead with 150 classes (REFERENCES.md §9).
AUTHORS_PARAMS = {"tiny": 1667318, "small": 3990118, "base": 8605654, "large": 13951510}
MINI = dict(mv2_stages=[[(3, 1, 8, 1), (3, 2, 8, 2)], [(3, 2, 16, 2)], [(3, 2, 16, 2)],
                        [(3, 2, 16, 2)], [(3, 2, 24, 2)]],
            stem_channels=8, key_dims=[4, 4, 4], depths=[1, 1, 1], num_heads=2,
            mlp_ratios=[2, 2, 2])


def mini_model(num_classes=5):
    return S.SeaFormerSeg(num_classes, S.SeaFormer(**MINI), head_channels=16, embed_dims=[8, 8, 16])


def mini_input(shape=(2, 3, 150, 94)):
    """The fixture's input: a deterministic pattern (identical float32 in numpy and torch)."""
    g = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    return (np.sin(g * 0.37) + np.cos(g * 0.011)).astype("float32")


def authors_keys(name):
    with gzip.open(os.path.join(FIXTURES, "authors_keys.json.gz"), "rt") as f:
        return [(k, tuple(s)) for k, s in json.load(f)[name]]


def variant_model(variant, num_classes=150):
    return S.SeaFormerSeg(num_classes, getattr(S, "SeaFormer_" + variant)(), **S.HEADS[variant])


def as_authors_state(model):
    """Our model's state under the authors' names (torch BN buffers + num_batches_tracked)."""
    state = {model.authors_key(k): v.numpy() for k, v in model.state_dict().items()}
    for k in list(state):
        if k.endswith("running_var"):
            state[k[:-len("running_var")] + "num_batches_tracked"] = np.array(7, "int64")
    return state


# --- layers against their formulas ------------------------------------------------------------

def linear_resample(table, length):
    """numpy 1-D linear interpolation, half-pixel centres, edge clamping (align_corners=False)."""
    size = table.shape[-1]
    src = np.maximum((np.arange(length) + 0.5) * size / length - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), size - 1)
    i1 = np.minimum(i0 + 1, size - 1)
    w = src - i0
    return table[..., i0] * (1 - w) + table[..., i1] * w


@pytest.mark.parametrize("length", [1, 2, 5, 8, 15, 16, 17, 24, 32, 33, 64, 100, 128])
def test_positional_embedding_is_exact_linear_interpolation(length):
    emb_h = SqueezeAxialPositionalEmbedding(12, axis=2)
    emb_w = SqueezeAxialPositionalEmbedding(12, axis=3)
    emb_w.pos_embed.set_value(emb_h.pos_embed.numpy())
    expected = linear_resample(emb_h.pos_embed.numpy().astype("float64"), length)[0]
    along_h = emb_h(paddle.zeros([2, 12, length, 1])).numpy()
    along_w = emb_w(paddle.zeros([2, 12, 1, length])).numpy()
    dynamic = emb_h.embedding(paddle.to_tensor(length)).numpy()  # run-time length (export path)
    for got in (along_h[0, :, :, 0], along_h[1, :, :, 0], along_w[0, :, 0, :], dynamic[0, :, :, 0]):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # float32 vs float64
    if length > 1:
        # the authors' call: F.interpolate(pos_embed, size=N, mode='linear', align_corners=False).
        # (Paddle's linear kernel returns the first sample for N == 1; PyTorch, the centre one.)
        linear = F.interpolate(emb_h.pos_embed, size=[length], mode="linear", align_corners=False,
                               data_format="NCW").numpy()
        np.testing.assert_allclose(along_h[0, :, :, 0], linear[0], rtol=0, atol=1e-6)


def test_hard_sigmoid():
    x = paddle.linspace(-5, 5, 101)
    expected = np.clip(x.numpy() / 6 + 0.5, 0, 1)
    np.testing.assert_allclose(hard_sigmoid(x).numpy(), expected, atol=1e-7)


def _softmax(a):
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("axis", [2, 3])
def test_squeeze_axial_attention_matches_per_head_formula(axis):
    """Eq. 2-4: per head h, softmax(q_h^T k_h / sqrt(d_k)) over the squeezed axis, applied to v_h."""
    heads, dk, dv = 3, 4, 8
    layer = SqueezeAxialAttention(heads * dk, heads * dv, heads, axis=axis)
    randomize_state(layer, seed=1)
    layer.eval()
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, heads * d, 7, 9)).astype("float32") for d in (dk, dk, dv))
    out = layer(*(paddle.to_tensor(a) for a in (q, k, v))).numpy()

    squeeze = 3 if axis == 2 else 2
    qs = q.mean(squeeze) + layer.pos_emb_q.embedding(q.shape[axis]).numpy().squeeze(squeeze)[0]
    ks = k.mean(squeeze) + layer.pos_emb_k.embedding(k.shape[axis]).numpy().squeeze(squeeze)[0]
    vs = v.mean(squeeze)
    ctx = np.zeros_like(vs)
    for h in range(heads):
        qh, kh, vh = qs[:, h * dk:(h + 1) * dk], ks[:, h * dk:(h + 1) * dk], vs[:, h * dv:(h + 1) * dv]
        attn = _softmax(np.einsum("bcl,bcm->blm", qh, kh) * dk ** -0.5)
        ctx[:, h * dv:(h + 1) * dv] = np.einsum("blm,bcm->bcl", attn, vh)
    ctx = np.expand_dims(ctx, squeeze)
    expected = layer.proj(F.relu6(paddle.to_tensor(ctx))).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_sea_attention_shapes_and_gate():
    layer = SeaAttention(32, key_dim=8, num_heads=2)
    layer.eval()
    x = paddle.randn([2, 32, 9, 13])
    assert layer(x).shape == [2, 32, 9, 13]
    # zero-initialised projection BN: the gate starts at hard_sigmoid(0) = 1/2 of the detail path
    q, k, v = layer.to_q(x), layer.to_k(x), layer.to_v(x)
    detail = layer.detail(paddle.concat([q, k, v], axis=1))
    np.testing.assert_allclose(layer(x).numpy(), 0.5 * detail.numpy(), atol=1e-6)


# --- model --------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_equal_authors(variant):
    model = build_model(os.path.join(CONFIGS, "seaformer",
                                     "seaformer_{}_ade20k_512x512_160k.yml".format(variant)))
    count = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    print("SeaFormer-{} with 150 classes: {:,} parameters (authors: {:,})".format(
        variant, count, AUTHORS_PARAMS[variant]))
    assert count == AUTHORS_PARAMS[variant]


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 100, 75), (1, 3, 33, 130)])
def test_output_shapes_and_feature_strides(shape):
    model = mini_model()
    model.eval()
    x = paddle.randn(shape)
    feats = model.backbone(x)
    h, w = shape[2:]
    ceil = lambda n, s: -(-n // s)  # noqa: E731  (stride-2 convs round up)
    assert [f.shape[2:] for f in feats] == [[ceil(h, 8), ceil(w, 8)], [ceil(h, 16), ceil(w, 16)],
                                            [ceil(h, 32), ceil(w, 32)], [ceil(h, 64), ceil(w, 64)]]
    assert [f.shape[1] for f in feats] == model.backbone.feat_channels
    logits = model(x)
    assert len(logits) == 1 and logits[0].shape == [shape[0], 5, h, w]
    model.train()
    assert len(model(x)) == 1


@pytest.mark.parametrize("shape,reference", [
    ((2, 3, 150, 94), "authors_mini_logits_1x8.npy"),
    ((1, 3, 40, 56), "authors_mini_logits_1x8_40x56.npy"),  # 1x1 at 1/64: length-1 embeddings
])
def test_matches_authors_code_fixture(shape, reference):
    """Their checkpoint file, loaded without torch, gives their logits (see the module docstring)."""
    model = mini_model()
    report = load_checkpoint(model, os.path.join(FIXTURES, "authors_mini_segmentor.pth"))
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    model.eval()
    x = paddle.to_tensor(mini_input(shape))
    ours = model.head(model.backbone(x)).numpy()
    theirs = np.load(os.path.join(FIXTURES, reference))
    print("max |ours - authors'| = {:.2e} (logit std {:.2f})".format(
        np.abs(ours - theirs).max(), theirs.std()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5)
    # mmseg's "whole" inference then resizes bilinearly (align_corners=False) to the input
    full = model(x)[0]
    expected = F.interpolate(paddle.to_tensor(theirs), size=list(shape[2:]), mode="bilinear",
                             align_corners=False)
    np.testing.assert_allclose(full.numpy(), expected.numpy(), rtol=0, atol=2e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_our_names_map_onto_authors_names_one_to_one(variant):
    model = variant_model(variant)
    ours = {model.authors_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: s for k, s in authors_keys("seg_" + variant)
              if not k.endswith("num_batches_tracked")}
    assert len(ours) == len(model.state_dict())  # the mapping is injective
    assert ours == theirs


@pytest.mark.parametrize("variant", ["tiny", pytest.param("large", marks=pytest.mark.slow)])
def test_imagenet_backbone_checkpoint_loads(variant, tmp_path):
    """The authors' ImageNet layout (no prefix, + `linear` classifier) loads into the backbone."""
    rng = np.random.default_rng(0)
    state = {k: (rng.normal(size=s).astype("float32") if s else np.array(3, "int64"))
             for k, s in authors_keys("imagenet_" + variant)}
    path = save_torch_state_dict(state, str(tmp_path / "cls.pth"), wrap="model")
    backbone = getattr(S, "SeaFormer_" + variant)(pretrained=path)
    key = "transformer_stages.0.0.attn.row.pos_emb_q.pos_embed"
    np.testing.assert_array_equal(backbone.state_dict()[key].numpy(),
                                  state["trans1.transformer_blocks.0.attn.pos_emb_rowq.pos_embed"])
    np.testing.assert_array_equal(backbone.state_dict()["stem.norm._variance"].numpy(),
                                  state["smb1.stem_block.0.bn.running_var"])
    # into the whole segmentor the head is reported missing, by name
    report = load_checkpoint(variant_model(variant), path, strict=False)
    assert report["unexpected"] == [] and report["mismatched"] == []
    assert report["missing"] and all(k.startswith("head.") for k in report["missing"])


@pytest.mark.parametrize("variant", VARIANTS_SLOW)
def test_checkpoint_round_trip_authors_names(variant, tmp_path):
    """ours -> authors' names in a torch.save-format .pth -> load_checkpoint -> same logits."""
    source = variant_model(variant)
    randomize_state(source, seed=3)
    path = save_torch_state_dict(as_authors_state(source), str(tmp_path / "seg.pth"),
                                 extra={"meta": {"mmseg_version": "0.20.2"}})
    target = variant_model(variant)
    assert load_checkpoint(target, path) == dict(missing=[], unexpected=[], mismatched=[])
    source.eval()
    target.eval()
    x = paddle.to_tensor(mini_input((1, 3, 96, 64)))
    np.testing.assert_array_equal(source(x)[0].numpy(), target(x)[0].numpy())


def test_unknown_and_malicious_checkpoints_are_refused(tmp_path):
    model = mini_model()
    state = as_authors_state(model)
    state["decode_head.extra_layer.weight"] = np.zeros([3], "float32")
    path = save_torch_state_dict(state, str(tmp_path / "extra.pth"))
    with pytest.raises(ValueError, match="decode_head.extra_layer.weight"):
        load_checkpoint(model, path)
    marker = tmp_path / "pwned"
    evil = save_malicious(str(tmp_path / "evil.pth"), marker=str(marker))
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(model, evil)
    assert not marker.exists()


# --- configs ------------------------------------------------------------------------------------

def test_optimizer_follows_authors_paramwise_recipe():
    cfg = load_config(os.path.join(CONFIGS, "seaformer", "seaformer_tiny_ade20k_512x512_160k.yml"))
    builder = SegBuilder(cfg)
    optimizer = builder.optimizer
    names = {id(p): n for n, p in builder.model.named_parameters() if not p.stop_gradient}
    settings = {}
    for group in optimizer._param_groups:
        for p in group["params"]:
            settings[names[id(p)]] = (group["weight_decay"], p.optimize_attr["learning_rate"])
    assert len(settings) == len(names)
    for name, (decay, lr_mult) in settings.items():
        if "pos_emb" in name:
            assert (decay, lr_mult) == (0.0, 1.0), name
        elif name.startswith("head."):
            assert (decay, lr_mult) == (0.01, 10.0), name
        elif ".norm." in name:
            assert (decay, lr_mult) == (0.0, 1.0), name
        else:
            assert (decay, lr_mult) == (0.01, 1.0), name
    assert sum("pos_emb" in n for n in settings) == 4 * 4  # 4 blocks x (row, column) x (q, k)
    scheduler = builder.lr_scheduler
    assert scheduler.warmup_steps == 1500 and scheduler.end_lr == pytest.approx(3e-4)


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(CONFIGS, "seaformer"))))
def test_configs_build(name):
    path = os.path.join(CONFIGS, "seaformer", name)
    cfg = load_config(path)
    model = build_model(path)
    assert isinstance(model, S.SeaFormerSeg)
    classes = {"ade20k": 150, "cityscapes": 19, "synthetic": 5, "camvid": 11}[name.split("_")[2]]
    assert model.head.classifier.weight.shape[0] == classes == cfg.dic["model"]["num_classes"]
