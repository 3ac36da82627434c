"""Loading a file never executes code: hostile pickles in every checkpoint format, through every
entry point (Python API, the CLIs' --model_path, model/backbone ``pretrained``, --resume_model),
are refused naming what they asked for, and the marker file their payload would create never
appears. Real paddle.save / torch.save files still load bit for bit."""
import collections
import os
import pickle
import shlex
import shutil
import struct
import zipfile

import numpy as np
import paddle
import pytest
from conftest import CONFIGS, run_module, write_config
from paddleseg.models import RTFormer as PaddleSegRTFormer
from torchfile import LEGACY_MAGIC, save_torch_legacy, save_torch_state_dict

import paddle_rtseg
from paddle_rtseg import CheckpointMismatchError, ConfigError, load_checkpoint, safe_paddleseg
from paddle_rtseg.weights.checkpoints import load_pretrained, read_checkpoint
from paddle_rtseg.models import RTFormer
from paddle_rtseg.weights.safe_pickle import UnsafeCheckpointError, load_paddle
from paddle_rtseg.weights.torch_reader import load_torch_file

TINY = dict(base_channels=8, head_channels=16, num_heads=4, cross_size=4)
SLIM_SYNTHETIC = os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
SEGFORMER_SYNTHETIC = os.path.join(CONFIGS, "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml")


class _Call:
    """Pickles as ``func(*args)`` (then BUILD ``state``): what a hostile checkpoint asks to run."""

    def __init__(self, func, *args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def touch(marker):
    return "touch " + shlex.quote(str(marker))


def _ordered_dict_setstate():
    # OrderedDict() then BUILD (None, {"__setstate__": OrderedDict}): slot state on an admitted class
    return (b"\x80\x02ccollections\nOrderedDict\n)R" b"N}X\x0c\x00\x00\x00__setstate__"
            b"ccollections\nOrderedDict\ns\x86b.")


# name -> (pickle bytes for marker, fragment the refusal names)
HOSTILE = {
    "os.system": (lambda m: pickle.dumps({"w": _Call(os.system, touch(m))}, protocol=2), "system"),
    "os.system via STACK_GLOBAL": (
        lambda m: pickle.dumps({"w": _Call(os.system, touch(m))}, protocol=4), "system"),
    "eval (Paddle's own DenseTensor reduce)": (
        lambda m: pickle.dumps(_Call(eval, "__import__('os').system({!r})".format(touch(m)), {}),
                               protocol=2), "builtins.eval"),
    "object-dtype array": (lambda m: pickle.dumps(
        {"w": np.array([_Call(os.system, touch(m)), 1], dtype=object)}, protocol=2), "object"),
    "object-dtype array of plain ints": (
        lambda m: pickle.dumps({"w": np.array([1, 2], dtype=object)}, protocol=4), "object"),
    "STACK_GLOBAL with non-string names": (lambda m: b"\x80\x04K\x01K\x02\x93.", "STACK_GLOBAL"),
    "BUILD slot state on OrderedDict": (lambda m: _ordered_dict_setstate(),
                                        "set the state of a OrderedDict"),
    "BUILD on a list": (lambda m: b"\x80\x02]}b.", "set the state of a list"),
    "REDUCE of an admitted class": (lambda m: b"\x80\x02cnumpy\nndarray\nK\x01\x85R.",
                                    "asks to call"),
    "NEWOBJ": (lambda m: b"\x80\x02cnumpy\nndarray\nK\x01\x85\x81.", "NEWOBJ"),
    "INST (protocol 0)": (lambda m: "(S'{}'\nios\nsystem\n.".format(touch(m)).encode(), "INST"),
    "copyreg extension (EXT1)": (
        lambda m: b"\x80\x02\x82\x01" + pickle.dumps(touch(m), protocol=2)[2:-1] + b"\x85R.",
        "EXT1"),
    "persistent id": (lambda m: b"\x80\x02X\x01\x00\x00\x00aQ.", "persistent id"),
    "OrderedDict with arguments": (lambda m: pickle.dumps(
        _Call(collections.OrderedDict, [("a", 1)]), protocol=2), "OrderedDict() with arguments"),
    "dtype state with object flags": (lambda m: pickle.dumps(
        _Call(np.dtype, "f8", False, True, state=(3, "<", None, None, None, 8, 1, 63)),
        protocol=2), "dtype state"),
    "array with overflowing shape": (lambda m: pickle.dumps(_Call(
        np.core.multiarray._reconstruct, np.ndarray, (0,), b"b",
        state=(1, (2 ** 32, 2 ** 32), np.dtype("f4"), False, b"")), protocol=2), "bytes of data"),
}


def write_paddle(payload, path):
    with open(path, "wb") as f:
        f.write(payload)
    return path


def write_torch_zip(payload, path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
    return path


def write_torch_legacy(payload, path):
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump(dict(protocol_version=1001, little_endian=True), f, protocol=2)
        f.write(payload)
        pickle.dump([], f, protocol=2)
    return path


FORMATS = {"pdparams": (write_paddle, ".pdparams"), "pth-zip": (write_torch_zip, ".pth"),
           "pth-legacy": (write_torch_legacy, ".pth")}


def hostile_file(tmp_path, fmt="pdparams", variant="os.system", name="evil"):
    """(path, marker, fragment): a checkpoint whose pickle would create ``marker``."""
    marker = tmp_path / (name + "-ran")
    make, fragment = HOSTILE[variant]
    write, ext = FORMATS[fmt]
    return write(make(marker), str(tmp_path / (name + ext))), marker, fragment


def test_the_payload_runs_under_plain_unpickling(tmp_path):
    """The threat is real: pickle.load and paddle.load run it (why nothing here may use them)."""
    path, marker, _ = hostile_file(tmp_path)
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    paddle.load(path)
    assert marker.exists()


@pytest.fixture(scope="module")
def shared_model():
    return RTFormer(5, **TINY)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", HOSTILE)
def test_load_checkpoint_refuses_before_running(tmp_path, shared_model, fmt, variant):
    path, marker, fragment = hostile_file(tmp_path, fmt, variant)
    if fmt != "pdparams" and variant == "persistent id":
        fragment = "unknown persistent id"  # torch pickles have persistent ids, of one shape
    model = shared_model
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(UnsafeCheckpointError, match="Refusing to load") as err:
        load_checkpoint(model, path)
    assert fragment in str(err.value)
    assert not marker.exists()
    assert all(np.array_equal(before[k], v.numpy()) for k, v in model.state_dict().items())


def test_legacy_torch_header_pickles_are_restricted_too(tmp_path):
    marker = tmp_path / "ran"
    path = save_torch_legacy({"w": np.zeros(2, np.float32)}, str(tmp_path / "x.pth"),
                             payload=_Call(os.system, touch(marker)))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_torch_file(path)
    assert not marker.exists()


# ---- PaddleSeg's readers (load_pretrained_model, load_entire_model, resume) and `pretrained`

def test_paddleseg_load_pretrained_model_is_routed(tmp_path):
    from paddleseg import utils
    from paddleseg.utils import utils as utils_module

    path, marker, _ = hostile_file(tmp_path)
    for load in (utils_module.load_pretrained_model, utils.load_entire_model):
        with pytest.raises(UnsafeCheckpointError, match="system"):
            load(RTFormer(5, **TINY), path)
    with pytest.raises(UnsafeCheckpointError, match="system"):  # PaddleSeg's own model
        PaddleSegRTFormer(5, pretrained=path, **TINY)
    assert not marker.exists()
    assert set(safe_paddleseg.ORIGINALS) == {"load_pretrained_model", "resume", "parse_from_yaml"}


def _trained_checkpoint(folder):
    """model.pdparams/model.pdopt as PaddleSeg's trainer writes them (AdamW, warm-up + poly LR)."""
    paddle.seed(0)
    model = RTFormer(5, **TINY)
    lr = paddle.optimizer.lr.LinearWarmup(paddle.optimizer.lr.PolynomialDecay(0.01, 100), 2, 0, 0.01)
    opt = paddle.optimizer.AdamW(lr, parameters=model.parameters(), weight_decay=0.01)
    for _ in range(3):
        model(paddle.randn([1, 3, 32, 32]))[0].mean().backward()
        opt.step()
        opt.clear_grad()
        lr.step()
    os.makedirs(folder, exist_ok=True)
    paddle.save(model.state_dict(), os.path.join(folder, "model.pdparams"))
    paddle.save(opt.state_dict(), os.path.join(folder, "model.pdopt"))
    return folder


def _fresh():
    model = RTFormer(5, **TINY)
    lr = paddle.optimizer.lr.LinearWarmup(paddle.optimizer.lr.PolynomialDecay(0.01, 100), 2, 0, 0.01)
    return model, paddle.optimizer.AdamW(lr, parameters=model.parameters(), weight_decay=0.01)


def test_resume_matches_paddleseg_and_refuses_hostile_files(tmp_path):
    import importlib
    train = importlib.import_module("paddleseg.core.train")
    folder = _trained_checkpoint(str(tmp_path / "iter_3"))
    ours, theirs = _fresh(), _fresh()
    assert train.resume(*ours, folder) == 3
    assert safe_paddleseg.ORIGINALS["resume"](*theirs, folder) == 3
    for a, b in zip(ours[0].state_dict().values(), theirs[0].state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())
    sa, sb = ours[1].state_dict(), theirs[1].state_dict()
    assert sa["LR_Scheduler"] == sb["LR_Scheduler"] and sa.keys() == sb.keys()
    for k in sa:
        if k != "LR_Scheduler":
            assert np.array_equal(sa[k].numpy(), sb[k].numpy()), k
    for name in ("model.pdparams", "model.pdopt"):
        evil = str(tmp_path / name.replace(".", "_") / "iter_3")
        os.makedirs(evil)
        for other in ("model.pdparams", "model.pdopt"):
            shutil.copy(os.path.join(folder, other), os.path.join(evil, other))
        os.remove(os.path.join(evil, name))
        marker = tmp_path / (name + "-ran")
        write_paddle(HOSTILE["os.system"][0](marker), os.path.join(evil, name))
        with pytest.raises(UnsafeCheckpointError, match="system"):
            train.resume(*_fresh(), evil)
        assert not marker.exists()
        write_paddle(b"\x80\x02}q\x00X", os.path.join(evil, name))  # truncated
        with pytest.raises(ValueError, match="Cannot read checkpoint .*" + name):
            train.resume(*_fresh(), evil)


@pytest.mark.parametrize("protocol", [2, 4])
def test_paddle_save_files_read_as_paddle_load_reads_them(tmp_path, protocol):
    folder = _trained_checkpoint(str(tmp_path / "iter_3"))
    for name in ("model.pdparams", "model.pdopt"):
        path = os.path.join(folder, name)
        paddle.save(paddle.load(path), path, protocol=protocol)
        for return_numpy in (False, True):
            _assert_same(paddle.load(path, return_numpy=return_numpy),
                         load_paddle(path, return_numpy=return_numpy))
    weight = RTFormer(5, **TINY).conv1[0].weight
    other = str(tmp_path / "object.pd")  # not a state dict: Tensors pickle as tuple(name, array)
    paddle.save({"a": [weight, {"b": (1, 2.5, "x", None, True)}]}, other, protocol=protocol)
    _assert_same(paddle.load(other), load_paddle(other, return_numpy=False))


def _assert_same(a, b):
    if isinstance(a, paddle.Tensor):
        assert isinstance(b, paddle.Tensor) and a.name == b.name and a.dtype == b.dtype
        assert np.array_equal(a.numpy(), b.numpy())
        return
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b) and b.flags.writeable
    else:
        assert a == b


def test_numpy_pickles_of_every_admitted_kind_round_trip(tmp_path):
    obj = {"be": np.arange(3, dtype=">f4"), "f64": np.float64(2.5), "c": np.complex64(1j),
           "b": np.array([True, False]), "u8": np.arange(4, dtype=np.uint8).reshape(2, 2),
           "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "bytes": b"\x00\xff",
           "empty": np.zeros((0, 3), np.float32)}
    for protocol in (0, 2, 4):
        path = str(tmp_path / "x.pdparams")
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
        got, ref = load_paddle(path), pickle.loads(pickle.dumps(obj, protocol=protocol))
        for k, v in ref.items():  # what pickle.load gives (it makes big-endian arrays native)
            assert type(got[k]) is type(v) and np.array_equal(got[k], v), (protocol, k)
            assert getattr(got[k], "dtype", None) == getattr(v, "dtype", None)


@pytest.mark.parametrize("save", [save_torch_state_dict, save_torch_legacy])
def test_torch_files_round_trip_bit_for_bit(tmp_path, save):
    rng = np.random.default_rng(0)
    state = {"w": rng.random((4, 3), dtype=np.float32), "b": rng.random(4).astype(np.float64),
             "n": np.array(7, np.int64), "t": rng.random((3, 5), dtype=np.float32).T,
             "h": rng.random((2, 2)).astype(np.float16), "i": np.arange(6, dtype=np.int32),
             "m": np.array([True, False]), "e": np.zeros((0, 3), np.float32)}
    path = save(state, str(tmp_path / "x.pth"), extra={"epoch": 3, "meta": {"lr": [0.1, None]}})
    loaded = load_torch_file(path)
    assert loaded["epoch"] == 3 and loaded["meta"] == {"lr": [0.1, None]}
    assert type(loaded["state_dict"]) is collections.OrderedDict
    assert list(loaded["state_dict"]) == list(state)
    for k, v in state.items():
        got = loaded["state_dict"][k]
        assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), k


def test_legacy_torch_truncated_storage_is_an_error(tmp_path):
    path = save_torch_legacy({"w": np.zeros(4, np.float32)}, str(tmp_path / "x.pth"))
    with open(path, "rb+") as f:
        f.truncate(os.path.getsize(path) - 4)
    with pytest.raises(ValueError, match="truncated"):
        read_checkpoint(path)


def test_pretrained_that_does_not_load_is_an_error(tmp_path):
    config = write_config(tmp_path / "tiny.yml", SLIM_SYNTHETIC, model=TINY)
    with pytest.raises((ConfigError, RuntimeError), match="does not exist"):
        paddle_rtseg.build_model(config, pretrained=str(tmp_path / "nope.pdparams"))
    other = str(tmp_path / "other.pdparams")
    paddle.save(RTFormer(19, **TINY).state_dict(), other)
    with pytest.raises(ConfigError, match="shape mismatch"):
        paddle_rtseg.build_model(config, pretrained=other)
    evil, marker, _ = hostile_file(tmp_path)
    with pytest.raises(ConfigError, match="system"):
        paddle_rtseg.build_model(config, pretrained=evil)
    assert not marker.exists()
    assert paddle_rtseg.build_model(config, pretrained=None) is not None


def test_pretrained_backbone_ignores_extra_entries_only(tmp_path):
    from paddle_rtseg.models.mit import MixVisionTransformer
    source = MixVisionTransformer(embed_dims=[8, 16, 16, 16], num_heads=[1, 1, 1, 1], depths=[1] * 4)
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    path = str(tmp_path / "imagenet.pdparams")
    paddle.save(dict(state, **{"head.weight": np.ones((16, 10), np.float32)}), path)
    loaded = MixVisionTransformer(embed_dims=[8, 16, 16, 16], num_heads=[1, 1, 1, 1],
                                  depths=[1] * 4, pretrained=path)
    assert all(np.array_equal(v.numpy(), state[k]) for k, v in loaded.state_dict().items())
    # a backbone checkpoint loaded into a bigger model: what it lacks keeps its initialisation
    first = next(iter(state))
    partial = {k: v for k, v in state.items() if k != first}
    paddle.save(partial, path)
    target = MixVisionTransformer(embed_dims=[8, 16, 16, 16], num_heads=[1, 1, 1, 1],
                                  depths=[1] * 4)
    before = target.state_dict()[first].numpy().copy()
    result = load_pretrained(target, path)
    assert result["missing"] == [first]
    assert np.array_equal(target.state_dict()[first].numpy(), before)
    assert all(np.array_equal(target.state_dict()[k].numpy(), v) for k, v in partial.items())
    # a checkpoint sharing no parameter with the model is another model: error, model untouched
    paddle.save({"other." + k: v for k, v in state.items()}, path)
    with pytest.raises(CheckpointMismatchError, match="missing in checkpoint"):
        load_pretrained(target, path)


# ---- the command lines: exit 2, one `error:` line naming the refused callable, no marker

def assert_refused(out, marker, fragment="system"):
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors and fragment in errors[-1] and "Refusing to load" in errors[-1], out.stderr[-3000:]
    assert not marker.exists()


@pytest.fixture
def tiny_config(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    return write_config(tmp_path / "tiny.yml", SLIM_SYNTHETIC, model=TINY, **datasets)


@pytest.mark.parametrize("module, fmt, extra", [
    ("paddle_rtseg.val", "pdparams", []),
    ("paddle_rtseg.predict", "pth-legacy", ["--image_path", "IMAGES", "--save_dir", "pred"]),
    pytest.param("paddle_rtseg.export", "pth-zip", ["--save_dir", "export"],
                 marks=pytest.mark.slow),  # re-runs itself in a subprocess: ~17 s
    ("paddle_rtseg.deploy_all", "pdparams", ["--save_dir", "deploy", "--input_shape", 1, 3, 64, 64]),
    pytest.param("paddle_rtseg.quantize", "pth-legacy", ["--save_dir", "quant", "--calib_batches", 1],
                 marks=pytest.mark.slow),
])
def test_cli_model_path(tmp_path, tiny_config, synthetic_root, module, fmt, extra):
    path, marker, _ = hostile_file(tmp_path, fmt)
    extra = [os.path.join(synthetic_root, "images") if a == "IMAGES" else a for a in extra]
    out = run_module(module, "--config", tiny_config, "--model_path", path, *extra, cwd=tmp_path)
    assert_refused(out, marker)


def _train(tmp_path, config, *args):
    return run_module("paddle_rtseg.train", "--config", config, "--iters", 2, "--save_dir",
                      tmp_path / "out", *args, cwd=tmp_path)


def test_cli_model_pretrained(tmp_path, tiny_config):
    path, marker, _ = hostile_file(tmp_path, "pth-zip")
    assert_refused(_train(tmp_path, tiny_config, "--opts", "model.pretrained=" + path), marker)
    assert not (tmp_path / "out" / "iter_2").exists()


def test_cli_backbone_pretrained(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(tmp_path / "segformer.yml", SEGFORMER_SYNTHETIC, **datasets)
    path, marker, _ = hostile_file(tmp_path, "pth-legacy")
    assert_refused(_train(tmp_path, config, "--opts", "model.backbone.pretrained=" + path), marker)


@pytest.mark.parametrize("name", ["model.pdparams", "model.pdopt"])
def test_cli_resume_model(tmp_path, tiny_config, name):
    folder = tmp_path / "out" / "iter_2"
    folder.mkdir(parents=True)
    paddle.seed(0)
    model = RTFormer(5, **TINY)
    paddle.save(model.state_dict(), str(folder / "model.pdparams"))
    opt = paddle.optimizer.SGD(paddle.optimizer.lr.PolynomialDecay(0.01, 10),
                               parameters=model.parameters())
    paddle.save(opt.state_dict(), str(folder / "model.pdopt"))
    marker = tmp_path / "ran"
    write_paddle(HOSTILE["os.system"][0](marker), str(folder / name))
    out = _train(tmp_path, tiny_config, "--resume_model", folder)
    assert_refused(out, marker)
    assert not (tmp_path / "out" / "iter_4").exists()


def test_storage_count_field_is_bounded(tmp_path):
    """A legacy storage header claiming more elements than the tensor needs is refused."""
    path = save_torch_legacy({"w": np.zeros(2, np.float32)}, str(tmp_path / "x.pth"))
    data = open(path, "rb").read()
    data = data.replace(struct.pack("<q", 2) + np.zeros(2, np.float32).tobytes(),
                        struct.pack("<q", 1 << 40) + np.zeros(2, np.float32).tobytes())
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_checkpoint(path)
