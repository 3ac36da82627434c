"""The one unpickler for every checkpoint this package reads: it builds data, never runs code.

A pickle is a program: its ``GLOBAL`` opcodes import any callable and ``REDUCE``/``BUILD``/``NEWOBJ``
call it, so ``pickle.load`` (and ``paddle.load``, which is ``pickle.load``) runs whatever a crafted
``.pdparams``/``.pdopt``/``.pth`` names. This unpickler interprets the opcodes itself (Python's own
pure-Python implementation, restricted):

* only data opcodes are executed; ``INST``/``OBJ``/``NEWOBJ``/``NEWOBJ_EX``, the ``copyreg``
  extension opcodes ``EXT1/2/4`` and the out-of-band buffer opcodes are refused;
* a global resolves only if it is in :data:`ALLOWED` -- what ``paddle.save`` (Paddle 2.x/3.x, any
  protocol) and ``torch.save`` (zip and legacy layouts) write for state dicts: numpy array and scalar
  reconstruction, numeric dtypes, ``OrderedDict``, ``tuple``, ``_codecs.encode`` and ``bytes`` (how
  protocol 2 writes bytes) and, for PyTorch files only, the tensor/storage rebuilders, which are
  replaced by inert records;
* ``REDUCE`` calls only those admitted callables, each of which checks its arguments (no ``object``
  dtypes, no array subclasses); ``BUILD`` sets the state only of arrays and dtypes this unpickler
  made, after checking it (numeric data of the declared size), and of nothing else; items are added
  only to real lists, dicts and sets.

Anything else raises :class:`UnsafeCheckpointError` naming what was asked for, before it is called.
"""
import _compat_pickle
import collections
import io
import math
import os
import pickle
import pickletools
import reprlib

import numpy as np

TORCH_MAGIC = 0x1950a86a20f9469cfc6c  # the first pickle of a legacy (pre-1.6) torch.save file


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle asks for something outside the allow-list (possibly malicious)."""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def short_repr(obj):
    """``repr(obj)`` cut to a few dozen characters and three levels (a crafted value can be huge
    or nested a million deep; an error message quotes only its start)."""
    try:
        text = _REPR.repr(obj)
    except Exception:  # a repr that fails (or recurses): name the type only
        text = "<{}>".format(type(obj).__name__)
    return text if len(text) <= 200 else text[:200] + "..."


class BoundedReader:
    """A binary file whose ``read(n)`` never asks for more than the bytes left in it: a pickle's
    length fields (``BINBYTES8``, ``FRAME``...) can claim 2**63 bytes, and ``BufferedReader.read(n)``
    allocates ``n`` bytes before reading."""

    def __init__(self, file):
        self._file = file
        self._end = os.fstat(file.fileno()).st_size

    def left(self):
        return max(self._end - self._file.tell(), 0)

    def read(self, n=-1):
        return self._file.read(self.left() if n is None or n < 0 else min(n, self.left()))

    def readline(self, limit=-1):
        return self._file.readline(limit)

    def readinto(self, buffer):
        return self._file.readinto(buffer)

    def peek(self, n=1):
        return self._file.peek(n)


_NUMERIC_KINDS = "biufc"  # bool, signed/unsigned int, float, complex: no objects, strings, records


def _check_dtype(dtype, what):
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or dtype.hasobject \
            or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafeCheckpointError("{} has dtype {}; only numeric arrays are admitted "
                                    "(numpy 'object' arrays can hold arbitrary objects)".format(
                                        what, dtype))
    return dtype


def _dtype(code, align=False, copy=True):
    """``numpy.dtype(code, align, copy)`` for numeric type codes only."""
    if not isinstance(code, str) or len(code) > 4:
        raise UnsafeCheckpointError("numpy.dtype({}) is not a numeric type code".format(
            short_repr(code)))
    try:
        dtype = np.dtype(code, bool(align), True)  # a copy: BUILD sets its byte order
    except TypeError:
        raise UnsafeCheckpointError("numpy.dtype({!r}) is not a numeric type code".format(code))
    return _check_dtype(dtype, "numpy.dtype({!r})".format(code))


def _reconstruct(subtype, shape, typecode):
    """``numpy.core.multiarray._reconstruct`` for plain ``ndarray`` only; BUILD fills it."""
    if subtype is not np.ndarray:
        raise UnsafeCheckpointError("numpy _reconstruct of {}: only numpy.ndarray is admitted"
                                    .format(short_repr(subtype)))
    return np.ndarray((0,), np.uint8)


def _scalar(dtype, data):
    """``numpy.core.multiarray.scalar(dtype, bytes)`` for numeric dtypes."""
    _check_dtype(dtype, "numpy scalar")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafeCheckpointError("numpy scalar of {} with a {} of data".format(
            dtype, type(data).__name__))
    return np.frombuffer(data, dtype)[0]


def _encode(text, encoding="latin1"):
    """``_codecs.encode(str, 'latin1')``: how protocol-2 pickles write ``bytes``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("_codecs.encode({}, {})".format(type(text).__name__,
                                                                    short_repr(encoding)))
    return text.encode("latin1")


def _bytes(*args):
    """``bytes()``: how protocol-2 pickles write empty ``bytes`` (an empty array's data)."""
    if args:
        raise UnsafeCheckpointError("bytes() with arguments")
    return b""


def _tuple(items=()):
    """``tuple(...)``: how ``paddle.save`` pickles a Tensor outside a state dict, (name, ndarray)."""
    if type(items) not in (list, tuple):
        raise UnsafeCheckpointError("tuple() of a {}".format(type(items).__name__))
    return tuple(items)


def _ordered_dict(*args):
    """``OrderedDict()``: pickles always build it empty, then add the items (SETITEMS)."""
    if args:
        raise UnsafeCheckpointError("collections.OrderedDict() with arguments")
    return collections.OrderedDict()


class TorchStorageType:
    """``torch.FloatStorage`` etc. in a PyTorch pickle: only its element dtype is kept."""

    def __init__(self, dtype):
        self.dtype = dtype


class TorchTensor:
    """What ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` asked for;
    :mod:`paddle_rtseg.weights.torch_reader` turns it into an array once the storages are read."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(offset, int) or type(size) not in (tuple, list) or \
                type(stride) not in (tuple, list) or \
                not all(isinstance(n, int) for n in list(size) + list(stride)):
            raise UnsafeCheckpointError("torch tensor with offset {}, size {}, stride {}".format(
                short_repr(offset), short_repr(size), short_repr(stride)))
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return TorchTensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


_STORAGES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": "bfloat16", "int64": np.int64,
    "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_,
}

_COMMON = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,  # only as _reconstruct's first argument
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "tuple"): _tuple,
    ("builtins", "bytes"): _bytes,
}
_TORCH = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): TorchStorageType(np.uint8),
}
_TORCH.update({("torch", name): TorchStorageType(dtype) for name, dtype in _STORAGES.items()})
_TORCH.update({("torch", name): TorchStorageType(dtype) for name, dtype in _TORCH_DTYPES.items()})
#: Every global a checkpoint pickle may name, per format ("paddle": .pdparams/.pdopt; "torch": .pth).
ALLOWED = {"paddle": _COMMON, "torch": {**_COMMON, **_TORCH}}
_CALLABLE = {_reconstruct, _scalar, _dtype, _encode, _bytes, _ordered_dict, _tuple, _rebuild_tensor,
             _rebuild_parameter}

_DATA_OPCODES = (
    "PROTO FRAME STOP MARK POP POP_MARK DUP PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET "
    "NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING "
    "BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINBYTES "
    "SHORT_BINBYTES BINBYTES8 EMPTY_LIST LIST EMPTY_DICT DICT EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 "
    "TUPLE3 EMPTY_SET FROZENSET GLOBAL STACK_GLOBAL PERSID BINPERSID").split()
_OPCODE_NAMES = {op.code.encode("latin1")[0]: op.name for op in pickletools.opcodes}


class _Dispatch(dict):
    def __missing__(self, code):
        name = _OPCODE_NAMES.get(code)
        if name is None:
            raise pickle.UnpicklingError("invalid pickle opcode {!r}".format(bytes([code])))
        raise UnsafeCheckpointError("its pickle uses the opcode {}, which builds or calls objects "
                                    "a checkpoint never contains".format(name))


class SafeUnpickler(pickle._Unpickler):
    """Restricted unpickler (see the module docstring). ``fmt`` selects the allow-list;
    ``persistent_load`` resolves persistent ids (PyTorch storages), none are admitted without it."""

    dispatch = _Dispatch({code: pickle._Unpickler.dispatch[code] for code, name in
                          _OPCODE_NAMES.items() if name in _DATA_OPCODES})

    def __init__(self, file, fmt="paddle", persistent_load=None):
        super().__init__(file, encoding="latin1")
        self._allowed = ALLOWED[fmt]
        self._persistent = persistent_load
        self._built = {}  # id -> array/dtype made here whose state BUILD may set, once

    def find_class(self, module, name):
        if self.proto < 3:  # Python 2 spellings (__builtin__, copy_reg), as pickle itself maps them
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        found = self._allowed.get((module, name))
        if found is None:
            raise UnsafeCheckpointError("its pickle asks for {}.{}, which no checkpoint needs"
                                        .format(str(module)[:100], str(name)[:100]))
        return found

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafeCheckpointError("its pickle holds a persistent id {}; this format has "
                                        "none".format(short_repr(pid)))
        return self._persistent(pid)

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in _CALLABLE) or type(args) is not tuple:
            raise UnsafeCheckpointError("its pickle asks to call {}".format(short_repr(func)))
        result = func(*args)
        if func is _reconstruct or func is _dtype:
            self._built[id(result)] = result
        self.stack[-1] = result

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is collections.OrderedDict and (state is None or type(state) is dict):
            return  # torch's state_dict()._metadata: not needed, not set
        if self._built.pop(id(inst), None) is not inst:
            raise UnsafeCheckpointError("its pickle asks to set the state of a {}".format(
                type(inst).__name__))
        if type(inst) is np.ndarray:
            state = _check_array_state(state)
        else:
            _check_dtype_state(state)
        inst.__setstate__(state)
        if type(inst) is not np.ndarray:
            _check_dtype(inst, "a dtype after its state was set")

    def load_stack_global(self):
        name = self.stack.pop()
        module = self.stack.pop()
        if type(name) is not str or type(module) is not str:
            raise UnsafeCheckpointError("its pickle asks for a global named by a {} and a {} "
                                        "(STACK_GLOBAL needs two strings)".format(
                                            type(module).__name__, type(name).__name__))
        self.append(self.find_class(module, name))

    def load_append(self):
        value = self.stack.pop()
        _container(self.stack[-1], list).append(value)

    def load_appends(self):
        items = self.pop_mark()
        _container(self.stack[-1], list).extend(items)

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        _container(self.stack[-1], dict)[key] = value

    def load_setitems(self):
        items = self.pop_mark()
        target = _container(self.stack[-1], dict)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_additems(self):
        items = self.pop_mark()
        _container(self.stack[-1], set).update(items)

    for _name, _method in (("REDUCE", load_reduce), ("BUILD", load_build),
                           ("STACK_GLOBAL", load_stack_global),
                           ("APPEND", load_append), ("APPENDS", load_appends),
                           ("SETITEM", load_setitem), ("SETITEMS", load_setitems),
                           ("ADDITEMS", load_additems)):
        dispatch[getattr(pickle, _name)[0]] = _method
    del _name, _method


def _container(obj, kind):
    if type(obj) is not kind and not (kind is dict and type(obj) is collections.OrderedDict):
        raise UnsafeCheckpointError("its pickle adds items to a {}".format(type(obj).__name__))
    return obj


def _check_array_state(state):
    """``ndarray.__setstate__((1, shape, dtype, is_fortran, raw_bytes))`` with consistent sizes."""
    if type(state) is not tuple or len(state) != 5 or state[0] != 1:
        raise UnsafeCheckpointError("array state of type {}".format(type(state).__name__))
    _, shape, dtype, fortran, data = state
    if type(data) is str:  # written by Python 2
        data = data.encode("latin1")
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape) \
            or type(fortran) is not bool or type(data) is not bytes:
        raise UnsafeCheckpointError("array state with shape {}".format(short_repr(shape)))
    _check_dtype(dtype, "an array")
    if len(data) != math.prod(shape) * dtype.itemsize:  # exact integers: no overflow
        raise UnsafeCheckpointError("array of shape {} and dtype {} with {} bytes of data".format(
            short_repr(shape), dtype, len(data)))
    return (1, shape, dtype, fortran, data)


def _check_dtype_state(state):
    """The state numpy pickles for a numeric dtype: (3, byteorder, None, None, None, -1, -1, 0)."""
    if type(state) is not tuple or len(state) != 8 or state[0] != 3 \
            or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None) \
            or state[5:] != (-1, -1, 0):
        raise UnsafeCheckpointError("dtype state {}".format(short_repr(state)))


def load(file, path, fmt="paddle", persistent_load=None):
    """Unpickle one object from the open binary ``file`` (named ``path`` in errors)."""
    try:
        return SafeUnpickler(file, fmt, persistent_load).load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            "Refusing to load {}: {}. A checkpoint written by paddle.save or torch.save of a state "
            "dict never needs that; the file may be malicious, and nothing it asked for was run."
            .format(path, e)) from None


def _unpack_big_params(obj):
    """Join the slices ``paddle.save`` (protocol 2/3) splits parameters over 1 GB into."""
    info = obj.pop("UnpackBigParamInfor@@", None)  # (sic), Paddle's key
    if isinstance(info, dict):
        for key, value in info.items():
            parts = value.get("slices") if isinstance(value, dict) else None
            shape = value.get("OriginShape") if isinstance(value, dict) else None
            if type(parts) not in (list, tuple) or not parts or \
                    not all(type(p) is str and isinstance(obj.get(p), np.ndarray) for p in parts) \
                    or len(set(parts)) != len(parts) or \
                    type(shape) not in (list, tuple) or not all(type(n) is int for n in shape):
                raise ValueError("its entry for the split parameter {} is malformed (slices {}, "
                                 "shape {})".format(short_repr(key), short_repr(parts),
                                                    short_repr(shape)))
            slices = [obj.pop(part) for part in parts]
            obj[key] = np.concatenate([a.reshape(-1) for a in slices]).reshape(shape)
    return obj


def _map_tree(obj, match, convert):
    if match(obj):
        return convert(obj)
    if type(obj) in (dict, collections.OrderedDict):
        for key in list(obj):
            obj[key] = _map_tree(obj[key], match, convert)
    elif type(obj) is list:
        obj[:] = [_map_tree(v, match, convert) for v in obj]
    elif type(obj) is tuple:
        return tuple(_map_tree(v, match, convert) for v in obj)
    return obj


def _contains(obj, match):
    if match(obj):
        return True
    if type(obj) in (dict, collections.OrderedDict):
        return any(_contains(v, match) for v in obj.values())
    if type(obj) in (list, tuple):
        return any(_contains(v, match) for v in obj)
    return False


def _named_tensor(obj):  # how paddle.save writes a Tensor outside a state dict
    return type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], str) \
        and isinstance(obj[1], np.ndarray)


def load_paddle(path, return_numpy=True):
    """What ``paddle.load(path, return_numpy=...)`` returns for a ``paddle.save`` pickle
    (``.pdparams``, ``.pdopt``), read with :class:`SafeUnpickler`: Tensors (named as
    ``paddle.load`` names them) or numpy arrays. Raises :class:`UnsafeCheckpointError`."""
    with open(path, "rb") as f:
        obj = load(BoundedReader(f), path)
    to_tensor = _tensor_maker(return_numpy)
    if isinstance(obj, dict):
        obj = _unpack_big_params(obj)
        table = obj.pop("StructuredToParameterName@@", None)
        if isinstance(table, dict):
            for key, name in table.items():
                if isinstance(obj.get(key), np.ndarray):
                    obj[key] = to_tensor(obj[key], name)
            return obj
    if _contains(obj, _named_tensor):
        return _map_tree(obj, _named_tensor, lambda t: to_tensor(t[1], t[0]))
    return _map_tree(obj, lambda v: isinstance(v, np.ndarray), lambda a: to_tensor(a, None))


def _tensor_maker(return_numpy):
    if return_numpy:
        return lambda array, name: array

    import paddle

    def to_tensor(array, name):
        tensor = paddle.to_tensor(array)
        if name:
            tensor.name = name
        return tensor

    return to_tensor


def is_torch_legacy(path):
    """True if ``path`` starts with the pickled magic number of a legacy ``torch.save`` file."""
    with open(path, "rb") as f:
        head = f.read(32)
    return b"\x8a\x0a" + TORCH_MAGIC.to_bytes(10, "little") in head

