"""Read PyTorch checkpoints (``torch.save``) without PyTorch and without running their code.

Both layouts ``torch.save`` has written are read, their pickles through
:class:`paddle_rtseg.safe_pickle.SafeUnpickler` (anything but tensor/storage rebuilding is refused with
:class:`UnsafeCheckpointError` before it runs):

* zip (PyTorch >= 1.6): ``<archive>/data.pkl`` rebuilds tensors from persistent ids
  ``('storage', type, key, location, numel)``; each storage is the raw file ``<archive>/data/<key>``;
* legacy (older PyTorch, or ``_use_new_zipfile_serialization=False``): consecutive pickles -- the
  magic number, the protocol version, system info, the object (persistent ids
  ``('storage', type, key, location, numel, view)``), the list of storage keys -- then each storage
  as an int64 element count followed by its raw bytes.
"""
import collections
import struct
import zipfile

import numpy as np

from . import safe_pickle
from .safe_pickle import TorchStorageType, TorchTensor, UnsafeCheckpointError  # noqa: F401


class _Storage:
    """A storage named by a persistent id; ``array`` is set once its bytes are read."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


def _storage_dtype(storage_type, path):
    if not isinstance(storage_type, TorchStorageType):
        raise UnsafeCheckpointError("Refusing to load {}: a persistent id names storage type {!r}"
                                    .format(path, storage_type))
    return storage_type.dtype


def _to_array(raw, dtype):
    if isinstance(dtype, str):  # bfloat16: the upper half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype)


def _itemsize(dtype):
    return 2 if isinstance(dtype, str) else np.dtype(dtype).itemsize


def _tensor(ref, path):
    storage = ref.storage
    if not isinstance(storage, (_Storage, np.ndarray)):
        raise UnsafeCheckpointError("Refusing to load {}: a tensor is rebuilt from a {}".format(
            path, type(storage).__name__))
    if isinstance(storage, _Storage):
        storage = storage.array
    offset, size, stride = ref.offset, ref.size, ref.stride
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else offset - 1
    if offset < 0 or any(n < 0 for n in size) or any(st < 0 for st in stride) or \
            len(stride) != len(size) or last >= len(storage):
        raise UnsafeCheckpointError("A tensor in {} points outside its storage (offset {}, size {}, "
                                    "stride {}, storage {}); the file is corrupt or crafted.".format(
                                        path, offset, size, stride, len(storage)))
    if not size:
        return np.array(storage[offset])
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride))
    return np.ascontiguousarray(view)


def _materialize(obj, path):
    """Replace every :class:`TorchTensor` record in ``obj`` by its numpy array."""
    if isinstance(obj, TorchTensor):
        return _tensor(obj, path)
    if type(obj) in (dict, collections.OrderedDict):
        for key in list(obj):
            obj[key] = _materialize(obj[key], path)
    elif type(obj) is list:
        obj[:] = [_materialize(v, path) for v in obj]
    elif type(obj) is tuple:
        return tuple(_materialize(v, path) for v in obj)
    return obj


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError("{} has {} data.pkl entries; expected one (torch.save layout)".format(
                path, len(pickles)))
        prefix = pickles[0][:-len("data.pkl")]
        storages = {}

        def persistent_load(pid):
            if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
                raise UnsafeCheckpointError("unknown persistent id {!r}".format(pid))
            dtype, key = _storage_dtype(pid[1], path), str(pid[2])
            if key not in storages:
                raw = archive.read("{}data/{}".format(prefix, key))
                storages[key] = _to_array(raw, dtype)
            return storages[key]

        with archive.open(pickles[0]) as f:
            obj = safe_pickle.load(f, path, "torch", persistent_load)
    return _materialize(obj, path)


def _load_legacy(path):
    with open(path, "rb") as f:
        magic = safe_pickle.load(f, path)
        if type(magic) is not int or magic != safe_pickle.TORCH_MAGIC:
            raise ValueError("{} is not a torch.save file".format(path))
        protocol = safe_pickle.load(f, path)
        safe_pickle.load(f, path)  # sys_info: byte order and type sizes
        if type(protocol) is not int or protocol != 1001:
            raise ValueError("{} uses torch.save protocol {}; only 1001 is known".format(
                path, protocol))
        storages = {}

        def persistent_load(pid):
            if type(pid) is not tuple or len(pid) != 6 or pid[0] != "storage":
                raise UnsafeCheckpointError("unknown persistent id {!r}".format(pid))
            _, storage_type, key, _, numel, view = pid
            if not isinstance(numel, int) or numel < 0:
                raise ValueError("{}: storage {} has {!r} elements".format(path, key, numel))
            key = str(key)
            if key not in storages:
                storages[key] = _Storage(_storage_dtype(storage_type, path), numel)
            if view is not None:
                raise ValueError("{} holds storage views (PyTorch < 0.4); re-save it with a recent "
                                 "PyTorch: torch.save(torch.load(p), p)".format(path))
            return storages[key]

        obj = safe_pickle.load(f, path, "torch", persistent_load)
        keys = safe_pickle.load(f, path)
        if type(keys) is not list or sorted(map(str, keys)) != sorted(storages):
            raise ValueError("{}: the storage list does not match the tensors".format(path))
        for key in map(str, keys):
            storage = storages[key]
            count, = struct.unpack("<q", f.read(8))
            if count != storage.numel:
                raise ValueError("{}: storage {} holds {} elements, its tensors say {}; the file is "
                                 "truncated or corrupt".format(path, key, count, storage.numel))
            size = count * _itemsize(storage.dtype)
            raw = f.read(size)
            if len(raw) != size:
                raise ValueError("{}: storage {} is truncated or corrupt".format(path, key))
            storage.array = _to_array(raw, storage.dtype)
    return _materialize(obj, path)


def is_torch_file(path):
    """True for both ``torch.save`` layouts (zip archive, or legacy magic-number pickle)."""
    return zipfile.is_zipfile(path) or safe_pickle.is_torch_legacy(path)


def load_torch_file(path):
    """Return the object saved by ``torch.save`` at ``path``, tensors as numpy arrays."""
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    if safe_pickle.is_torch_legacy(path):
        return _load_legacy(path)
    raise ValueError("{} is not a torch.save file (neither a zip archive nor a legacy "
                     "pickle)".format(path))


def load_torch_state_dict(path):
    """Flat ``{name: numpy array}`` from a PyTorch checkpoint, unwrapping ``state_dict_ema`` (the
    EMA weights, preferred as the authors' loaders do), ``state_dict``, ``model``."""
    obj = load_torch_file(path)
    for key in ("state_dict_ema", "state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError("{} holds a {}, not a state dict".format(path, type(obj).__name__))
    return collections.OrderedDict(
        (k, v) for k, v in obj.items() if isinstance(v, np.ndarray))
