"""Checkpoint loading: PaddleSeg .pdparams, PyTorch zip .pth without torch, clear mismatch errors."""
import os

import numpy as np
import paddle
import pytest
from conftest import randomize_state
from paddleseg.models import RTFormer as PaddleSegRTFormer
from torchfile import save_malicious, save_torch_state_dict

from paddle_rtseg import CheckpointMismatchError, load_checkpoint
from paddle_rtseg.models import RTFormer
from paddle_rtseg.weights.torch_reader import UnsafeCheckpointError, load_torch_state_dict

TINY = dict(base_channels=8, head_channels=16, num_heads=4, cross_size=4)


def test_paddleseg_checkpoint_loads_and_gives_same_logits(tmp_path):
    theirs = PaddleSegRTFormer(5, **TINY)
    randomize_state(theirs)
    path = str(tmp_path / "model.pdparams")
    paddle.save(theirs.state_dict(), path)
    ours = RTFormer(5, **TINY)
    report = load_checkpoint(ours, path)
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    ours.eval(), theirs.eval()
    x = paddle.randn([1, 3, 64, 64])
    np.testing.assert_allclose(ours(x)[0].numpy(), theirs(x)[0].numpy(), rtol=1e-4, atol=1e-4)


def test_other_num_classes_is_refused_by_name_and_leaves_model_untouched(tmp_path):
    path = str(tmp_path / "model.pdparams")
    paddle.save(RTFormer(19, **TINY).state_dict(), path)
    model = RTFormer(5, **TINY)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(model, path)
    message = str(err.value)
    assert "seghead.conv2.weight checkpoint [19, 32, 1, 1] vs model [5, 32, 1, 1]" in message
    assert "num_classes" in message
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)
    report = load_checkpoint(model, path, strict=False)
    assert {k for k, _, _ in report["mismatched"]} == {
        "seghead.conv2.weight", "seghead.conv2.bias", "seghead_extra.conv2.weight",
        "seghead_extra.conv2.bias"}


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = RTFormer(5, **TINY).state_dict()
    state.pop("spp.scale0.2.weight")
    state["extra.weight"] = paddle.zeros([1])
    path = str(tmp_path / "model.pdparams")
    paddle.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"missing in checkpoint \(1\): spp.scale0.2.weight"
                       r"[\s\S]*unexpected in checkpoint \(1\): extra.weight"):
        load_checkpoint(RTFormer(5, **TINY), path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(RTFormer(5, **TINY), str(tmp_path / "nope.pdparams"))
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Cannot read checkpoint"):
        load_checkpoint(RTFormer(5, **TINY), str(bad))


def test_torch_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    state = {"w": rng.random((4, 3), dtype=np.float32), "b": rng.random(4).astype(np.float64),
             "n": np.array(7, np.int64), "t": rng.random((3, 5), dtype=np.float32).T,
             "h": rng.random((2, 2)).astype(np.float16)}
    path = save_torch_state_dict(state, str(tmp_path / "x.pth"))
    loaded = load_torch_state_dict(path)
    assert list(loaded) == list(state)
    for k in state:
        assert loaded[k].dtype == state[k].dtype and np.array_equal(loaded[k], state[k])


def test_malicious_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = save_malicious(str(tmp_path / "evil.pth"), marker=str(marker))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(RTFormer(5, **TINY), path)
    assert not os.path.exists(marker)


def test_torch_checkpoint_for_model_without_converter(tmp_path):
    path = save_torch_state_dict({"w": np.zeros(2, np.float32)}, str(tmp_path / "x.pth"))
    with pytest.raises(ValueError, match="no converter for PyTorch"):
        load_checkpoint(RTFormer(5, **TINY), path)


def test_torch_reader_prefers_ema_weights(tmp_path):
    path = save_torch_state_dict({"w": np.ones(2, np.float32)}, str(tmp_path / "x.pth"),
                                 wrap="state_dict_ema")
    assert load_torch_state_dict(path)["w"].tolist() == [1.0, 1.0]


def test_tensor_pointing_outside_its_storage_is_refused(tmp_path):
    import zipfile
    path = save_torch_state_dict({"w": np.zeros(4, np.float32)}, str(tmp_path / "x.pth"))
    with zipfile.ZipFile(path) as z:  # keep the pickle (size 4), shrink the storage to 2 floats
        files = {n: z.read(n) for n in z.namelist()}
    files["archive/data/0"] = files["archive/data/0"][:8]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(UnsafeCheckpointError, match="outside its storage"):
        load_torch_state_dict(path)
