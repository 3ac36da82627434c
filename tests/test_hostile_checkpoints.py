"""The weight reader against crafted files: every tensor's offset, size and stride are checked
against the bytes its storage really holds (generated geometries, compared with an index-by-index
reference), a checkpoint cannot claim more bytes than it holds (stride-0 expansion, zip bombs,
length fields), and every refusal gives its reason in one bounded paragraph."""
import collections
import os
import pickle
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import paddle
import pytest
from conftest import run_module
from torchfile import LEGACY_MAGIC, _REBUILD, _LegacyPickler, _pickle_with_fake_torch, _Storage
from torchfile import save_torch_legacy, save_torch_state_dict

from paddle_rtseg.weights.checkpoints import read_checkpoint, read_file
from paddle_rtseg_runtime.limits import LimitError
from paddle_rtseg.weights.safe_pickle import UnsafeCheckpointError, load_paddle
from paddle_rtseg.weights.torch_reader import load_torch_file


class Call:
    """Pickles as ``func(*args)`` then BUILD ``state``."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def tensor(storage, offset, size, stride):
    return Call(_REBUILD, (storage, offset, tuple(size), tuple(stride), False,
                           collections.OrderedDict()))


def pickled_array(array, shape=None):
    """An ndarray rebuilt inside the pickle (numpy's own reduce), optionally with a crafted shape
    that its data need not back -- the reader's BUILD check or its storage check must catch it."""
    return Call(np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                (1, tuple(array.shape if shape is None else shape), array.dtype, False,
                 array.tobytes()))


def write_pth(path, obj, storages, layout="zip", compress=zipfile.ZIP_STORED):
    """A torch.save file of ``obj`` whose persistent storages are ``{key: array}`` (referenced in
    ``obj`` as ``torchfile._Storage(array, key)``)."""
    if layout == "zip":
        with zipfile.ZipFile(path, "w", compress) as z:
            z.writestr("archive/data.pkl", _pickle_with_fake_torch(obj))
            for key, array in storages.items():
                z.writestr("archive/data/" + key, array.tobytes())
            z.writestr("archive/version", "3\n")
        return path
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump(dict(protocol_version=1001, little_endian=True), f, protocol=2)
        f.write(_pickle_with_fake_torch(obj, _LegacyPickler))
        pickle.dump(list(storages), f, protocol=2)
        for array in storages.values():
            f.write(struct.pack("<q", array.size) + array.tobytes())
    return path


def reference(flat, offset, size, stride):
    """The tensor PyTorch would build, index by index; None if any index leaves ``flat``."""
    if int(np.prod(size)) == 0:
        return np.zeros(size, flat.dtype)
    index = np.full(size, offset, np.int64)
    for axis, st in enumerate(stride):
        shape = [1] * len(size)
        shape[axis] = size[axis]
        index = index + np.arange(size[axis]).reshape(shape) * st
    if index.min() < 0 or index.max() >= flat.size:
        return None
    return flat[index]


def geometries(seed, count):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        ndim = int(rng.integers(0, 4))
        length = int(rng.integers(0, 24))
        size = [int(rng.integers(0, 5)) for _ in range(ndim)]
        stride = [int(rng.integers(-1, 6)) for _ in range(ndim)]
        offset = int(rng.integers(-1, length + 3))
        yield length, offset, size, stride


def _expect(load, flat, offset, size, stride):
    want = reference(flat, offset, size, stride) if min(stride, default=0) >= 0 and offset >= 0 \
        else None
    if want is None:
        with pytest.raises(UnsafeCheckpointError, match="points outside its storage"):
            load()
        return "refused"
    got = load()["state_dict"]["w"]
    assert got.shape == tuple(size) and got.dtype == flat.dtype and np.array_equal(got, want)
    return "loaded"


@pytest.fixture
def no_expansion_limit(monkeypatch):
    monkeypatch.setenv("PADDLE_RTSEG_MAX_TENSOR_EXPANSION", str(10 ** 6))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_generated_geometries_load_exactly_or_are_refused(tmp_path, layout, no_expansion_limit):
    """Random offsets/sizes/strides (negative ones too) over storages of 0..23 elements: each loads
    equal to the index-by-index reference, or is refused; nothing is read outside the storage."""
    outcomes = collections.Counter()
    for i, (length, offset, size, stride) in enumerate(geometries(1 if layout == "zip" else 2, 150)):
        flat = np.arange(1, length + 1, dtype=np.float32)
        obj = {"state_dict": {"w": tensor(_Storage(flat, "0"), offset, size, stride)}}
        path = write_pth(str(tmp_path / "{}.pth".format(i)), obj, {"0": flat}, layout)
        outcomes[_expect(lambda: load_torch_file(path), flat, offset, size, stride)] += 1
    assert outcomes["loaded"] > 30 and outcomes["refused"] > 30, outcomes


def test_storages_built_in_the_pickle_hold_only_their_bytes(tmp_path, no_expansion_limit):
    """A storage array made by the pickle itself: its shape cannot make it look longer than its
    bytes (a (10**8, 0) array has len() 10**8 and no byte: the original out-of-bounds read)."""
    outcomes = collections.Counter()
    for i, (length, offset, size, stride) in enumerate(geometries(3, 120)):
        flat = np.arange(1, length + 1, dtype=np.float32)
        rows = 2 if length % 2 == 0 and length else 1
        for shape in [(length,), (rows, length // rows), (length, 1)][i % 3:i % 3 + 1]:
            storage = pickled_array(flat.reshape(shape))
            path = write_pth(str(tmp_path / "{}.pth".format(i)),
                             {"state_dict": {"w": tensor(storage, offset, size, stride)}}, {})
            outcomes[_expect(lambda: load_torch_file(path), flat, offset, size, stride)] += 1
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 20, outcomes
    for shape in [(10 ** 8, 0), (0, 10 ** 8), (10 ** 4, 10 ** 4)]:
        path = write_pth(str(tmp_path / "crafted.pth"), {"state_dict": {"w": tensor(
            pickled_array(np.zeros(0, np.float32), shape), 0, (1000, 1000), (1000, 1))}}, {})
        with pytest.raises(UnsafeCheckpointError):  # no data behind the shape: refused
            load_torch_file(path)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_checkpoint_cannot_claim_more_than_it_holds(tmp_path, layout):
    one = np.ones(1, np.float32)
    path = write_pth(str(tmp_path / "bomb.pth"), {"state_dict": {"w": tensor(
        _Storage(one, "0"), 0, (20000, 20000), (0, 0))}}, {"0": one}, layout)
    assert os.path.getsize(path) < 1000
    tracemalloc.start()
    try:
        with pytest.raises(LimitError) as err:
            load_torch_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20, peak  # refused before anything of the 1.6 GB was allocated
    message = str(err.value)
    assert "1600000000 bytes" in message and "PADDLE_RTSEG_MAX_TENSOR_EXPANSION" in message


def test_many_tensors_sharing_one_storage_are_bounded_together(tmp_path, monkeypatch):
    storage = np.arange(1000, dtype=np.float32)
    tensors = {"w{}".format(i): tensor(_Storage(storage, "0"), 0, (1000,), (1,)) for i in range(5)}
    path = write_pth(str(tmp_path / "shared.pth"), {"state_dict": tensors}, {"0": storage})
    with pytest.raises(LimitError, match="claim 20000 bytes"):
        load_torch_file(path)  # five full views of one storage: 5x what the file holds
    monkeypatch.setenv("PADDLE_RTSEG_MAX_TENSOR_EXPANSION", "5")
    loaded = load_torch_file(path)["state_dict"]
    assert all(np.array_equal(v, storage) for v in loaded.values())
    monkeypatch.setenv("PADDLE_RTSEG_MAX_TENSOR_EXPANSION", "zero")
    with pytest.raises(LimitError, match="must be a positive integer"):
        load_torch_file(path)


def test_tied_weights_and_expanded_buffers_within_the_limit_load(tmp_path):
    """What real state dicts hold: two names for one tensor (tied weights) and a small stride-0
    buffer next to real weights, read as PyTorch reads them."""
    weight = np.arange(12, dtype=np.float32)
    bias = np.full(1, 7, np.float32)
    obj = {"state_dict": {"a": tensor(_Storage(weight, "0"), 0, (3, 4), (4, 1)),
                          "b": tensor(_Storage(weight, "0"), 0, (4, 3), (1, 4)),
                          "e": tensor(_Storage(bias, "1"), 0, (3,), (0,))}}
    got = load_torch_file(write_pth(str(tmp_path / "ok.pth"), obj, {"0": weight, "1": bias}))
    got = got["state_dict"]
    assert np.array_equal(got["a"], weight.reshape(3, 4))
    assert np.array_equal(got["b"], weight.reshape(3, 4).T)
    assert np.array_equal(got["e"], [7, 7, 7])


def _zip_bomb(path, declared, lie=False):
    """A torch zip whose storage member inflates to ``declared`` bytes of zeros (``lie``: its
    header says 4 bytes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        state = {"state_dict": {"w": tensor(_Storage(np.zeros(1, np.float32), "0"), 0, (1,), (1,))}}
        z.writestr("archive/data.pkl", _pickle_with_fake_torch(state))
        z.writestr("archive/data/0", b"\0" * declared)
    if lie:  # patch both headers' uncompressed size to 4 (the CRC then no longer matches)
        data = bytearray(open(path, "rb").read())
        for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
            pos = data.rfind(sig)
            data[pos + at:pos + at + 4] = struct.pack("<I", 4)
        open(path, "wb").write(bytes(data))
    return path


def test_zip_bombs_are_refused_before_inflating(tmp_path):
    path = _zip_bomb(str(tmp_path / "bomb.pth"), 64 << 20)
    assert os.path.getsize(path) < 200 << 10
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="PADDLE_RTSEG_MAX_ZIP_RATIO") as err:
            load_torch_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    declared = int(re.search(r"inflate to (\d+) bytes", str(err.value)).group(1))
    assert peak < 8 << 20 and declared > 64 << 20, (peak, str(err.value))
    # a member that lies about its size is read only up to what it declares, then fails its CRC
    liar = _zip_bomb(str(tmp_path / "liar.pth"), 64 << 20, lie=True)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="damaged|corrupt|CRC") as err:
            read_file(liar, load_torch_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


class _Claimed:
    """Stands for a storage array in :func:`write_pth`: declares ``size`` elements, holds 2."""

    dtype = np.dtype(np.float32)

    def __init__(self, size):
        self.size = size

    def tobytes(self):
        return np.zeros(2, np.float32).tobytes()


def test_length_fields_cannot_allocate_what_the_file_lacks(tmp_path):
    """Pickle opcodes and legacy storage headers that declare 2**30..2**62 bytes in a small file:
    refused as truncated, nothing of that size allocated."""
    cases = {"BINBYTES8": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"ab",
             "FRAME": b"\x80\x04\x95" + struct.pack("<Q", 1 << 62) + b"N",
             "BINUNICODE8": b"\x80\x04\x8d" + struct.pack("<Q", 1 << 40) + b"ab",
             "LONG4": b"\x80\x02\x8b" + struct.pack("<i", 1 << 30) + b"ab"}
    paths = []
    for name, data in cases.items():
        paths.append((str(tmp_path / (name + ".pdparams")), "truncated"))
        open(paths[-1][0], "wb").write(data)
    for numel in (1 << 40, 1 << 61):  # the pickle and the storage header agree; the file is short
        claimed = _Claimed(numel)
        paths.append((write_pth(str(tmp_path / "{}.pth".format(numel)), {"state_dict": {
            "w": tensor(_Storage(claimed, "0"), 0, (2,), (1,))}}, {"0": claimed}, "legacy"),
            "declares {} bytes but the file has 8 left".format(4 * numel)))
    for path, fragment in paths:
        tracemalloc.start()
        try:
            with pytest.raises(ValueError) as err:
                read_checkpoint(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, (path, peak)
        assert fragment in str(err.value), (path, str(err.value))


def _valid_files(tmp_path):
    rng = np.random.default_rng(0)
    state = {"a.weight": rng.random((3, 4), dtype=np.float32), "a.bias": np.arange(3.0)}
    pd = str(tmp_path / "m.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, pd)
    return {"pdparams": pd,
            "zip": save_torch_state_dict(state, str(tmp_path / "z.pth")),
            "legacy": save_torch_legacy(state, str(tmp_path / "l.pth"))}


def test_every_truncation_gives_its_reason(tmp_path):
    """Each prefix of a valid file is refused saying why -- never "Cannot read checkpoint X: ."."""
    reasons = collections.Counter()
    for kind, path in _valid_files(tmp_path).items():
        data = open(path, "rb").read()
        cut = str(tmp_path / ("cut-" + os.path.basename(path)))
        for n in sorted(set(np.linspace(0, len(data) - 1, 40).astype(int))):
            open(cut, "wb").write(data[:n])
            with pytest.raises(ValueError) as err:
                read_checkpoint(cut)
            message = str(err.value)
            assert len(message) < 1000, (kind, n, message)
            if "Cannot read checkpoint" in message:
                reason = message.split(cut + ": ", 1)[1].split(". Expected")[0]
                assert len(reason) > 10, (kind, n, message)
                reasons[kind, reason.split(" ")[0]] += 1
            elif "Refusing to load" in message:  # cut inside a GLOBAL: names a partial global
                assert "its pickle asks for" in message, (kind, n, message)
                reasons[kind, "refused"] += 1
            else:  # the prefix unpickled to something else (the legacy magic number, an int)
                assert "not a state dict" in message, (kind, n, message)
                reasons[kind, "not a state dict"] += 1
    assert sum(reasons.values()) > 90, reasons
    assert sum(reasons.values()) > 90, reasons


def test_messages_quote_crafted_values_briefly(tmp_path):
    """A refusal quoting a crafted value (a 1 MB persistent id, a list nested 100000 deep) stays
    short, and quoting the nested one does not recurse."""
    n = 100000
    huge = b"X" + struct.pack("<I", 1 << 20) + b"x" * (1 << 20)
    deep = b"]" * n + b"a" * (n - 1)
    for value in (huge, deep):
        data = (b"\x80\x02}X\x01\x00\x00\x00wX\x07\x00\x00\x00storage" + value
                + b"\x86Qs.")
        path = str(tmp_path / "pid.pth")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", data)
        with pytest.raises(UnsafeCheckpointError, match="unknown persistent id") as err:
            read_checkpoint(path)
        assert len(str(err.value)) < 600, len(str(err.value))


def test_cli_refuses_a_crafted_storage_in_one_paragraph(tmp_path, tiny_rtformer_config):
    """val --model_path with the out-of-bounds storage of the report: exit 2, one line."""
    path = write_pth(str(tmp_path / "oob.pth"), {"state_dict": {"w": tensor(
        pickled_array(np.zeros(0, np.float32), (10 ** 8, 0)), 0, (1000, 1000), (1000, 1))}}, {})
    out = run_module("paddle_rtseg.val", "--config", tiny_rtformer_config, "--model_path", path,
                     cwd=tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "points outside its storage" in errors[0], out.stderr[-2000:]


def test_zlib_inflation_of_the_pickle_is_bounded_too(tmp_path):
    """data.pkl itself compressed 1000:1 (the storages are stored): refused by the ratio limit."""
    path = str(tmp_path / "pkl.pth")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02N" + b"0" * (32 << 20) + b".")
    assert os.path.getsize(path) < (32 << 20) // 500
    with pytest.raises(LimitError, match="inflate to"):
        load_torch_file(path)
    assert zlib  # (deflate is what zipfile uses)


def test_a_file_that_cannot_be_read_is_one_paragraph():
    """``/proc/self/mem`` is a file whose first read fails (EIO): the format sniffing that reads
    its header gives the same paragraph as every other unreadable checkpoint (it was an OSError
    traceback)."""
    from paddle_rtseg.weights.checkpoints import read_checkpoint
    with pytest.raises(ValueError, match="Cannot read checkpoint /proc/self/mem: .*error"):
        read_checkpoint("/proc/self/mem")
