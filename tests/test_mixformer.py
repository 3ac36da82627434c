"""MixFormer: parity with PaddleClas's implementation (fixtures made by running it, see
tests/fixtures/mixformer/README.md), state-dict layout and parameter counts of B0..B6, layers,
any-size inputs (backbone strides), and learning the synthetic task. The UperNet segmentor's outputs
(aux head in training only), backward, checkpoint round-trip and exports: the conformance suite
(tests/test_models.py, tests/test_models_export.py)."""
import gzip
import json
import os
import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from conftest import CONFIGS, run_module, write_config
from test_cli import all_background_miou

from paddle_rtseg import CheckpointMismatchError, load_checkpoint
from paddle_rtseg.layers import MixingAttention
from paddle_rtseg.layers.adaptive_pool import adaptive_avg_pool2d
from paddle_rtseg.layers.windows import crop, pad_to_multiple, window_partition, window_reverse
from paddle_rtseg.models import UPerNet
from paddle_rtseg.models import mixformer as M

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "mixformer")
MINI = dict(embed_dim=[16, 16, 32, 32], depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], mlp_ratio=2.0,
            drop_path_rate=0.0)
# Parameters of PaddleClas's MixFormer_B* with the 1000-class head (REFERENCES.md §5.2; the same
# numbers are in paddleclas_keys.json.gz, counted by running their code).
PADDLECLAS_PARAMS = {"B0": 5105411, "B1": 7896737, "B2": 9906408, "B3": 16762556,
                     "B4": 34820692, "B5": 61721575, "B6": 119561766}
VARIANTS = ["B0", "B1", "B2", "B3", "B4", "B5", pytest.param("B6", marks=pytest.mark.slow)]


def paddleclas_keys():
    with gzip.open(os.path.join(FIXTURES, "paddleclas_keys.json.gz"), "rt") as f:
        return json.load(f)


def mini_backbone(**kwargs):
    model = M.MixFormer(**dict(MINI, **kwargs))
    load_checkpoint(model, os.path.join(FIXTURES, "paddleclas_mini.pdparams"))
    model.eval()
    return model


@pytest.mark.parametrize("case", ["a", "b"])
def test_stage_outputs_equal_paddleclas(case):
    ref = np.load(os.path.join(FIXTURES, "paddleclas_mini_outputs.npz"))
    with paddle.no_grad():
        outs = mini_backbone()(paddle.to_tensor(ref["input_" + case]))
    assert len(outs) == 4
    for i, out in enumerate(outs):
        expected = ref["stage{}_{}".format(i + 1, case)]
        assert out.shape == list(expected.shape)
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=2e-6 * np.abs(expected).max())


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_has_paddleclas_keys_shapes_and_parameter_count(variant):
    theirs = paddleclas_keys()[variant]
    assert theirs["params"] == PADDLECLAS_PARAMS[variant]
    model = getattr(M, "MixFormer_" + variant)()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    backbone = {k: s for k, s in theirs["keys"].items() if not k.startswith(M.CLASSIFIER_PREFIXES)}
    assert ours == backbone
    classifier = sum(int(np.prod(s)) for k, s in theirs["keys"].items()
                     if k.startswith(M.CLASSIFIER_PREFIXES))
    params = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert params + classifier == PADDLECLAS_PARAMS[variant]
    assert model.feat_channels == [backbone["layers.{}.blocks.0.norm1.weight".format(i)][0]
                                   for i in range(4)]


def test_paddleclas_checkpoint_loads_through_pretrained_and_foreign_keys_are_named(tmp_path):
    path = os.path.join(FIXTURES, "paddleclas_mini.pdparams")
    model = M.MixFormer(pretrained=path, **MINI)
    state = paddle.load(path)
    np.testing.assert_array_equal(model.layers[2].blocks[1].attn.qkv.weight.numpy(),
                                  state["layers.2.blocks.1.attn.qkv.weight"].numpy())
    state["layers.9.blocks.0.norm1.weight"] = state["layers.0.blocks.0.norm1.weight"]
    paddle.save(state, str(tmp_path / "foreign.pdparams"))
    with pytest.raises(CheckpointMismatchError, match=r"layers\.9\.blocks\.0\.norm1\.weight"):
        load_checkpoint(M.MixFormer(**MINI), str(tmp_path / "foreign.pdparams"))


@pytest.mark.parametrize("size", [(64, 64), (61, 94), (37, 53), (7, 9)])
def test_any_input_size(size):
    """Odd sides: stem padding to 4, window padding, ceil(H/2) merges; a 32-multiple gives 1/32."""
    model = mini_backbone()
    with paddle.no_grad():
        outs = model(paddle.randn([1, 3] + list(size)))
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    for i, out in enumerate(outs):
        assert out.shape[2:] == [h, w], (i, out.shape)
        assert np.isfinite(out.numpy()).all()
        h, w = -(-h // 2), -(-w // 2)


def test_windows_round_trip_and_padding():
    x = paddle.randn([2, 10, 15, 3])
    padded = pad_to_multiple(x, 7)
    assert padded.shape == [2, 14, 21, 3]
    np.testing.assert_array_equal(crop(padded, [10, 15]).numpy(), x.numpy())
    assert float(padded[:, 10:].abs().sum()) == 0 and float(padded[:, :, 15:].abs().sum()) == 0
    windows, grid = window_partition(padded, 7)
    assert windows.shape == [2 * 2 * 3, 49, 3] and grid == [2, 2, 3]
    # window (b=1, row 1, col 2) holds rows 7..13, cols 14..20 in row-major order
    np.testing.assert_array_equal(windows[1 * 6 + 1 * 3 + 2].numpy(),
                                  padded[1, 7:14, 14:21].reshape([49, 3]).numpy())
    np.testing.assert_array_equal(window_reverse(windows, grid, 7).numpy(), padded.numpy())
    # another channel count on the way back (the attention output)
    assert window_reverse(windows[..., :2], grid, 7).shape == [2, 14, 21, 2]


def test_mixing_attention_interactions_matter():
    """Both interactions change the output: the conv branch gates the values (channel), the
    attention output gates the conv branch (spatial)."""
    paddle.seed(1)
    layer = MixingAttention(32, 2, window_size=4)
    layer.eval()
    x = paddle.randn([1, 8, 8, 32])
    base = layer(x).numpy()
    for branch in (layer.channel_interaction[3], layer.spatial_interaction[3]):
        branch.bias.set_value(branch.bias.numpy() + 5.0)
        assert np.abs(layer(x).numpy() - base).max() > 1e-3
        branch.bias.set_value(branch.bias.numpy() - 5.0)
    np.testing.assert_allclose(layer(x).numpy(), base, atol=1e-6)


@pytest.mark.parametrize("size", [(16, 32), (5, 7), (13, 9), (1, 1)])
def test_adaptive_avg_pool_is_exact(size):
    x = paddle.randn([2, 3] + list(size))
    for bins in (1, 2, 3, 6):
        np.testing.assert_allclose(adaptive_avg_pool2d(x, (bins, bins)).numpy(),
                                   F.adaptive_avg_pool2d(x, bins).numpy(), atol=1e-6)


SYNTHETIC = os.path.join(CONFIGS, "mixformer", "mixformer_b0_synthetic_128x128_2k.yml")


@pytest.mark.slow
def test_tiny_mixformer_learns_the_synthetic_task(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(tmp_path / "tiny.yml", SYNTHETIC, model=dict(
        embedding_dim=32, backbone=dict(type="RTSeg_MixFormer_B0", embed_dim=16, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 2, 2])), **datasets)
    # 60 iterations, warm-up 30: 0.86 mIoU at iteration 50 of the config's 100 with warm-up 50
    out = run_module("paddle_rtseg.train", "--config", config, "--iters", 60, "--log_iters", 6,
                     "--save_interval", 30, "--save_dir", tmp_path / "out", "--do_eval",
                     "--seed", 0, "--opts", "lr_scheduler.warmup_iters=30", cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    losses = [float(v) for v in re.findall(r"\[TRAIN\].*? loss: ([0-9.]+)", log)]
    mious = [float(v) for v in re.findall(r"\[EVAL\] #Images: \d+ mIoU: ([0-9.]+)", log)]
    assert len(losses) == 10 and len(mious) == 2
    assert np.mean(losses[-2:]) < 0.5 * losses[0], losses
    chance = all_background_miou(synthetic_root)
    print("tiny MixFormer synthetic mIoU after 30/60 iterations:", mious, "chance:", chance)
    assert mious[-1] > max(0.45, 3 * chance), (mious, chance)


def test_registered_names():
    from paddleseg.cvlibs import manager
    for v in PADDLECLAS_PARAMS:
        assert manager.BACKBONES["RTSeg_MixFormer_" + v] is getattr(M, "MixFormer_" + v)
    assert manager.BACKBONES["RTSeg_MixFormer"] is M.MixFormer
    assert manager.MODELS["RTSeg_UPerNet"] is UPerNet
    with pytest.raises(ValueError, match="dim/2 a multiple of num_heads"):
        M.MixFormer(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[3, 1, 1, 1])


@pytest.mark.parametrize("variant, gmacs", [
    ("B0", 0.39), ("B1", 0.68),
    pytest.param("B2", 0.88, marks=pytest.mark.slow), pytest.param("B3", 1.78, marks=pytest.mark.slow),
    pytest.param("B4", 3.44, marks=pytest.mark.slow), pytest.param("B5", 6.64, marks=pytest.mark.slow),
    pytest.param("B6", 12.51, marks=pytest.mark.slow)])
def test_backbone_macs_at_224_as_in_readme(variant, gmacs):
    """README's MixFormer table: GMACs at 224x224 from the one MAC counter (paper: 0.4..12.7 G)."""
    from paddle_rtseg.benchmarks.flops import count_macs
    model = getattr(M, "MixFormer_" + variant)()
    assert round(count_macs(model, [1, 3, 224, 224]) / 1e9, 2) == gmacs
