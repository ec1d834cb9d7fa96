"""Read PyTorch checkpoints saved in the *legacy* (pre-1.6, non-zip) pickle format -- without torch.

The legacy format is five things in one file:

1. a pickled magic number, 2. a pickled protocol version, 3. pickled system info,
4. the pickled object itself (here a state dict), whose tensors refer to storages by a persistent id
   ``("storage", StorageType, key, location, numel, view_metadata)`` and are rebuilt by
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``,
5. a pickled list of storage keys, followed by each storage's raw bytes: an int64 element count, then the data.

Only the classes a state dict needs are allowed during unpickling, so a checkpoint cannot run arbitrary code.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointFormatError(ValueError):
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
        assert self.storage.data is not None
        if not self.size:  # a 0-d tensor
            return self.storage.data[self.offset].copy()
        itemsize = self.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
        )
        # Checkpoints converted from TensorFlow keep TF's memory layout (non-contiguous strides): copy.
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}:
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise CheckpointFormatError(f"checkpoint refers to {module}.{name}, which this reader does not allow")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointFormatError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if view_metadata is not None:
            raise CheckpointFormatError("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type], int(numel))
        return self.storages[key]


def _as_numpy_tree(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _as_numpy_tree(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_numpy_tree(v) for v in obj)
    return obj


def load_legacy_checkpoint(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """Load a legacy-format PyTorch state dict as ``{name: numpy array}`` (arrays in PyTorch's shapes)."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(2)[:1] == b"PK":
            raise CheckpointFormatError(f"{path} is a zip-format checkpoint (torch>=1.6); only the legacy format is read")
        f.seek(0)
        try:
            magic = pickle.load(f)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
            raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint: {exc}") from exc
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointFormatError(f"{path} has no legacy PyTorch magic number")
        protocol = pickle.load(f)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise CheckpointFormatError(f"{path}: unsupported protocol version {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
        unpickler = _RestrictedUnpickler(f)
        obj = unpickler.load()
        storage_keys = pickle.load(f)
        for key in storage_keys:
            storage = unpickler.storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != storage.numel:
                raise CheckpointFormatError(f"{path}: storage {key} has {numel} elements, expected {storage.numel}")
            nbytes = numel * storage.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise CheckpointFormatError(f"{path} is truncated (storage {key})")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _as_numpy_tree(obj)
