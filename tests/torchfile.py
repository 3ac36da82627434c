"""Write ``torch.save``-format zip checkpoints without PyTorch (test helper).

Produces the same layout PyTorch >= 1.6 writes: ``archive/data.pkl`` whose pickle rebuilds tensors
with ``torch._utils._rebuild_tensor_v2`` from persistent storages ``archive/data/<key>``, plus
``archive/version``. Used to test :mod:`paddle_rtseg.torch_reader` and the checkpoint converters.
"""
import collections
import io
import pickle
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


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            storage_type = getattr(_MODULES["torch"], _STORAGE_NAMES[obj.array.dtype])
            return ("storage", storage_type, obj.key, "cpu", obj.array.size)
        return None


def save_torch_state_dict(state, path, wrap="state_dict", extra=None):
    """Save ``{name: numpy array}`` as PyTorch would, optionally under ``{wrap: state}``."""
    tensors = collections.OrderedDict()
    storages = {}
    for i, (name, value) in enumerate(state.items()):
        array = np.array(value, order="C")  # (ascontiguousarray would make 0-D arrays 1-D)
        tensors[name] = _Tensor(array, str(i))
        storages[str(i)] = array
    obj = tensors if wrap is None else {wrap: tensors, **(extra or {})}
    saved = {k: sys.modules.get(k) for k in _MODULES}
    sys.modules.update(_MODULES)
    try:
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(obj)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
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
