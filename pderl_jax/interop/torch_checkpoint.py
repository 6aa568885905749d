"""Read the official PDERL PyTorch checkpoints without torch.

The official code saves actors with `torch.save(actor.state_dict(), path)` (`evo_net.pkl`,
`models/evo_net_actor_{n}.pkl`). `read_torch_state_dict` reads such a file into NumPy arrays
with a *restricted* unpickler: only the few globals a tensor state dict needs are allowed
(`collections.OrderedDict`, torch's tensor rebuild functions, storage types and dtypes), each
mapped to a harmless local stand-in, so a checkpoint can never run code. Both of torch's
formats are understood:

* zip (torch >= 1.6): `<archive>/data.pkl` whose persistent ids are
  `('storage', storage_type, key, location, numel)`, raw bytes in `<archive>/data/<key>`;
* legacy (torch <= 1.5, e.g. the official code's torch 1.1): pickles of the magic number, the
  protocol version and sys_info, then the main pickle with persistent ids
  `('storage', storage_type, root_key, location, numel, view_metadata)`, then a pickle of the
  storage keys, then per key an int64 element count and the raw bytes.

Only little-endian files are supported (every machine torch runs on in practice).
`load_official_actor` reads a file and converts it to flax `Actor` params.
"""

from __future__ import annotations

import functools
import io
import operator
import pickle
import struct
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import ml_dtypes  # ships with jax; gives NumPy a bfloat16
import numpy as np
from numpy.lib.stride_tricks import as_strided

from pderl_jax.config import ConfigError
from pderl_jax.interop.torch_layout import from_torch_state_dict, official_actor_layout_problem

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
}
_TORCH_DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
}


class _StorageType(NamedTuple):
    """Stand-in for a torch storage class such as `torch.FloatStorage`."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    """A persistent-id reference: `nbytes` bytes from `byte_offset` of root storage `key`."""

    key: str
    dtype: np.dtype
    byte_offset: int
    nbytes: int


@dataclass
class _TensorRef:
    """A tensor whose storage bytes may not have been read yet (the legacy format puts them last)."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple
    dtype: np.dtype


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor rebuilt from {type(storage).__name__}, not from a storage")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride), storage.dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    """torch >= 2.1 for dtypes without a legacy storage class: untyped bytes plus an explicit dtype."""
    if not isinstance(dtype, np.dtype):
        raise ValueError(f"_rebuild_tensor_v3 needs a torch dtype, got {dtype!r}")
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    tensor.dtype = dtype
    return tensor


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """An `nn.Parameter` (a state dict saved with keep_vars=True) is read as its tensor."""
    if not isinstance(data, _TensorRef):
        raise ValueError(f"parameter rebuilt from {type(data).__name__}, not from a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, np.dtype(dt)) for name, dt in _STORAGE_DTYPES.items()},
    **{(module, "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8))
       for module in ("torch", "torch.storage")},
    **{("torch", name): np.dtype(dt) for name, dt in _TORCH_DTYPES.items()},
}


def _text(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `_ALLOWED_GLOBALS` and records the storages it meets."""

    def __init__(self, file, legacy: bool):
        super().__init__(file, encoding="utf-8")
        self.legacy = legacy
        self.roots: dict[str, _Storage] = {}  # root storage key -> whole storage

    def find_class(self, module, name):
        try:
            value = _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ValueError(
                f"refusing to load global '{module}.{name}': only tensor state dicts are supported "
                "(if this is a whole pickled model, re-save it with torch.save(model.state_dict(), path))"
            ) from None
        # A fresh wrapper, so that a BUILD opcode aimed at a rebuild function cannot alter ours.
        return functools.partial(value) if isinstance(value, types.FunctionType) else value

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or _text(pid[0]) != "storage":
            kind = _text(pid[0]) if isinstance(pid, tuple) and pid else pid
            raise ValueError(f"refusing persistent id {kind!r}: only tensor storages are supported")
        if len(pid) != (6 if self.legacy else 5):
            raise ValueError(f"malformed storage persistent id with {len(pid)} fields")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"storage type {storage_type!r} is not a torch storage class")
        key, itemsize = _text(key), storage_type.dtype.itemsize
        root = self.roots.setdefault(key, _Storage(key, storage_type.dtype, 0, operator.index(numel) * itemsize))
        view = pid[5] if self.legacy else None
        if view is None:
            return root
        _view_key, offset, size = view  # a legacy view: `size` elements from element `offset` of the root
        return _Storage(key, root.dtype, operator.index(offset) * itemsize, operator.index(size) * itemsize)


def _unpickle(file, legacy: bool = True) -> tuple[Any, dict[str, _Storage]]:
    unpickler = _RestrictedUnpickler(file, legacy)
    return unpickler.load(), unpickler.roots


def _read_zip(data: bytes) -> tuple[Any, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError("zip archive has no '<archive>/data.pkl' record: not a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise ValueError("big-endian checkpoints are not supported")
        obj, roots = _unpickle(io.BytesIO(archive.read(pickles[0])), legacy=False)
        raw = {key: archive.read(f"{prefix}data/{key}") for key in roots}
    return obj, raw


def _read_legacy(data: bytes) -> tuple[Any, dict[str, bytes]]:
    f = io.BytesIO(data)
    try:
        magic = _unpickle(f)[0]
    except (pickle.UnpicklingError, EOFError, IndexError, TypeError) as e:
        raise ValueError(f"not a PyTorch checkpoint (neither a zip archive nor the legacy format): {e}") from e
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError("not a PyTorch checkpoint (the legacy format's magic number is missing)")
    if (version := _unpickle(f)[0]) != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"unsupported legacy torch protocol version {version!r}")
    sys_info = _unpickle(f)[0]
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ValueError("big-endian checkpoints are not supported")
    obj, roots = _unpickle(f, legacy=True)
    raw = {}
    for key in map(_text, _unpickle(f)[0]):
        if key not in roots:
            raise ValueError(f"storage key {key!r} is listed but no tensor uses it")
        header = f.read(8)
        if len(header) < 8:
            raise ValueError(f"file is truncated: storage {key!r} is missing")
        (count,) = struct.unpack("<q", header)
        if count < 0:
            raise ValueError(f"storage {key!r} has a negative element count")
        nbytes = count * roots[key].dtype.itemsize
        raw[key] = f.read(nbytes)
        if len(raw[key]) < nbytes:
            raise ValueError(f"file is truncated: storage {key!r} should hold {nbytes} bytes, found {len(raw[key])}")
    return obj, raw


def _materialize(tensor: _TensorRef, raw: Mapping[str, bytes]) -> np.ndarray:
    """Copy a tensor out of its storage bytes, honouring offset, size and stride (bounds checked)."""
    storage, dtype = tensor.storage, np.dtype(tensor.dtype)
    if storage.key not in raw:
        raise ValueError(f"the bytes of storage {storage.key!r} are missing")
    buffer = raw[storage.key]
    if storage.byte_offset + storage.nbytes > len(buffer):
        raise ValueError(f"storage {storage.key!r} holds {len(buffer)} bytes, "
                         f"fewer than the {storage.byte_offset + storage.nbytes} it declares (truncated?)")
    flat = np.frombuffer(buffer, dtype, count=storage.nbytes // dtype.itemsize, offset=storage.byte_offset)
    offset = operator.index(tensor.offset)
    size = tuple(map(operator.index, tensor.size))
    stride = tuple(map(operator.index, tensor.stride))
    if len(size) != len(stride) or min((offset, *size, *stride)) < 0:
        raise ValueError(f"invalid tensor layout: offset {offset}, size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise ValueError(f"tensor (offset {offset}, size {size}, stride {stride}) reaches past the end "
                         f"of its storage of {flat.size} elements")
    strides = tuple(s * dtype.itemsize for s in stride)
    return as_strided(flat[offset:], shape=size, strides=strides, writeable=False).copy()


def _tensor_dict(obj) -> dict:
    """The unpickled object if it is a dict of tensors, else a ValueError saying what was found."""
    if isinstance(obj, dict) and obj and all(isinstance(v, _TensorRef) for v in obj.values()):
        return obj
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict (a dict of tensors), found {type(obj).__name__}")
    nested = [k for k, v in obj.items() if isinstance(v, dict) and any(isinstance(x, _TensorRef) for x in v.values())]
    hint = (f"; tensors are nested under {nested!r}: save that entry alone, "
            f"e.g. torch.save(checkpoint[{nested[0]!r}], path)") if nested else ""
    raise ValueError(f"expected a state dict (a dict of tensors), found a dict with keys {list(obj)!r}{hint}")


def read_torch_state_dict(path) -> "OrderedDict[str, np.ndarray]":
    """Read a `torch.save`d state dict (zip or legacy format) as `{name: numpy array}`, without torch.

    Raises ValueError naming the file for anything that is not a plain dict of tensors: refused
    globals (which are never executed), truncated or corrupt files, nested checkpoints.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            obj, raw = _read_zip(data)
        elif data.startswith(b"PK\x03\x04"):
            raise ValueError("zip archive is truncated or corrupt")
        else:
            obj, raw = _read_legacy(data)
        tensors = _tensor_dict(obj)
        return OrderedDict((_text(name), _materialize(t, raw)) for name, t in tensors.items())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, IndexError, TypeError,
            AttributeError, struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: truncated or corrupt PyTorch checkpoint ({type(e).__name__}: {e})") from e


def load_official_actor(path, like_params: Mapping[str, Any], network=None) -> dict:
    """Official actor checkpoint (`evo_net.pkl`, `models/evo_net_actor_{n}.pkl`) -> flax `Actor` params.

    `like_params` is a params tree of the actor to load into (e.g. from `init_actor`); names and
    shapes are checked against it, and `network` (its `NetworkConfig`) against what the official
    `Actor` class can express. Every failure is a `ConfigError` naming the file and the fix.
    """
    path = Path(path)
    problem = official_actor_layout_problem(network) if network is not None else None
    if problem is not None:
        raise ConfigError(f"actor checkpoint {path}: an official PDERL actor cannot be loaded into this network: "
                          f"{problem}")
    try:
        state_dict = read_torch_state_dict(path)
    except FileNotFoundError:
        raise ConfigError(f"actor checkpoint {path} not found") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read actor checkpoint {path}: {e}") from e
    try:
        return from_torch_state_dict(state_dict, like=like_params)
    except ValueError as e:
        hint = " It looks like a critic checkpoint (evo_net_critic_*); pass an actor's." if any(
            k.startswith("w_state_l1.") for k in state_dict) else ""
        raise ConfigError(
            f"actor checkpoint {path} does not fit this actor: {e}. Check --env (observation and action "
            "sizes) and the network widths / layer norm (NetworkConfig.actor_hidden, use_layer_norm; "
            f"the official actor is 128x128 with LayerNorm).{hint}"
        ) from e
