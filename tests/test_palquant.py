"""PalQuant (ECCV 2022): our layers and ResNet against the authors' code, through fixtures made by
running it (scripts/make_palquant_fixtures.py documents how), in the one-batch initialisation step
(train mode) and in eval; the straight-through backward of QConv against theirs; their
``checkpoint.pth.tar`` loading without PyTorch, and a hostile one refused."""
import os
import re
import shlex
import zipfile

import numpy as np
import paddle
import pytest
from conftest import CONFIGS, run_module, write_config
from torchfile import save_torch_state_dict

import paddle_rtseg
from paddle_rtseg import load_checkpoint
from paddle_rtseg.layers import (ChannelShuffle, CyclicShuffle, QConv, channel_shuffle,
                                 cyclic_permute, init_quantizers, split_quantizer_parameters)
from paddle_rtseg.layers.palquant_conv import clamp01, round_half_even, ste_round
from paddle_rtseg.models import PalQuantResNet
from paddle_rtseg.weights.safe_pickle import UnsafeCheckpointError
from paddle_rtseg.weights.torch_reader import load_torch_file

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
QUANTIZER = ("uW", "lW", "uA", "lA", "output_scale")


def fixture(name):
    return np.load(os.path.join(FIXTURES, name))


def unpack(data, prefix):
    """The arrays scripts/make_palquant_fixtures.py ``pack`` stored under ``prefix``."""
    keys = str(data[prefix + "keys"]).split("\n")
    shapes, values = list(data[prefix + "shapes"]), data[prefix + "values"]
    out, at = {}, 0
    for key in keys:
        ndim = int(shapes.pop(0))
        shape = [int(shapes.pop(0)) for _ in range(ndim)]
        size = int(np.prod(shape))
        out[key] = values[at:at + size].reshape(shape)
        at += size
    assert at == values.size and not shapes
    return out


def close(ours, theirs, rtol=1e-4, atol_scale=1e-5):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    np.testing.assert_allclose(ours, theirs, rtol=rtol,
                               atol=atol_scale * max(np.abs(theirs).max(), 1e-3))


# ---- layers

def test_channel_shuffle_and_cyclic_permute_follow_the_papers_definitions():
    x = np.arange(2 * 12 * 2 * 3, dtype="float32").reshape(2, 12, 2, 3)
    for groups in (1, 2, 3, 4):
        per = 12 // groups
        shuffled = x.reshape(2, groups, per, 2, 3).transpose(0, 2, 1, 3, 4).reshape(x.shape)
        rolled = x.reshape(2, groups, per, 2, 3)[:, list(range(1, groups)) + [0]].reshape(x.shape)
        t = paddle.to_tensor(x)
        np.testing.assert_array_equal(channel_shuffle(t, groups).numpy(), shuffled)
        np.testing.assert_array_equal(ChannelShuffle(groups)(t).numpy(), shuffled)
        np.testing.assert_array_equal(cyclic_permute(t, groups).numpy(), rolled)
    with pytest.raises(ValueError, match="12 channels do not split into 5 groups"):
        channel_shuffle(paddle.to_tensor(x), 5)


def test_straight_through_rounding_and_clamp_gradients():
    v = paddle.to_tensor(np.array([-0.2, 0.0, 0.1, 0.2, 0.5, 0.83, 1.0, 1.3], "float32"),
                         stop_gradient=False)
    q = ste_round(clamp01(v), 4)
    np.testing.assert_array_equal(q.numpy(), np.float32([0, 0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 1]))
    (q * paddle.arange(1, 9, dtype="float32")).sum().backward()
    # identity through the rounding; through the clamp on [0, 1] with both ends (torch.clamp's)
    np.testing.assert_array_equal(v.grad.numpy(), np.float32([0, 2, 3, 4, 5, 6, 7, 0]))


def test_rounding_ties_go_to_even_as_in_torch():
    v = paddle.to_tensor(np.float32([0.125, 0.375, 0.625, 0.875, 0.3, 0.7]))
    np.testing.assert_array_equal(ste_round(v, 5).numpy(), np.float32([0, .5, .5, 1, .25, .75]))
    w = paddle.to_tensor(np.float32([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -0.7, 0.49]))
    np.testing.assert_array_equal(round_half_even(w).numpy(),
                                  np.float32([-2, -2, 0, 0, 2, 2, 4, -1, 0]))


def test_qconv_matches_the_authors_init_output_and_backward():
    """One grouped 3x3 stride-2 W2A2 QConv: the initialisation on a batch, the output, and the
    straight-through gradients of the input, weight and every quantizer parameter."""
    data = fixture("palquant_qconv.npz")
    conv = QConv(8, 12, 3, stride=2, padding=1, groups=2, weight_levels=4, act_levels=4)
    conv.weight.set_value(data["weight"].astype("float32"))
    y = init_quantizers(conv, paddle.to_tensor(data["x_init"].astype("float32")))
    close(y.numpy(), data["y_init"])
    for name in QUANTIZER:
        close(getattr(conv, name).numpy(), data["after/" + name], rtol=1e-5)
    assert int(conv.init.numpy()[0]) == 0
    x = paddle.to_tensor(data["x"].astype("float32"), stop_gradient=False)
    y = conv(x)
    close(y.numpy(), data["y"])
    (y * paddle.to_tensor(data["r"].astype("float32"))).sum().backward()
    close(x.grad.numpy(), data["grad/x"])
    for name in ("weight",) + QUANTIZER:
        close(getattr(conv, name).grad.numpy(), data["grad/" + name], rtol=2e-4)


def test_qconv_rejects_bad_levels():
    with pytest.raises(ValueError, match="weight_levels must be an integer >= 2"):
        QConv(4, 4, 1, weight_levels=1)
    with pytest.raises(ValueError, match="act_levels must be an integer >= 2"):
        QConv(4, 4, 1, act_levels=2.5)


# ---- the network

def test_state_dict_keys_are_the_authors():
    data = fixture("palquant_resnet18_g2.npz")
    theirs = unpack(data, "state/")
    model = PalQuantResNet(18, groups=2, weight_levels=4, act_levels=4, num_classes=10,
                           base_channels=2)
    ours = model.state_dict()
    converted = model.convert_torch_state_dict(theirs)
    assert sorted(converted) == sorted(ours)
    assert all(list(converted[k].shape) == list(ours[k].shape) for k in ours)
    assert sum(not k.endswith("num_batches_tracked") for k in theirs) == len(ours)


def _load_state(model, state):
    converted = model.convert_torch_state_dict(state)
    model.set_state_dict({k: v.astype(str(model.state_dict()[k].dtype).replace("paddle.", ""))
                          for k, v in converted.items()})


@pytest.mark.parametrize("groups", [2, 4])
def test_resnet_matches_the_authors_in_the_init_step_and_in_eval(groups):
    data = fixture("palquant_resnet18_g{}.npz".format(groups))
    state = unpack(data, "state/")
    model = PalQuantResNet(18, groups=groups, weight_levels=4, act_levels=4, num_classes=10,
                           base_channels=2)
    _load_state(model, state)
    y = init_quantizers(model, paddle.to_tensor(data["x_init"].astype("float32")))
    close(y.numpy(), data["y_init"])
    after, counts = unpack(data, "after/"), unpack(data, "bn_count/")
    ours = model.state_dict()
    for key, theirs in after.items():
        name = key.replace(".running_mean", "._mean").replace(".running_var", "._variance")
        if key.endswith("running_var"):
            # Paddle's BN updates its running variance with the biased batch variance, PyTorch's
            # with the unbiased one: running = 0.9 * 1 + 0.1 * var_batch from the initial 1.
            n = float(counts[key.rsplit(".", 1)[0]])
            theirs = 0.9 + (theirs - 0.9) * (n - 1) / n
        close(ours[name].numpy(), theirs, rtol=2e-4)
    # eval after the step, on the authors' post-init state (our running variances differ by the
    # convention above: at layer4 of a 32x32 batch of 4, n = 4)
    model.eval()
    _load_state(model, dict(state, **after))
    close(model(paddle.to_tensor(data["x_eval"].astype("float32"))).numpy(), data["y_eval"])


def test_backbone_features_and_registration():
    from paddleseg.cvlibs import manager
    backbone = manager.BACKBONES["RTSeg_PalQuantResNet18"](groups=2, base_channels=4)
    feats = backbone(paddle.randn([1, 3, 64, 96]))
    assert [f.shape for f in feats] == [[1, c, 64 // s, 96 // s] for c, s in
                                        zip([8, 16, 32, 64], [4, 8, 16, 32])]
    assert backbone.feat_channels == [8, 16, 32, 64]
    assert manager.BACKBONES["RTSeg_PalQuantResNet34"](base_channels=1).layer3[5] is not None


def test_two_optimizers_learn_a_batch():
    """The authors' recipe: SGD for the weights, Adam for the quantizer parameters, after the
    one-batch initialisation; W2A2 G=2 fits a fixed batch."""
    paddle.seed(0)
    model = PalQuantResNet(18, groups=2, num_classes=4, base_channels=2)
    rest, quant = split_quantizer_parameters(model)
    assert len(quant) == 5 * len(model.quantized_convs())
    assert len(rest) + len(quant) == len(model.parameters())
    x = paddle.randn([8, 3, 32, 32])
    label = paddle.to_tensor(np.arange(8) % 4)
    init_quantizers(model, x)
    initial = [float(p) for p in quant]
    opt_m = paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=rest, weight_decay=1e-4)
    opt_q = paddle.optimizer.Adam(1e-3, parameters=quant)
    losses = []
    for _ in range(25):
        loss = paddle.nn.functional.cross_entropy(model(x), label)
        loss.backward()
        opt_m.step()
        opt_q.step()
        opt_m.clear_grad()
        opt_q.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    moved = [float(p) != start for p, start in zip(quant, initial)]
    assert all(moved), "quantizer parameters Adam left unchanged: {}".format(
        [i for i, m in enumerate(moved) if not m])


# ---- the authors' checkpoint.pth.tar

def test_authors_checkpoint_loads_without_torch_and_gives_their_outputs():
    path = os.path.join(FIXTURES, "palquant_checkpoint.pth.tar")
    raw = load_torch_file(path)
    assert set(raw) == {"epoch", "arch", "state_dict", "best_acc1", "optimizer_m", "optimizer_q",
                        "scheduler_m", "scheduler_q"}
    assert all(k.startswith("module.") for k in raw["state_dict"])
    model = PalQuantResNet(18, groups=2, num_classes=5, base_channels=1)
    report = load_checkpoint(model, path)
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    data = fixture("palquant_checkpoint.npz")
    model.eval()
    close(model(paddle.to_tensor(data["x"])).numpy(), data["y"])


def test_hostile_authors_checkpoint_is_refused(tmp_path):
    """The authors' layout (``module.`` state dict, optimizer and scheduler states) with a payload
    in the Adam state: refused before anything runs, model untouched."""
    marker = tmp_path / "ran"

    class Call:
        def __reduce__(self):
            return os.system, ("touch " + shlex.quote(str(marker)),)

    real = load_torch_file(os.path.join(FIXTURES, "palquant_checkpoint.pth.tar"))
    extra = {k: v for k, v in real.items() if k not in ("state_dict", "best_acc1")}
    extra["optimizer_q"] = dict(real["optimizer_q"], state={0: Call()})
    path = save_torch_state_dict(real["state_dict"], str(tmp_path / "checkpoint.pth.tar"),
                                 extra=extra)
    model = PalQuantResNet(18, groups=2, num_classes=5, base_channels=1)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(model, path)
    assert not marker.exists()
    assert all(np.array_equal(before[k], v.numpy()) for k, v in model.state_dict().items())
    extra["optimizer_q"] = real["optimizer_q"]
    safe = save_torch_state_dict(real["state_dict"], str(tmp_path / "safe.pth.tar"), extra=extra)
    assert load_checkpoint(model, safe) == dict(missing=[], unexpected=[], mismatched=[])
    with zipfile.ZipFile(path) as z:  # the payload really is in the file, as a pickled call
        assert b"system" in z.read("archive/data.pkl")


# ---- segmentation

PALQUANT_SYNTHETIC = os.path.join(CONFIGS, "palquant", "palquant_r18_g2w2a2_synthetic_128x128_2k.yml")


def test_segmentor_initialises_its_quantizers_on_the_first_training_batch():
    model = paddle_rtseg.build_model(PALQUANT_SYNTHETIC, head_channels=16, backbone=dict(
        type="RTSeg_PalQuantResNet18", groups=2, base_channels=2))
    qconvs = model.backbone.quantized_convs()
    assert all(int(m.init) == 1 and float(m.uW) == 0 for m in qconvs)
    x = paddle.randn([2, 3, 64, 64])
    model.eval()
    model(x)  # eval never initialises
    assert all(int(m.init) == 1 for m in qconvs)
    model.train()
    assert model(x)[0].shape == [2, 5, 64, 64]
    assert all(int(m.init) == 0 and float(m.uW) > 0 and float(m.output_scale) != 1 for m in qconvs)
    after = {k: v.numpy().copy() for k, v in model.state_dict().items()
             if k.rsplit(".", 1)[1] in QUANTIZER + ("init", "weight")}
    model(x)  # once only
    assert all(np.array_equal(after[k], model.state_dict()[k].numpy()) for k in after)
    reloaded = paddle_rtseg.build_model(PALQUANT_SYNTHETIC, head_channels=16, backbone=dict(
        type="RTSeg_PalQuantResNet18", groups=2, base_channels=2))
    reloaded.set_state_dict(model.state_dict())  # a checkpoint's quantizers are kept
    reloaded(x)
    assert float(reloaded.backbone.layer2[0].conv1.uW) == float(model.backbone.layer2[0].conv1.uW)


def test_segmentor_trains_through_paddleseg(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(tmp_path / "tiny.yml", PALQUANT_SYNTHETIC, **datasets,
                          model=dict(head_channels=16, backbone=dict(base_channels=4)))
    out = run_module("paddle_rtseg.train", "--config", config, "--iters", 6, "--batch_size", 4,
                     "--log_iters", 1, "--save_interval", 6, "--save_dir", tmp_path / "out",
                     "--seed", 0, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    losses = [float(v) for v in re.findall(r"\[TRAIN\].*? loss: ([0-9.]+)", log)]
    assert len(losses) == 6 and all(np.isfinite(losses)), losses
    state = paddle.load(str(tmp_path / "out" / "iter_6" / "model.pdparams"))
    assert float(state["backbone.layer3.0.conv2.uA"]) > 0
    assert int(state["backbone.layer3.0.conv2.init"][0]) == 0
    opt_state = paddle.load(str(tmp_path / "out" / "iter_6" / "model.pdopt"))
    assert any(k.startswith("quant/") and "moment1" in k for k in opt_state)  # Adam's, saved


def test_palquant_optimizer_follows_the_schedule_and_round_trips():
    """RTSeg_PalQuantOptimizer: Momentum on the weights at the trainer's schedule, Adam on the
    quantizer parameters at quant_learning_rate x the same schedule shape; both in state_dict."""
    from paddleseg.cvlibs import manager
    model = PalQuantResNet(18, groups=2, num_classes=3, base_channels=2)
    x = paddle.randn([2, 3, 32, 32])
    init_quantizers(model, x)
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=10)
    schedule = paddle.optimizer.lr.LinearWarmup(cosine, 2, 0.0, 0.1)
    opt = manager.OPTIMIZERS["RTSeg_PalQuantOptimizer"](quant_learning_rate=1e-4)(model, schedule)
    assert isinstance(opt, paddle.optimizer.Momentum)
    quant = opt.quant_optimizer._parameter_list
    assert len(quant) == 5 * len(model.quantized_convs())
    assert not {id(p) for p in quant} & {id(p) for p in opt._parameter_list}
    for _ in range(4):
        start = [float(p) for p in quant]
        model(x).mean().backward()
        opt.step()
        opt.clear_grad()
        moved = sum(float(p) != s for p, s in zip(quant, start))
        assert moved > 0 or opt.get_lr() == 0
        schedule.step()
        np.testing.assert_allclose(opt.quant_optimizer.get_lr(), opt.get_lr() * 1e-3, rtol=1e-6)
    state = opt.state_dict()
    assert any(k.startswith("quant/") for k in state) and any(not k.startswith("quant/")
                                                              for k in state)
    fresh = manager.OPTIMIZERS["RTSeg_PalQuantOptimizer"]()(model, 0.1)
    fresh.set_state_dict(state)
    # Paddle 2.6 keeps restored accumulators aside until the first step; 3.0 creates them
    a = dict(getattr(fresh.quant_optimizer, "_accumulators_holder", None) or {})
    a.update(fresh.quant_optimizer.state_dict())
    b = opt.quant_optimizer.state_dict()
    key = next(k for k in b if "moment1" in k)
    np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


# The fake-quant segmentor (quantizers initialised on a training batch) exported with dynamic shapes
# and run on every backend against dygraph, class maps equal: the conformance suite,
# tests/test_models_export.py (palquant).


# PalQuant's parallel groups inside RTFormer (issue 27 item 2b): RTSeg_PalQuantRTFormer
PALQUANT_RTFORMER = os.path.join(CONFIGS, "palquant",
                                 "palquant_rtformer_slim_g2w2a2_synthetic_128x128_2k.yml")
RTFORMER_TINY = dict(base_channels=4, head_channels=8, spp_channels=8, num_heads=2, cross_size=4)


@pytest.mark.parametrize("groups", [1, 2])
def test_rtformer_conv_stages_are_parallel_low_bit_groups(groups):
    """The conv stages are PalQuant's (QConvs grouped by G, widths x G, cyclic shuffles before
    layer2/layer3); from layer4 on the model is RTFormer's, with its names and shapes; the
    quantizers initialise on the first training batch only."""
    from paddle_rtseg.models import PalQuantRTFormer, RTFormer
    from paddle_rtseg.models.palquant import PalQuantBasicBlock
    paddle.seed(0)
    model = paddle_rtseg.build_model(PALQUANT_RTFORMER, groups=groups, **RTFORMER_TINY)
    assert isinstance(model, PalQuantRTFormer)
    c = RTFORMER_TINY["base_channels"]
    stages = {"layer1": c * groups, "layer2": 2 * c * groups, "layer3": 4 * c * groups,
              "layer3_": 2 * c * groups}
    for name, width in stages.items():
        blocks = list(getattr(model, name))
        assert all(isinstance(b, PalQuantBasicBlock) for b in blocks)
        assert blocks[-1].conv2._out_channels == width
    qconvs = [m for m in model.sublayers() if isinstance(m, QConv)]
    assert qconvs and all(m._groups == groups and m.weight_levels == 4 == m.act_levels
                          for m in qconvs)
    assert model.shuffle2.groups == model.shuffle3.groups == groups
    assert (model.merge_high is None) == (groups == 1)
    reference = RTFormer(5, **RTFORMER_TINY).state_dict()
    ours = model.state_dict()
    for key, value in reference.items():
        if key.split(".")[0] in ("layer4", "layer5", "spp", "seghead", "seghead_extra"):
            assert list(ours[key].shape) == list(value.shape), key
    x = paddle.randn([2, 3, 65, 97])
    model.eval()
    assert model(x)[0].shape == [2, 5, 65, 97]
    assert all(int(m.init) == 1 for m in qconvs)  # eval never initialises
    model.train()
    out = model(x)
    assert len(out) == 2 and all(o.shape == [2, 5, 65, 97] for o in out)
    assert all(int(m.init) == 0 and float(m.uA) > 0 and float(m.output_scale) != 1
               for m in qconvs)
    uw = float(model.layer2[0].conv1.uW)
    model(x)
    assert float(model.layer2[0].conv1.uW) == uw  # once only


def test_rtformer_variant_trains_with_adamw_and_quantizer_adam(tmp_path, synthetic_root):
    """``weight_optimizer: AdamW``: AdamW (with weight decay) on the weights, Adam on every QConv's
    quantizer parameters at quant_learning_rate x the schedule; a few PaddleSeg training steps
    lower the loss of a fixed batch; bad weight_optimizer names are refused."""
    from paddleseg.cvlibs import manager
    from paddle_rtseg.models.palquant import PalQuantAdamW
    paddle.seed(0)
    model = paddle_rtseg.build_model(PALQUANT_RTFORMER, **RTFORMER_TINY)
    x = paddle.randn([4, 3, 64, 64])
    label = (paddle.rand([4, 64, 64]) * 5).astype("int64")
    model.train()
    model(x)  # quantizer initialisation
    factory = manager.OPTIMIZERS["RTSeg_PalQuantOptimizer"]
    opt = factory(weight_optimizer="AdamW", weight_decay=0.0125, quant_learning_rate=1e-4)(
        model, 2e-3)
    assert isinstance(opt, PalQuantAdamW) and isinstance(opt, paddle.optimizer.AdamW)
    quant_ids = {id(p) for p in opt.quant_optimizer._parameter_list}
    assert len(quant_ids) == 5 * len([m for m in model.sublayers() if isinstance(m, QConv)])
    assert not quant_ids & {id(p) for p in opt._parameter_list}
    np.testing.assert_allclose(opt.quant_optimizer.get_lr(), 1e-4, rtol=1e-6)

    def loss():
        return sum(paddle.nn.functional.cross_entropy(o.transpose([0, 2, 3, 1]), label.unsqueeze(-1))
                   for o in model(x))

    first = float(loss())
    for _ in range(8):
        loss().backward()
        opt.step()
        opt.clear_grad()
    assert float(loss()) < 0.9 * first
    assert any(k.startswith("quant/") for k in opt.state_dict())
    with pytest.raises(ValueError, match="weight_optimizer must be one of"):
        factory(weight_optimizer="SGD")
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(tmp_path / "tiny.yml", PALQUANT_RTFORMER, **datasets,
                          model=RTFORMER_TINY)
    out = run_module("paddle_rtseg.train", "--config", config, "--iters", 3, "--batch_size", 2,
                     "--log_iters", 1, "--save_interval", 3, "--save_dir", tmp_path / "out",
                     "--seed", 0, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    state = paddle.load(str(tmp_path / "out" / "iter_3" / "model.pdparams"))
    assert int(state["layer3.0.conv2.init"][0]) == 0 and float(state["layer3.0.conv2.uA"]) > 0
