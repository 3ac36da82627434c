"""SegFormer++: parity with PaddleSeg's SegFormer (merging off) and with the authors' token merging
(every strategy), the presets' token counts, strategy switching and validation, mmseg checkpoints,
and training through merging."""
import os

import numpy as np
import paddle
import pytest
from paddleseg.models import SegFormer
from paddleseg.models.backbones.mix_transformer import MixVisionTransformer as PaddleSegMiT

import paddle_rtseg
from conftest import randomize_state
from paddle_rtseg.layers import token_merging as tm
from paddle_rtseg.layers.efficient_attention import EfficientSelfAttention
from paddle_rtseg.models.mit import MiT_B0, MixVisionTransformer
from paddle_rtseg.models.segformer_pp import SegFormerPP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "segformer_pp", "authors_tiny.npz")
SYNTHETIC_CFG = os.path.join(ROOT, "configs", "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml")
STRATEGIES = ["none", "hq", "fast", "2x2", "downsample"]
TINY = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1))


def tiny_model(num_classes=5, **kwargs):
    return SegFormerPP(num_classes, MixVisionTransformer(**TINY), embedding_dim=32, **kwargs)


def relative_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------ PaddleSeg parity (merging off)

def paddleseg_tiny():
    from functools import partial
    backbone = PaddleSegMiT(patch_size=4, mlp_ratios=[4] * 4, qkv_bias=True, sr_ratios=[8, 4, 2, 1],
                            norm_layer=partial(paddle.nn.LayerNorm, epsilon=1e-6),
                            embed_dims=list(TINY["embed_dims"]), num_heads=list(TINY["num_heads"]),
                            depths=list(TINY["depths"]))
    return SegFormer(5, backbone, embedding_dim=32)


def test_keys_and_logits_equal_paddleseg_segformer():
    ref, ours = paddleseg_tiny(), tiny_model()
    assert list(ours.state_dict()) == list(ref.state_dict())
    randomize_state(ref)  # non-trivial fusion BN statistics: eval folds them into the filters
    ours.set_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    x = paddle.randn([2, 3, 96, 128])
    with paddle.no_grad():  # folded BN, parts summed in place
        expected, got = ref(x)[0].numpy(), ours(x)[0].numpy()
    assert relative_error(got, expected) <= 1e-4
    assert relative_error(ours(x)[0].numpy(), expected) <= 1e-4  # autograd on: the BN layer runs


@pytest.mark.slow
def test_real_b0_equals_paddleseg_b0():
    from paddleseg.models.backbones.mix_transformer import MixVisionTransformer_B0
    ref = SegFormer(19, MixVisionTransformer_B0(), embedding_dim=256)
    ours = SegFormerPP(19, MiT_B0(), embedding_dim=256)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.set_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    x = paddle.randn([1, 3, 128, 192])
    with paddle.no_grad():
        assert relative_error(ours(x)[0].numpy(), ref(x)[0].numpy()) <= 1e-4


@pytest.mark.slow
def test_parameter_counts_match_the_authors():
    """REFERENCES §9: MiT-B0 backbone 3,319,392 parameters; with mmseg's head (19 classes)
    3,720,051 -- the same numbers as the authors' PyTorch model."""
    model = SegFormerPP(19, MiT_B0(), embedding_dim=256, head="mmseg")
    count = lambda layer: sum(int(np.prod(p.shape)) for p in layer.parameters() if p.trainable)
    assert count(model.backbone) == 3319392
    assert count(model) == 3720051


# ------------------------------------------------------------------ parity with the authors' code

def authors_weights(fixture):
    """The fixture's weights: numpy RandomState(0) draws in sorted PyTorch-key order (see
    test_every_strategy_equals_the_authors_code)."""
    rs = np.random.RandomState(0)
    state = {}
    for key, shape in zip(fixture["keys"], fixture["shapes"]):
        key, shape = str(key), tuple(int(v) for v in str(shape).strip("()").split(",") if v.strip())
        if key.endswith("num_batches_tracked"):
            state[key] = np.zeros((), "int64")
            continue
        if key.endswith("running_var"):
            value = rs.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:
            unit = ("norm" in key or ".bn." in key) and key.endswith("weight")
            value = (1.0 if unit else 0.0) + 0.1 * rs.randn(*shape)
        else:
            value = rs.randn(*shape) / np.sqrt(int(np.prod(shape[1:])))
        state[key] = value.astype("float32")
    return state


def authors_tiny_model():
    backbone = MixVisionTransformer(embed_dims=(4, 8, 20, 32), depths=(1, 1, 1, 1),
                                    patch_sr_norm_epsilon=1e-6)
    return SegFormerPP(3, backbone, embedding_dim=8, head="mmseg")


def head_logits(model, x):
    """mmseg head output before the final resize (what the fixture stores, at 1/4 resolution)."""
    import paddle.nn.functional as F
    feats = model.backbone(x)
    size = feats[0].shape[2:]
    fused = [conv(f) if i == 0 else F.interpolate(conv(f), size=size, mode="bilinear")
             for i, (conv, f) in enumerate(zip(model.convs, feats))]
    return model.conv_seg(model.fusion_conv(paddle.concat(fused, axis=1))).numpy()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_equals_the_authors_code(strategy, tmp_path):
    """The fixture was made by running the authors' code (KieDani/SegformerPlusPlus 7fb8797,
    model_without_OpenMMLab: MixVisionTransformer with tome_cfg per stage and SegformerHead with BN;
    tomesd's bipartite_soft_matching_random2d, no_rand=True; PyTorch 2.13 CPU, eval, float32) on a
    tiny MiT (embed_dims 4 x num_heads [1, 2, 5, 8], one layer per stage, head channels 8, 3 classes)
    whose weights are numpy RandomState(0) draws in sorted key order (``authors_weights``), on
    RandomState(1).randn(2, 3, 128, 160) with the paper's configs: hq, fast (bsm), 2x2 (n2d),
    downsample (down_sample=True). It stores the head logits (1/4 resolution) per strategy and the
    PyTorch key names/shapes. The input size leaves border tokens outside the bsm windows."""
    from torchfile import save_torch_state_dict

    fixture = np.load(FIXTURE)
    path = save_torch_state_dict(authors_weights(fixture), str(tmp_path / "authors.pth"))
    model = authors_tiny_model()
    paddle_rtseg.load_checkpoint(model, path)   # convert_torch_state_dict: fused in_proj etc.
    model.set_token_merging(strategy)
    model.eval()
    x = paddle.to_tensor(np.random.RandomState(1).randn(2, 3, 128, 160).astype("float32"))
    with paddle.no_grad():
        got = head_logits(model, x)
    expected = fixture["logits_" + strategy]
    assert got.shape == expected.shape
    assert relative_error(got, expected) <= 1e-4
    if strategy in ("hq", "fast", "2x2"):  # the strategy really changes the output
        assert relative_error(fixture["logits_none"], expected) > 0.05


def test_mmseg_head_checkpoint_needs_head_mmseg(tmp_path):
    from torchfile import save_torch_state_dict

    fixture = np.load(FIXTURE)
    path = save_torch_state_dict(authors_weights(fixture), str(tmp_path / "authors.pth"))
    model = SegFormerPP(3, MixVisionTransformer(embed_dims=(4, 8, 20, 32), depths=(1, 1, 1, 1)),
                        embedding_dim=8)
    with pytest.raises(ValueError, match="head='mmseg'"):
        paddle_rtseg.load_checkpoint(model, path)


def numpy_bsm(metric, x, h, w, sx, sy, ratio):
    """Independent NumPy statement of the algorithm (REFERENCES §3.3): returns merge(x) in the
    layout [unmerged sources by decreasing similarity | destinations in raster order] and
    unmerge(merge(x))."""
    b, n, c = x.shape
    rows, cols = np.divmod(np.arange(n), w)
    is_dst = (rows % sy == 0) & (cols % sx == 0) & (rows < h // sy * sy) & (cols < w // sx * sx)
    dst_idx, src_idx = np.flatnonzero(is_dst), np.flatnonzero(~is_dst)
    r = min(int(n * ratio), len(src_idx))
    merged_out, restored = [], []
    for i in range(b):
        m = metric[i] / np.linalg.norm(metric[i], axis=-1, keepdims=True)
        scores = m[src_idx] @ m[dst_idx].T
        best, best_dst = scores.max(-1), scores.argmax(-1)
        order = np.argsort(-best, kind="stable")
        merged, unmerged = order[:r], order[r:]
        dst = x[i, dst_idx].copy()
        count = np.ones(len(dst_idx))
        np.add.at(dst, best_dst[merged], x[i, src_idx[merged]])
        np.add.at(count, best_dst[merged], 1)
        dst /= count[:, None]
        merged_out.append(np.concatenate([x[i, src_idx[unmerged]], dst]))
        full = np.zeros_like(x[i])
        full[dst_idx] = dst
        full[src_idx[unmerged]] = x[i, src_idx[unmerged]]
        full[src_idx[merged]] = dst[best_dst[merged]]
        restored.append(full)
    return np.stack(merged_out), np.stack(restored)


@pytest.mark.parametrize("h, w, sx, sy, ratio", [(8, 8, 2, 2, 0.6), (7, 10, 4, 4, 0.9),
                                                  (9, 6, 2, 3, 0.5)])
def test_bipartite_matching_equals_numpy_reference(h, w, sx, sy, ratio):
    rng = np.random.RandomState(0)
    x = rng.randn(2, h * w, 6).astype("float32")
    expected_merged, expected_restored = numpy_bsm(x, x, h, w, sx, sy, ratio)
    matching = tm.BipartiteSoftMatching(paddle.to_tensor(x), h, w, sx, sy, ratio)
    merged = matching.merge(paddle.to_tensor(x))
    np.testing.assert_allclose(merged.numpy(), expected_merged, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(matching.unmerge(merged).numpy(), expected_restored, rtol=1e-5,
                               atol=1e-6)


# ------------------------------------------------------------------ presets and token counts

def test_preset_token_counts_at_1024_match_the_paper():
    """REFERENCES §9 (counted in the authors' code at 1024x1024): (queries, keys/values) per stage."""
    expected = {
        "none": ([65536, 16384, 4096, 1024], [1024] * 4),
        "hq": ([65536, 16384, 820, 205], [410, 410, 1024, 1024]),
        "fast": ([65536, 16384, 410, 103], [103, 103, 1024, 1024]),
        "2x2": ([16384, 4096, 1024, 256], [1024] * 4),
        "downsample": ([16384, 4096, 1024, 256], [256] * 4),
    }
    for name, (queries, kvs) in expected.items():
        counts = tm.merged_token_counts(name, 1024, 1024)
        assert [q for q, _ in counts] == queries, name
        assert [kv for _, kv in counts] == kvs, name


@pytest.mark.parametrize("size", [(256, 256), (160, 224)])
def test_attention_sees_the_counted_tokens(size, monkeypatch):
    """The layers really merge: the tokens entering attention are the counts above (same rule), and
    each preset reduces exactly the stages/sides the paper's config names."""
    seen = []
    original = EfficientSelfAttention._attend

    def spy(self, x_q, x_kv):
        seen.append((x_q.shape[1], x_kv.shape[1]))
        return original(self, x_q, x_kv)

    monkeypatch.setattr(EfficientSelfAttention, "_attend", spy)
    model = SegFormerPP(5, MixVisionTransformer(**dict(TINY, depths=(1, 1, 1, 1))), embedding_dim=16)
    model.eval()
    x = paddle.randn([1, 3] + list(size))
    plain = tm.merged_token_counts("none", *size)
    for name in tm.PRESETS:
        seen.clear()
        model.set_token_merging(name)
        with paddle.no_grad():
            model(x)
        counts = tm.merged_token_counts(name, *size)
        assert seen == [tuple(c) for c in counts], name
        reduced = {(i, side) for i, (c, p) in enumerate(zip(counts, plain)) for side in (0, 1)
                   if c[side] < p[side]}
        want = {"none": set(), "hq": {(0, 1), (1, 1), (2, 0), (3, 0)},
                "fast": {(0, 1), (1, 1), (2, 0), (3, 0)},
                "2x2": {(0, 0), (1, 0), (2, 0), (3, 0)}}.get(name)
        if want is not None:
            assert reduced == want, name


def test_presets_are_the_papers_configs():
    hq, fast, n2d = tm.PRESETS["hq"], tm.PRESETS["fast"], tm.PRESETS["2x2"]
    assert [(s.kv_mode, s.kv_r, s.kv_sx, s.kv_sy) for s in hq.stages[:2]] == [("bsm", 0.6, 2, 2)] * 2
    assert [(s.q_mode, s.q_r, s.q_sx, s.q_sy) for s in hq.stages[2:]] == [("bsm", 0.8, 4, 4)] * 2
    assert [(s.kv_mode, s.kv_r, s.kv_sx, s.kv_sy) for s in fast.stages[:2]] == [("bsm", 0.9, 4, 4)] * 2
    assert [(s.q_mode, s.q_r, s.q_sx, s.q_sy) for s in fast.stages[2:]] == [("bsm", 0.9, 4, 4)] * 2
    assert [(s.q_mode, s.q_s, s.kv_mode) for s in n2d.stages] == [("n2d", (2, 2), None)] * 4
    assert tm.PRESETS["downsample"].downsample and not any(s.active for s in
                                                            tm.PRESETS["downsample"].stages)


def test_invalid_strategies_say_what_is_valid():
    with pytest.raises(ValueError, match="valid presets: .*'2x2'.*'downsample'.*'fast'.*'hq'"):
        tm.resolve_token_merging("hq2")
    with pytest.raises(ValueError, match="must lie in \\(0, 1\\)"):
        tm.resolve_token_merging([dict(kv_mode="bsm", kv_r=1.5)] + [None] * 3)
    with pytest.raises(ValueError, match="kv_mode must be one of"):
        tm.resolve_token_merging([dict(kv_mode="bsm_r2D", kv_r=0.5)] + [None] * 3)
    with pytest.raises(ValueError, match="Unknown token merging keys \\['q_ratio'\\]"):
        tm.resolve_token_merging([dict(q_mode="bsm", q_ratio=0.5)] + [None] * 3)
    with pytest.raises(ValueError, match="one entry per MiT stage"):
        tm.resolve_token_merging([None] * 3)
    with pytest.raises(Exception) as info:  # PaddleSeg's builder re-raises as RuntimeError
        paddle_rtseg.build_model(SYNTHETIC_CFG, token_merging="fastest")
    chain, error = [], info.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("valid presets: ['2x2', 'downsample', 'fast', 'hq', 'none']" in m for m in chain)


def test_custom_per_stage_list():
    strategy = tm.resolve_token_merging(
        [dict(kv_mode="n2d", kv_s=2), None, dict(q_mode="bsm", q_r=0.5, q_sx=2, q_sy=2), None])
    assert strategy.stages[0].kv_s == (2, 2) and not strategy.stages[1].active
    assert tm.merged_token_counts(strategy, 256, 256)[2] == (128, 64)


# ------------------------------------------------------------------ switching at inference

def test_strategy_switches_on_the_same_weights_from_config_and_opts():
    model = paddle_rtseg.build_model(SYNTHETIC_CFG, token_merging="hq")
    assert model.backbone.token_merging == tm.PRESETS["hq"]
    from paddleseg.cvlibs import SegBuilder
    cfg = paddle_rtseg.load_config(SYNTHETIC_CFG, opts=["model.token_merging=2x2"])
    assert SegBuilder(cfg).model.backbone.token_merging == tm.PRESETS["2x2"]
    plain = paddle_rtseg.build_model(SYNTHETIC_CFG)
    assert plain.backbone.token_merging == tm.PRESETS["none"]

    model = tiny_model()
    model.eval()
    x = paddle.randn([1, 3, 128, 128])
    with paddle.no_grad():
        before = model(x)[0].numpy()
        model.set_token_merging("fast")
        merged = model(x)[0].numpy()
        model.set_token_merging(None)
        after = model(x)[0].numpy()
    np.testing.assert_array_equal(before, after)
    assert not np.allclose(before, merged)


# ------------------------------------------------------------------ training through merging

@pytest.mark.parametrize("strategy", ["hq", "2x2"])
def test_training_through_merging_learns(strategy):
    paddle.seed(0)
    model = tiny_model(num_classes=3, token_merging=strategy)
    model.train()
    rng = np.random.RandomState(0)
    labels = np.zeros((4, 128, 128), "int64")
    for i in range(4):  # a disc and a box per image; the image shows them as noisy brightness
        y0, x0 = rng.randint(20, 90, 2)
        labels[i, y0:y0 + 30, x0:x0 + 30] = 1
        yy, xx = np.mgrid[:128, :128]
        labels[i][(yy - 64) ** 2 + (xx - 30) ** 2 < 15 ** 2] = 2
    images = (labels[:, None].astype("float32") * 0.8 + 0.3 * rng.randn(4, 3, 128, 128)).astype(
        "float32")
    x, y = paddle.to_tensor(images), paddle.to_tensor(labels)
    opt = paddle.optimizer.AdamW(2e-3, parameters=model.parameters())
    losses = []
    for _ in range(12):
        loss = paddle.nn.functional.cross_entropy(model(x)[0], y, axis=1)
        loss.backward()
        if not losses:
            merged_stage = model.backbone.block3[0].attn.q.weight if strategy == "hq" else \
                model.backbone.block1[0].attn.q.weight
            assert merged_stage.grad is not None and float(merged_stage.grad.abs().sum()) > 0
            assert float(model.backbone.block1[0].attn.kv.weight.grad.abs().sum()) > 0
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("h,w", [(8, 8), (7, 9), (5, 4), (13, 11)])
@pytest.mark.parametrize("s", [(2, 2), (3, 3), (2, 3), (1, 2)])
def test_n2d_unmerge_repeat_equals_nearest_resize(h, w, s):
    """The reshape/concat unmerge (kept out of nearest_interp for oneDNN) is nearest resizing."""
    import paddle.nn.functional as F
    x = paddle.randn([2, h * w, 6])
    merged, hw = tm.neighbor_merge_2d(x, h, w, s)
    grid = merged.transpose([0, 2, 1]).reshape([2, 6, hw[0], hw[1]])
    expected = F.interpolate(grid, size=[h, w], mode="nearest").flatten(2).transpose([0, 2, 1])
    got = tm.neighbor_unmerge_2d(merged, hw, (h, w), s)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


@pytest.mark.parametrize("size", [(128, 160), (75, 133), (66, 64)])
def test_downsample_embeds_every_second_pixel(size):
    """'downsample' (even crop + the first patch embedding dilated by 2 at twice its stride and
    padding) equals the unmerged encoder on x[:, :, ::2, ::2] of the even crop, odd sizes too."""
    paddle.seed(0)
    model = MiT_B0()
    model.eval()
    h, w = size
    x = paddle.to_tensor(np.random.RandomState(3).randn(2, 3, h, w).astype("float32"))
    with paddle.no_grad():
        model.set_token_merging("downsample")
        got = model(x)
        model.set_token_merging(None)
        expected = model(x[:, :, 0:h // 2 * 2:2, 0:w // 2 * 2:2])
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5 * float(b.abs().max()))
