"""Read PyTorch checkpoints (``torch.save``) without PyTorch and without running their code.

Both layouts ``torch.save`` has written are read, their pickles through
:class:`paddle_rtseg.weights.safe_pickle.SafeUnpickler` (anything but tensor/storage rebuilding is refused with
:class:`UnsafeCheckpointError` before it runs):

* zip (PyTorch >= 1.6): ``<archive>/data.pkl`` rebuilds tensors from persistent ids
  ``('storage', type, key, location, numel)``; each storage is the raw file ``<archive>/data/<key>``;
* legacy (older PyTorch, or ``_use_new_zipfile_serialization=False``): consecutive pickles -- the
  magic number, the protocol version, system info, the object (persistent ids
  ``('storage', type, key, location, numel, view)``), the list of storage keys -- then each storage
  as an int64 element count followed by its raw bytes.
"""
import collections
import io
import os
import struct
import zipfile

import numpy as np

from paddle_rtseg.weights import safe_pickle
from paddle_rtseg_runtime import limits
from paddle_rtseg.weights.safe_pickle import TorchStorageType, TorchTensor, UnsafeCheckpointError  # noqa: F401


class _Storage:
    """A storage named by a persistent id; ``array`` is set once its bytes are read."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


def _storage_dtype(storage_type, path):
    if not isinstance(storage_type, TorchStorageType):
        raise UnsafeCheckpointError("Refusing to load {}: a persistent id names storage type {}"
                                    .format(path, safe_pickle.short_repr(storage_type)))
    return storage_type.dtype


def _to_array(raw, dtype, path, key):
    itemsize = _itemsize(dtype)
    if len(raw) % itemsize:
        raise ValueError("{}: storage {} holds {} bytes, not a whole number of {}-byte elements; "
                         "the file is truncated or corrupt".format(path, key, len(raw), itemsize))
    if isinstance(dtype, str):  # bfloat16: the upper half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype)


def _itemsize(dtype):
    return 2 if isinstance(dtype, str) else np.dtype(dtype).itemsize


def _flat_storage(storage, path, name):
    """The storage of a tensor as a 1-D array of the elements (and bytes) it really holds."""
    if isinstance(storage, _Storage):
        storage = storage.array
    if type(storage) is not np.ndarray:
        raise UnsafeCheckpointError("Refusing to load {}: tensor {} is rebuilt from a {}, not a "
                                    "storage".format(path, name, type(storage).__name__))
    # An array built in the pickle may have any shape (len() of a (10**9, 0) array is 10**9 and it
    # holds no byte): only its element count, backed by its bytes, is ever used.
    return storage.reshape(-1) if storage.flags.c_contiguous else np.ascontiguousarray(storage).reshape(-1)


def _check_tensor(ref, storage, path, name):
    """Prove that every element ``ref`` (offset, size, stride) addresses lies in ``storage``;
    returns the tensor's element count."""
    offset, size, stride = ref.offset, ref.size, ref.stride
    numel = 1
    for n in size:
        numel *= n
    if offset < 0 or len(stride) != len(size) or any(n < 0 for n in size) or \
            any(st < 0 for st in stride) or \
            (numel and offset + sum((n - 1) * st for n, st in zip(size, stride)) >= storage.size):
        raise UnsafeCheckpointError(
            "Refusing to load {}: tensor {} points outside its storage (offset {}, size {}, stride "
            "{}, the storage holds {} elements); the file is corrupt or crafted".format(
                path, name, offset, safe_pickle.short_repr(size), safe_pickle.short_repr(stride),
                storage.size))
    return numel


def _tensor(ref, storage, numel):
    """The tensor as an array of its own: a slice of ``storage``, or a copy of a strided view
    whose every index :func:`_check_tensor` proved to lie inside ``storage``."""
    offset, size, stride = ref.offset, ref.size, ref.stride
    if numel == 0:
        return np.zeros(size, storage.dtype)
    contiguous, step = True, 1
    for n, st in zip(reversed(size), reversed(stride)):
        if n != 1 and st != step:
            contiguous = False
        step *= n
    if contiguous:
        return storage[offset:offset + numel].reshape(size)
    strides = tuple(0 if n == 1 else st * storage.itemsize for n, st in zip(size, stride))
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides,
                                           writeable=False)
    return np.array(view, order="C")


def _name(where):
    """``a.b.c`` from the linked (parent, key) pairs :func:`_tensors` keeps (no string is built
    per container: a crafted pickle can nest a million levels); long names are cut."""
    keys = []
    while where is not None and len(keys) < 8:
        where, key = where
        keys.append(str(key)[:60])
    return ("..." if where is not None else "") + ".".join(reversed(keys))


def _tensors(obj):
    """(record, name) for every :class:`TorchTensor` in ``obj``; iterative (no recursion limit)."""
    found, stack, seen = [], [(obj, None)], set()
    while stack:
        node, where = stack.pop()
        if isinstance(node, TorchTensor):
            found.append((node, _name(where)))
        elif type(node) in (dict, collections.OrderedDict, list, tuple) and id(node) not in seen:
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, (where, k)) for k, v in items)
    return found


def _materialize(obj, path):
    """Replace every :class:`TorchTensor` record in ``obj`` by its numpy array, once all of them are
    proved to lie in their storages and to claim no more bytes than the limit allows for the
    storage bytes the file holds."""
    records = _tensors(obj)
    arrays, claimed, largest = {}, 0, (0, "")
    checked, flat, held = [], {}, 0
    for ref, name in records:
        if id(ref) in arrays:
            continue
        arrays[id(ref)] = None
        storage = flat.get(id(ref.storage))
        if storage is None:  # each storage made flat and counted once, however many tensors
            storage = flat[id(ref.storage)] = _flat_storage(ref.storage, path, name)
            held += storage.nbytes
        numel = _check_tensor(ref, storage, path, name)
        nbytes = numel * storage.itemsize
        claimed += nbytes
        largest = max(largest, (nbytes, name))
        checked.append((ref, storage, numel))
    ratio = limits.limit("PADDLE_RTSEG_MAX_TENSOR_EXPANSION")
    if claimed > ratio * held:
        raise limits.LimitError(
            "Refusing to load {}: its tensors claim {} bytes (tensor {} alone {} bytes) but the file "
            "holds {} bytes of storage; a checkpoint cannot claim more than it holds (tensors "
            "repeating their storage's elements, e.g. with stride 0). {}".format(
                path, claimed, largest[1], largest[0], held,
                limits.how_to_raise("PADDLE_RTSEG_MAX_TENSOR_EXPANSION")))
    for ref, storage, numel in checked:
        arrays[id(ref)] = _tensor(ref, storage, numel)
    return _replace(obj, arrays)


def _replace(obj, arrays):
    """``obj`` with each tensor record replaced by ``arrays[id(record)]``; containers are rebuilt
    iteratively in post-order (every child before any of its parents), lists and dicts in place."""
    done, stack, seen = {}, [(obj, False)], set()

    def new(v):
        if isinstance(v, TorchTensor):
            return arrays[id(v)]
        return done.get(id(v), v)

    while stack:
        node, children_done = stack.pop()
        if type(node) not in (dict, collections.OrderedDict, list, tuple):
            continue
        if children_done:
            if isinstance(node, dict):
                for key in list(node):
                    node[key] = new(node[key])
            elif type(node) is list:
                node[:] = [new(v) for v in node]
            else:
                done[id(node)] = tuple(new(v) for v in node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((v, False) for v in (node.values() if isinstance(node, dict) else node))
    return new(obj)


def _read_member(archive, info, path):
    """The bytes of zip member ``info``, read in bounded chunks: never more than it declares
    (zipfile stops there), never one allocation for an inflated whole of unknown size."""
    chunks = []
    with archive.open(info) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _check_zip_sizes(archive, path):
    """Refuse a zip whose members declare more bytes than the ratio limit allows (a zip bomb)
    before any is inflated; returns the bytes of the file."""
    on_disk = os.path.getsize(path)
    declared = sum(info.file_size for info in archive.infolist())
    ratio = limits.limit("PADDLE_RTSEG_MAX_ZIP_RATIO")
    if declared > ratio * max(on_disk, 1 << 16):
        raise limits.LimitError(
            "Refusing to load {}: its zip members inflate to {} bytes from {} bytes on disk; "
            "torch.save stores them uncompressed. {}".format(
                path, declared, on_disk, limits.how_to_raise("PADDLE_RTSEG_MAX_ZIP_RATIO")))


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        _check_zip_sizes(archive, path)
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError("{} has {} data.pkl entries; expected one (torch.save layout)".format(
                path, len(pickles)))
        prefix = pickles[0][:-len("data.pkl")]
        members = {info.filename: info for info in archive.infolist()}
        storages = {}

        def persistent_load(pid):
            if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
                raise UnsafeCheckpointError("unknown persistent id {}".format(
                    safe_pickle.short_repr(pid)))
            dtype, key = _storage_dtype(pid[1], path), str(pid[2])
            if key not in storages:
                info = members.get("{}data/{}".format(prefix, key))
                if info is None:
                    raise ValueError("{}: storage {} is not in the archive; the file is truncated "
                                     "or corrupt".format(path, safe_pickle.short_repr(key)))
                storages[key] = _to_array(_read_member(archive, info, path), dtype, path, key)
            return storages[key]

        data = _read_member(archive, members[pickles[0]], path)
        obj = safe_pickle.load(io.BytesIO(data), path, "torch", persistent_load)
    return _materialize(obj, path)


def _load_legacy(path):
    with open(path, "rb") as raw:
        f = safe_pickle.BoundedReader(raw)
        magic = safe_pickle.load(f, path)
        if type(magic) is not int or magic != safe_pickle.TORCH_MAGIC:
            raise ValueError("{} is not a torch.save file".format(path))
        protocol = safe_pickle.load(f, path)
        safe_pickle.load(f, path)  # sys_info: byte order and type sizes
        if type(protocol) is not int or protocol != 1001:
            raise ValueError("{} uses torch.save protocol {}; only 1001 is known".format(
                path, safe_pickle.short_repr(protocol)))
        storages = {}

        def persistent_load(pid):
            if type(pid) is not tuple or len(pid) != 6 or pid[0] != "storage":
                raise UnsafeCheckpointError("unknown persistent id {}".format(
                    safe_pickle.short_repr(pid)))
            _, storage_type, key, _, numel, view = pid
            if type(numel) is not int or numel < 0:
                raise ValueError("{}: storage {} has {} elements".format(
                    path, safe_pickle.short_repr(key), safe_pickle.short_repr(numel)))
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
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("{}: storage {} is truncated or corrupt".format(path, key))
            count, = struct.unpack("<q", head)
            if count != storage.numel:
                raise ValueError("{}: storage {} holds {} elements, its tensors say {}; the file is "
                                 "truncated or corrupt".format(path, key, count, storage.numel))
            size = count * _itemsize(storage.dtype)
            if size > f.left():  # checked before reading: no allocation the file cannot fill
                raise ValueError("{}: storage {} declares {} bytes but the file has {} left; it is "
                                 "truncated or corrupt".format(path, key, size, f.left()))
            storage.array = _to_array(f.read(size), storage.dtype, path, key)
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
