"""The course's disk cache (featurizer, backbones, fine-tuning): one key scheme, atomic writes,
damaged entries recomputed. Entries are ``_cache_root()/<kind>/<model>[-<size>px][-<precision>]
[-<label>]-<key><suffix>`` (kinds: features, features/chunks, features/index, images, weights,
tflite, activations), the key a hash of all they depend on (:func:`_cache_key`). Not
``joblib.Memory``: entries depend on what is not an argument (a checkpoint's hash, the TensorFlow
version), must ignore what is (batch size), and include files read by path."""

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .runtime import _cache_root, atomic_write as _write_entry

#: Bump when preprocessing, resizing, a conversion or the layout changes: every entry is recomputed.
_CACHE_FORMAT = 3

_T = TypeVar("_T")


class _CacheWarning(UserWarning):
    """A cache entry could not be read: it is recomputed."""


def _cache_key(kind: str, model: str, weights_id: str, size: int | None = None,
               precision: str = "float32", content: str = "", detail: Sequence[Any] = ()) -> str:
    """A hash of everything an entry depends on, with :data:`_CACHE_FORMAT`."""
    parts = [_CACHE_FORMAT, kind, content, model, weights_id, size, precision, *detail]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _entry_path(kind: str, model: str, weights_id: str, size: int | None = None,
                precision: str = "float32", content: str = "", detail: Sequence[Any] = (),
                label: str = "", suffix: str = "") -> Path:
    key = _cache_key(kind, model, weights_id, size, precision, content, detail)
    tags = [f"{size}px" if size else "", "" if precision == "float32" else precision, label]
    name = "-".join([model, *filter(None, tags)])
    return _cache_root() / kind / f"{name}-{key}{suffix}"


def _content_hash(*parts: bytes | str) -> str:
    """A hash of bytes or text (file contents, a list of digests): an entry's ``content``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def _read_entry(path: Path, read: Callable[[Path], _T], what: str) -> _T | None:
    """``read(path)``; None if the entry is missing or damaged (then one :class:`_CacheWarning`)."""
    if not path.exists():
        return None
    try:
        return read(path)
    except FileNotFoundError:  # removed meanwhile by another process
        return None
    except Exception as exc:  # a truncated, corrupt or mismatched entry: recompute it
        warnings.warn(f"{what} cache file {path} is unreadable ({type(exc).__name__}: {exc}); "
                      "recomputing it", _CacheWarning, stacklevel=3)
        return None


def _write_entry_by_path(path: Path, save: Callable[[str], Any]) -> Path:
    """Write an entry atomically with ``save(file_name)`` (Keras' ``save_weights``)."""
    def write(handle: Any) -> None:
        handle.close()
        save(handle.name)

    return _write_entry(path, write)
