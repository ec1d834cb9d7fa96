"""Batched featurization for the lessons and the tool: images or image files -> float32 deep
features, cached on disk (:mod:`utils.cache`). Files go in chunks decoded a few ahead, each cached
when done (a killed run resumes; a stat index lets a rerun skip reading unchanged files)."""

import functools
import hashlib
import json
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .backbones import _DEFAULT_BACKBONE, _Backbone, load_backbone
from .cache import _content_hash, _entry_path, _read_entry, _write_entry
from .data import _NO_SUCH_FILE, _ImageLoadError, load_image
from .fast_inference import _keras_step, resolve_precision, _tflite_featurizer

_DEFAULT_BATCH_SIZE = 64
_CHUNK_FILES = 256  # files per cached chunk: what a kill can lose at most
_MAX_CHUNKS_AHEAD = 2  # decoded chunks waiting for the model
_CHUNK_ARRAYS = ("features", "kept", "skipped", "reasons")


@dataclass
class FileFeatures:
    """featurize_files' result (lesson 9): readable ``paths``, their features, ``skipped``."""
    features: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@functools.lru_cache(maxsize=8)
def _inference_step(backbone: _Backbone,
                    precision: str = "float32") -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images (N, h, w, 3) -> features (N, dim): TFLite, else (float32 only) Keras."""
    fast = _tflite_featurizer(backbone, precision=precision)
    if fast is None and precision != "float32":
        raise RuntimeError(f"{precision} inference needs the TFLite fast path "
                           "(DEEP_FEATURES_FAST is off or TFLite is unavailable): "
                           "use precision='float32'")
    return fast or _keras_step(backbone.feature_model, backbone.input_size)


def _progress(total: int, description: str, enabled: bool | None):
    from tqdm import tqdm
    # In a notebook every update is a new output line: update rarely there, often in a terminal.
    return tqdm(total=total, desc=description, unit="img", file=sys.stderr,
                disable=not (enabled if enabled is not None else total >= 512),
                mininterval=1.0 if sys.stderr.isatty() else 10.0)


def _in_batches(step: Callable[[np.ndarray], np.ndarray], images: np.ndarray, dim: int,
                batch_size: int, bar) -> np.ndarray:
    out = np.empty((len(images), dim), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        out[start : start + batch_size] = np.asarray(step(images[start : start + batch_size]))
        bar.update(len(out[start : start + batch_size]))
    return out


def _array_hash(images: np.ndarray) -> str:
    """Content hash of an image array (shape, dtype and pixels); fine-tuning uses it too."""
    digest = hashlib.sha256(f"{images.shape}{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def _array_cache_path(images_hash: str, backbone: _Backbone,
                      precision: str = "float32") -> Path:
    return _entry_path("features", backbone.name, backbone.weights_id, backbone.input_size,
                       precision, content=images_hash, label="array", suffix=".npz")


def featurize_images(images: np.ndarray, backbone: str = _DEFAULT_BACKBONE,
                     image_size: int | None = None, batch_size: int = _DEFAULT_BATCH_SIZE,
                     use_cache: bool = True, progress: bool | None = None,
                     precision: str | None = None, weights: str | None = "imagenet") -> np.ndarray:
    """uint8 RGB images (N, H, W, 3) -> (N, feature_dim) float32 features, cached (lessons 3-9);
    ``precision``: see ``resolve_precision``; ``weights``: ``"imagenet"`` or None (random)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (0-255), got {images.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    bb = load_backbone(backbone, image_size, weights)
    precision = resolve_precision(precision)
    path = _array_cache_path(_array_hash(images), bb, precision) if use_cache else None
    if path is not None:
        def read(p: Path) -> np.ndarray:
            with np.load(p) as npz:
                found = npz["features"]
            if found.shape != (len(images), bb.feature_dim):
                raise ValueError(f"shape {found.shape}, expected {(len(images), bb.feature_dim)}")
            return found

        cached = _read_entry(path, read, "feature")
        if cached is not None:
            return cached
    with _progress(len(images), f"{bb.name} {bb.input_size}px", progress) as bar:
        out = _in_batches(_inference_step(bb, precision), images, bb.feature_dim, batch_size, bar)
    if path is not None:
        _write_entry(path, lambda f: np.savez(f, features=out))
    return out


@dataclass
class _Chunk:
    """A chunk of files: its :data:`_CHUNK_ARRAYS` (no ``features`` while ``images`` wait)."""
    arrays: dict[str, np.ndarray]
    images: np.ndarray | None = None
    key: str = ""
    index: Path | None = None


def _read_file(path: Path) -> bytes | str:
    """A file's bytes, or the reason it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return _NO_SUCH_FILE
    except IsADirectoryError:
        return "not an image (a folder)"
    except OSError as exc:
        return f"unreadable file ({exc.strerror or exc})"


def _prepare_chunk(entry: Callable[..., Path] | None, paths: Sequence[Path], size: int,
                   dim: int) -> _Chunk:
    """A chunk from the cache (by stat index, then by content), else its files read and decoded."""

    def cached(key: str) -> dict[str, np.ndarray] | None:
        def read(path: Path) -> dict[str, np.ndarray]:
            with np.load(path) as npz:
                arrays = {k: npz[k] for k in _CHUNK_ARRAYS}
            n_kept = len(arrays["kept"])
            if arrays["features"].shape != (n_kept, dim) \
                    or n_kept + len(arrays["skipped"]) != len(paths):
                raise ValueError("it does not match its files")
            return arrays

        return _read_entry(entry("features/chunks", content=key, suffix=".npz"), read, "feature")

    indexed, index = "", None
    if entry is not None:
        stats: list[object] = []
        for p in paths:
            try:
                st = p.stat()
                stats.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                stats.append([str(p), None])
        index = entry("features/index", content=_content_hash(json.dumps(stats)), suffix=".txt")
        indexed = _read_entry(index, lambda p: p.read_text().strip(), "feature index")
        if indexed and (arrays := cached(indexed)) is not None:
            return _Chunk(arrays)
    contents = [_read_file(p) for p in paths]
    key = ""
    if entry is not None:
        key = _content_hash(json.dumps([
            hashlib.sha256(c).hexdigest() if isinstance(c, bytes) else f"unreadable:{c}"
            for c in contents]))
        # a damaged entry the index pointed to is reported once, not twice
        if key != indexed and (arrays := cached(key)) is not None:
            _write_entry(index, key)
            return _Chunk(arrays)
    images, kept, skipped = [], [], []
    for i, content in enumerate(contents):
        try:
            if isinstance(content, str):
                raise _ImageLoadError(None, content)
            images.append(load_image(data=content, size=size))
            kept.append(i)
        except _ImageLoadError as exc:
            skipped.append((i, exc.reason))
    arrays = {"kept": np.asarray(kept, dtype=np.int64),
              "skipped": np.asarray([i for i, _ in skipped], dtype=np.int64),
              "reasons": np.asarray([r for _, r in skipped], dtype=str)}
    return _Chunk(arrays, np.stack(images) if images else np.empty((0, size, size, 3), np.uint8),
                  key, index)


def featurize_files(paths: Sequence[str | Path], backbone: str = _DEFAULT_BACKBONE,
                    image_size: int | None = None, batch_size: int = _DEFAULT_BATCH_SIZE,
                    use_cache: bool = True, progress: bool | None = None,
                    precision: str | None = None,
                    on_chunk: Callable[[int, int], None] | None = None,
                    chunk_files: int = _CHUNK_FILES,
                    weights: str | None = "imagenet") -> FileFeatures:
    """Deep features of image files, unreadable ones skipped with the reason (lesson 9); cached in
    chunks of ``chunk_files``, ``on_chunk(done, total)`` called after each."""
    paths = [Path(p) for p in paths]
    if batch_size < 1 or chunk_files < 1:
        raise ValueError(f"batch_size and chunk_files must be positive, "
                         f"got {batch_size} and {chunk_files}")
    bb = load_backbone(backbone, image_size, weights)
    size, dim = bb.input_size, bb.feature_dim
    precision = resolve_precision(precision)
    entry = functools.partial(_entry_path, model=bb.name, weights_id=bb.weights_id, size=size,
                              precision=precision) if use_cache else None
    out = np.empty((len(paths), dim), dtype=np.float32)  # filled in place, chunk after chunk
    kept, skipped = [], []
    starts = range(0, len(paths), chunk_files)
    pool = ThreadPoolExecutor(1, thread_name_prefix="featurize-decode")
    decode = lambda s: pool.submit(_prepare_chunk, entry, paths[s : s + chunk_files], size, dim)
    decoding = deque(map(decode, starts[:_MAX_CHUNKS_AHEAD]))
    resumed = 0
    try:
        with _progress(len(paths), f"{bb.name} {size}px", progress) as bar:
            for n, start in enumerate(starts):
                chunk = decoding.popleft().result()
                if n + _MAX_CHUNKS_AHEAD < len(starts):
                    decoding.append(decode(starts[n + _MAX_CHUNKS_AHEAD]))
                count = min(chunk_files, len(paths) - start)
                arrays = chunk.arrays
                if chunk.images is not None:
                    arrays["features"] = _in_batches(_inference_step(bb, precision),
                                                     chunk.images, dim, batch_size, bar)
                    chunk.images = None  # free the pixels before the next chunk is taken
                    bar.update(len(arrays["skipped"]))
                    if entry is not None:
                        _write_entry(entry("features/chunks", content=chunk.key, suffix=".npz"),
                                     lambda f: np.savez(f, **arrays))
                        _write_entry(chunk.index, chunk.key)
                else:
                    resumed += count
                    bar.set_postfix_str(f"{resumed} from cache", refresh=False)
                    bar.update(count)
                out[len(kept) : len(kept) + len(arrays["kept"])] = arrays["features"]
                kept += [start + int(i) for i in arrays["kept"]]
                skipped += [(start + int(i), str(r))
                            for i, r in zip(arrays["skipped"], arrays["reasons"])]
                if on_chunk is not None:
                    on_chunk(start + count, len(paths))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return FileFeatures(out[: len(kept)], [paths[i] for i in kept],  # a view: no copy
                        [(paths[i], r) for i, r in skipped])
