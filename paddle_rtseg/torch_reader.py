"""Read PyTorch checkpoints (``torch.save`` zip files) without PyTorch and without running their code.

A ``.pth`` is a zip holding ``data.pkl`` (a pickle that rebuilds tensors from storages) and one raw
file per storage. Unpickling an arbitrary file can execute any Python callable it names, so this
reader's unpickler resolves only an allow-list of globals (tensor/parameter rebuilders, storage
types, ``OrderedDict``, plain numpy scalars/arrays); anything else is refused with
:class:`UnsafeCheckpointError` before it runs.
"""
import collections
import pickle
import zipfile

import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {  # torch.float32 etc., pickled as globals of module "torch" by newer versions
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": "bfloat16", "int64": np.int64,
    "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_,
}
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint's pickle names a callable outside the allow-list (possibly malicious)."""


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *unused):
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else offset - 1
    if offset < 0 or any(n < 0 for n in size) or any(st < 0 for st in stride) or \
            len(stride) != len(size) or last >= len(storage):
        raise UnsafeCheckpointError("A tensor in the checkpoint points outside its storage "
                                    "(offset {}, size {}, stride {}, storage {}); the file is corrupt "
                                    "or crafted.".format(offset, size, stride, len(storage)))
    if not size:
        return np.array(storage[offset])
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * itemsize for s in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *unused):
    return data


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, path):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._storages = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(np.uint8)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            "Refusing to load {}: its pickle asks to call {}.{}, which is not a tensor or container "
            "type. A checkpoint made by torch.save(model.state_dict()) never needs that; the file "
            "may be malicious. If you trust it, re-save only its state_dict with PyTorch."
            .format(self._path, module, name))

    def persistent_load(self, pid):
        kind, storage_type, key = pid[:3]
        if kind != "storage":
            raise UnsafeCheckpointError("Unknown persistent id {!r} in {}".format(kind, self._path))
        if key not in self._storages:
            raw = self._archive.read("{}data/{}".format(self._prefix, key))
            dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else storage_type
            if isinstance(dtype, str):  # bfloat16: the upper half of a float32
                array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, dtype)
            self._storages[key] = array
        return self._storages[key]


def load_torch_file(path):
    """Return the object saved by ``torch.save`` at ``path``, tensors as numpy arrays."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            "{} is not a PyTorch zip checkpoint (torch >= 1.6 format). Legacy (pre-1.6) files are "
            "not read; re-save it with a recent PyTorch: torch.save(torch.load(p), p)".format(path))
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError("{} has {} data.pkl entries; expected one (torch.save layout)".format(
                path, len(pickles)))
        prefix = pickles[0][:-len("data.pkl")]
        with archive.open(pickles[0]) as f:
            return _SafeUnpickler(f, archive, prefix, path).load()


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
