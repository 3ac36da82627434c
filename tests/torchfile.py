"""Write ``torch.save``-format checkpoints without PyTorch (test helper).

Produces the layouts PyTorch writes. Zip (>= 1.6): ``archive/data.pkl`` whose pickle rebuilds tensors
with ``torch._utils._rebuild_tensor_v2`` from persistent storages ``archive/data/<key>``, plus
``archive/version``. Legacy (``_use_new_zipfile_serialization=False``): the pickles magic number,
protocol 1001, system info, the object, the storage keys, then per storage an int64 element count
and its bytes. The state dict is an ``OrderedDict`` carrying ``_metadata`` as ``state_dict()``'s
does. Used to test :mod:`paddle_rtseg.weights.torch_reader` and the checkpoint converters.
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage"}


class _Tensor:
    def __init__(self, array, key):
        self.array, self.key = array, key

    def __reduce__(self):
        a = self.array
        stride = tuple(s // a.itemsize for s in a.strides)
        storage = _Storage(a, self.key)
        return (_REBUILD, (storage, 0, a.shape, stride, False, collections.OrderedDict()))


class _Storage:
    def __init__(self, array, key):
        self.array, self.key = array, key


def _fake_torch_modules():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only for pickling")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGE_NAMES.values():
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


_MODULES = _fake_torch_modules()
_REBUILD = _MODULES["torch._utils"]._rebuild_tensor_v2


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class _Pickler(pickle.Pickler):
    legacy = False

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            storage_type = getattr(_MODULES["torch"], _STORAGE_NAMES[obj.array.dtype])
            pid = ("storage", storage_type, obj.key, "cpu", obj.array.size)
            return pid + (None,) if self.legacy else pid
        return None


class _LegacyPickler(_Pickler):
    legacy = True


def _pickle_with_fake_torch(obj, pickler=_Pickler):
    saved = {k: sys.modules.get(k) for k in _MODULES}
    sys.modules.update(_MODULES)
    try:
        buf = io.BytesIO()
        pickler(buf, protocol=2).dump(obj)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return buf.getvalue()


def _tensors(state, wrap, extra):
    tensors = collections.OrderedDict()
    tensors._metadata = collections.OrderedDict([("", {"version": 1})])  # as state_dict() sets
    storages = {}
    for i, (name, value) in enumerate(state.items()):
        array = np.array(value, order="C")  # (ascontiguousarray would make 0-D arrays 1-D)
        tensors[name] = _Tensor(array, str(i))
        storages[str(i)] = array
    return (tensors if wrap is None else {wrap: tensors, **(extra or {})}), storages


def save_torch_legacy(state, path, wrap="state_dict", extra=None, payload=None):
    """Save ``{name: numpy array}`` in the legacy (pre-1.6) ``torch.save`` layout. ``payload``
    (an object pickled in place of the system info) makes a hostile file for tests."""
    obj, storages = _tensors(state, wrap, extra)
    sys_info = dict(protocol_version=1001, little_endian=True,
                    type_sizes=dict(short=2, int=4, long=4))
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        f.write(pickle.dumps(payload if payload is not None else sys_info, protocol=2))
        f.write(_pickle_with_fake_torch(obj, _LegacyPickler))
        pickle.dump(list(storages), f, protocol=2)
        for array in storages.values():
            f.write(struct.pack("<q", array.size))
            f.write(array.tobytes())
    return path


def save_torch_state_dict(state, path, wrap="state_dict", extra=None):
    """Save ``{name: numpy array}`` as PyTorch would, optionally under ``{wrap: state}``."""
    obj, storages = _tensors(state, wrap, extra)
    data = _pickle_with_fake_torch(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
        for key, array in storages.items():
            z.writestr("archive/data/" + key, array.tobytes())
        z.writestr("archive/version", "3\n")
    return path


def save_malicious(path, command="echo pwned > {marker}", marker="/tmp/pwned"):
    """A torch-layout zip whose pickle would run a shell command when unpickled naively."""

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (command.format(marker=marker),))

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": Evil()}, protocol=2))
        z.writestr("archive/version", "3\n")
    return path
