"""Read PyTorch state dicts in the *legacy* (pre-1.6, non-zip) format, without torch: pickles of a
magic number, a protocol version, system info, the state dict (its tensors name their storages by
persistent ids) and the storage keys, then each storage's bytes. Unpickling allows only the classes
a state dict needs, so a checkpoint cannot run code.
"""

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {f"{kind}Storage": np.dtype(code) for kind, code in [
    ("Float", "<f4"), ("Double", "<f8"), ("Half", "<f2"), ("Long", "<i8"), ("Int", "<i4"),
    ("Short", "<i2"), ("Char", "i1"), ("Byte", "u1"), ("Bool", "?")]}


class _CheckpointFormatError(ValueError):
    """The file is not a legacy PyTorch checkpoint this reader understands."""


@dataclass
class _Storage:
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if (any(s < 0 for s in self.size) or any(s < 0 for s in self.stride)
                or len(self.stride) != len(self.size)):
            raise _CheckpointFormatError(f"invalid tensor size {self.size} / stride {self.stride}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        # as_strided must not read past the storage
        if 0 not in self.size and not 0 <= self.offset <= last < len(data):
            raise _CheckpointFormatError(
                f"tensor of size {self.size}, stride {self.stride}, offset {self.offset} "
                f"does not fit its storage of {len(data)} elements"
            )
        if not self.size:  # a 0-d tensor
            return data[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :] if 0 not in self.size else data[:0], shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride))
        # a copy, C-ordered (checkpoints converted from TF keep TF's strides): not a window into
        # the file's buffer shared with other tensors
        return np.array(view, order="C", copy=True)


class _RestrictedUnpickler(pickle.Unpickler):
    """Plain data only, or (with ``storages``) a state dict and the storages its tensors name."""
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if self.storages is not None:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch._utils" and name in {"_rebuild_tensor_v2", "_rebuild_tensor"}:
                return lambda storage, offset, size, stride, *_: _TensorRef(
                    storage, int(offset), tuple(size), tuple(stride))
            if module == "torch" and name in _STORAGE_DTYPES:
                return name
        raise _CheckpointFormatError(f"checkpoint refers to {module}.{name}, "
                                    "which this reader does not allow")

    def persistent_load(self, pid: Any) -> _Storage:
        if self.storages is None or not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise _CheckpointFormatError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if view_metadata is not None:
            raise _CheckpointFormatError("storage views are not supported")
        if storage_type not in _STORAGE_DTYPES:
            raise _CheckpointFormatError(f"unsupported storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type], int(numel))
        return self.storages[key]


def _load_legacy_checkpoint(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """A legacy state dict as ``{name: numpy array}``; anything else: _CheckpointFormatError."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(2)[:1] == b"PK":
            raise _CheckpointFormatError(f"{path} is a zip-format checkpoint (torch>=1.6); "
                                        "only the legacy format is read")
        f.seek(0)
        try:
            return _read_legacy(f, path)
        except _CheckpointFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unpickling/struct failure: not a checkpoint
            raise _CheckpointFormatError(
                f"{path} is not a readable legacy PyTorch checkpoint "
                f"(corrupt or truncated: {type(exc).__name__}: {exc})"
            ) from exc


def _read_legacy(f: BinaryIO, path: Path) -> "collections.OrderedDict[str, np.ndarray]":
    if _RestrictedUnpickler(f).load() != _LEGACY_MAGIC_NUMBER:
        raise _CheckpointFormatError(f"{path} has no legacy PyTorch magic number")
    protocol = _RestrictedUnpickler(f).load()
    if protocol != _LEGACY_PROTOCOL_VERSION:
        raise _CheckpointFormatError(f"{path}: unsupported protocol version {protocol}")
    sys_info = _RestrictedUnpickler(f).load()
    if not isinstance(sys_info, dict):
        raise _CheckpointFormatError(f"{path}: malformed system info {sys_info!r}")
    if not sys_info.get("little_endian", True):
        raise _CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(f, storages).load()
    for key in _RestrictedUnpickler(f).load():
        if key not in storages:
            raise _CheckpointFormatError(f"{path}: storage {key!r} is not used by any tensor")
        storage = storages[key]
        count = f.read(8)
        if len(count) != 8:
            raise _CheckpointFormatError(f"{path} is truncated (storage {key})")
        (numel,) = struct.unpack("<q", count)
        if numel != storage.numel:
            raise _CheckpointFormatError(f"{path}: storage {key} has {numel} elements, "
                                        f"expected {storage.numel}")
        raw = f.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise _CheckpointFormatError(f"{path} is truncated (storage {key})")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    missing = [k for k, s in storages.items() if s.data is None]
    if missing:
        raise _CheckpointFormatError(f"{path}: storages {missing[:5]} have no data")
    if not isinstance(obj, dict):
        raise _CheckpointFormatError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return collections.OrderedDict((k, v.to_numpy() if isinstance(v, _TensorRef) else v)
                                   for k, v in obj.items())
