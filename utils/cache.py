"""The course's disk cache: one key scheme, one format version, atomic writes, damaged entries
recomputed.

Everything the course caches lives under :func:`~utils.runtime._cache_root`
(``$DEEP_FEATURES_CACHE``, else ``~/.cache/deep-features``), one folder per kind of entry::

    features/<model>-<size>px[-<precision>]-array-<key>.npz
        features of an image array (featurize_images)
    features/chunks/<model>-<size>px[-<precision>]-<key>.npz
        features of one chunk of image files (featurize_files)
    features/index/<model>-<size>px[-<precision>]-<key>.txt
        a chunk's stat index: (path, size, mtime) -> chunk file
    weights/<model>-<key>.weights.h5 and .blocks.json
        EfficientNet-Lite weights converted from PyTorch
    tflite/<model>-<size>px[-<precision>]-in<h>x<w>-tf<version>-<key>.tflite
        the feature model as TFLite
    activations/bottom-<size>px-<h>x<w>x<c>-<n>-<key>.npy
        fine-tuning: a frozen bottom's activations

The readable part of a name is for people; the key, made by :func:`_cache_key` alone, is what makes
an entry unique: a hash of the content (pixels or file bytes), the model, its weights id, the image
size, the precision, :data:`_CACHE_FORMAT` and whatever else the entry depends on (``detail``).
Entries are written whole under a temporary name and renamed into place, so two processes may share
one cache; an entry that cannot be read is reported with one :class:`_CacheWarning` and recomputed.

``joblib.Memory`` was considered and not used: its key is the function's arguments, but these
entries depend on what is not an argument (the checkpoint's hash, the TensorFlow version) and must
ignore what is (batch size, progress bar); Keras weights and TFLite models are files read by path,
not pickles; and the resumable chunks of ``featurize_files`` and their stat index are several
entries per call.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence, TypeVar

from .runtime import atomic_write, _cache_root

#: Bump when preprocessing, resizing, a conversion or the layout changes: every cached entry is then
#: recomputed.
_CACHE_FORMAT = 3

_T = TypeVar("_T")


class _CacheWarning(UserWarning):
    """A cache entry could not be read: it is recomputed."""


def _precision_tag(precision: str) -> str:
    """The part of an entry's name that says its precision: nothing for float32, ``-int8`` for
    int8."""
    return "" if precision == "float32" else f"-{precision}"


def _cache_key(kind: str, model: str, weights_id: str, size: int | None = None,
              precision: str = "float32",
              content: str = "", detail: Sequence[Any] = ()) -> str:
    """The key of a cache entry: a hash of everything the entry depends on, with
    :data:`_CACHE_FORMAT`."""
    parts = [_CACHE_FORMAT, kind, content, model, weights_id, size, precision, *detail]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _entry_path(kind: str, model: str, weights_id: str, size: int | None = None,
               precision: str = "float32", content: str = "", detail: Sequence[Any] = (),
               label: str = "", suffix: str = "") -> Path:
    """Where the entry lives:
    ``_cache_root()/<kind>/<model>[-<size>px][-<precision>][-<label>]-<key><suffix>``.

    Used by :mod:`utils.fine_tuning` (lesson 8) and the featurizer; no lesson calls it.
    """
    key = _cache_key(kind, model, weights_id, size, precision, content, detail)
    name = (model + (f"-{size}px" if size else "") + _precision_tag(precision)
            + (f"-{label}" if label else ""))
    return _cache_root() / kind / f"{name}-{key}{suffix}"


def _content_hash(*parts: bytes | str) -> str:
    """A hash of bytes or text (file contents, a list of digests) to use as an entry's
    ``content``.

    Used by :mod:`utils.fine_tuning` (lesson 8) and the featurizer; no lesson calls it.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def _read_entry(path: Path, read: Callable[[Path], _T], what: str) -> _T | None:
    """``read(path)``, or ``None`` when the entry is missing or damaged (then with one
    :class:`_CacheWarning`).

    ``read`` raises (any exception) when the entry is unreadable or does not match what it is for.

    Used by :mod:`utils.fine_tuning` (lesson 8) and the featurizer; no lesson calls it.
    """
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


def _write_entry(path: Path, content: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write an entry atomically (bytes, text, or a function writing to a binary file).

    Used by :mod:`utils.fine_tuning` (lesson 8) and the featurizer; no lesson calls it.
    """
    return atomic_write(path, content)


def _write_entry_by_path(path: Path, save: Callable[[Path], Any]) -> Path:
    """Write an entry atomically with a function that takes a file name (Keras' ``save_weights``):
    it writes a temporary file with the same suffix in the same folder, which then replaces
    ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
