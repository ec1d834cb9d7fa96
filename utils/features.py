"""Batched featurization with a disk cache: images -> float32 deep-feature matrix.

Entries are keyed by :mod:`utils.cache` (the images' content, pixels or file bytes, the backbone and
its weights, the image size and the inference precision) and written atomically, so a re-run or
another notebook pays nothing and a changed parameter never reads stale features.

Files are featurized in chunks of :data:`_CHUNK_FILES`, each cached on its own as soon as it is
done: a killed or interrupted run resumes at the first chunk not yet cached and gives the same
features. A small stat index (path, size, modification time -> content key) lets a rerun skip
reading files it has already seen. Decoding runs in a background thread at most
:data:`_MAX_CHUNKS_AHEAD` chunks ahead of the model, so memory stays flat in the number of files
(see :func:`featurize_files`). Two processes featurizing into one cache both succeed: every file
is written whole under a temporary name and renamed into place, and they compute the same features.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .backbones import _DEFAULT_BACKBONE, _Backbone, _BackboneHandle, _backbone_handle
from .cache import _content_hash, _entry_path, _read_entry, _write_entry
from .data import _NO_SUCH_FILE, _ImageLoadError, load_image
from .fast_inference import _keras_step, resolve_precision, _tflite_featurizer

_DEFAULT_BATCH_SIZE = 64
_CHUNK_FILES = 256  # files per cached chunk: what a kill can lose at most
# decoded chunks waiting for the model (plus one being decoded and one being featurized)
_MAX_CHUNKS_AHEAD = 2


@dataclass
class FileFeatures:
    """Features of the readable files among ``paths``; ``skipped`` lists the others with the
    reason.

    What featurize_files returns (lesson 9); the tool's Dask path returns one too.
    """

    features: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _inference_step(backbone: _Backbone | _BackboneHandle,
                    precision: str = "float32") -> Callable[[np.ndarray], np.ndarray]:
    """The step uint8 images (N, h, w, 3) -> features (N, dim), resizing to the model's size when
    needed.

    The fast path is the model converted to TFLite and run by XNNPACK (:mod:`utils.fast_inference`;
    float32: about twice TensorFlow's speed on a small CPU, same features to ~1e-5); the fallback a
    tf.function around the model (always float32: ``precision`` must come from
    :func:`~utils.fast_inference.resolve_precision`). Given a
    :class:`~utils.backbones._BackboneHandle`, the Keras model is built only if the fast path needs
    a conversion or is off: with the converted model cached, start-up skips TensorFlow and Keras
    altogether.
    """
    key = f"_step_{precision}"
    if key not in backbone.__dict__:
        fast = _tflite_featurizer(backbone, precision=precision)
        if fast is None and precision != "float32":
            raise RuntimeError(f"{precision} inference needs the TFLite fast path "
                               "(DEEP_FEATURES_FAST is off or TFLite is unavailable): "
                               "use precision='float32'")
        backbone.__dict__[key] = fast or _keras_step(backbone)
    return backbone.__dict__[key]


def _progress(total: int, description: str, enabled: bool | None):
    from tqdm import tqdm

    show = enabled if enabled is not None else total >= 512
    # In a notebook every update is a new output line: update rarely there, often in a terminal.
    interval = 1.0 if sys.stderr.isatty() else 10.0
    return tqdm(total=total, desc=description, unit="img", disable=not show, file=sys.stderr,
                mininterval=interval)


def _array_cache_path(images_hash: str, backbone: _BackboneHandle,
                     precision: str = "float32") -> Path:
    """Where the features of an image array (by its :func:`_array_hash`) are cached."""
    return _entry_path("features", backbone.name, backbone.weights_id, backbone.input_size,
                      precision,
                      content=images_hash, label="array", suffix=".npz")


def _load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in keys}


def _array_hash(images: np.ndarray) -> str:
    """Content hash of an image array (shape, dtype and pixels).

    Used by :mod:`utils.fine_tuning` (lesson 8); no lesson calls it.
    """
    digest = hashlib.sha256(f"{images.shape}{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def featurize_images(images: np.ndarray, backbone: str = _DEFAULT_BACKBONE,
                     image_size: int | None = None,
                     batch_size: int = _DEFAULT_BATCH_SIZE, use_cache: bool = True,
                     progress: bool | None = None, precision: str | None = None,
                     weights: str | None = "imagenet") -> np.ndarray:
    """Deep features of RGB images (N, H, W, 3) uint8 -> (N, feature_dim) float32, resized on the
    fly.

    ``image_size`` defaults to the backbone's native size. Served from the disk cache when the same
    images were featurized before with the same backbone, weights, size and precision. ``precision``
    (default ``$DEEP_FEATURES_PRECISION`` or ``"float32"``): see
    :func:`utils.fast_inference.resolve_precision`. ``weights``: ``"imagenet"``, or ``None`` for a
    keras.applications network's random weights (see :func:`utils.backbones.load_backbone`).

    Used in lessons 3 to 9.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (0-255), got {images.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    # resolved once, passed down; builds no Keras model
    bb = _backbone_handle(backbone, image_size, weights)
    precision = resolve_precision(precision)
    path = _array_cache_path(_array_hash(images), bb, precision) if use_cache else None
    if path is not None:
        def read(p: Path) -> np.ndarray:
            found = _load_npz(p, ("features",))["features"]
            if found.shape != (len(images), bb.feature_dim):
                raise ValueError(f"shape {found.shape}, expected {(len(images), bb.feature_dim)}")
            return found

        cached = _read_entry(path, read, "feature")
        if cached is not None:
            return cached
    step = _inference_step(bb, precision)
    out = np.empty((len(images), bb.feature_dim), dtype=np.float32)
    with _progress(len(images), f"{bb.name} {bb.input_size}px", progress) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            out[start : start + len(batch)] = np.asarray(step(batch))
            bar.update(len(batch))
    if path is not None:
        _write_entry(path, lambda f: np.savez(f, features=out))
    return out


@dataclass
class _Chunk:
    """One chunk of files on its way through the pipeline: cached results, or decoded images to
    featurize."""

    start: int
    count: int
    content_key: str
    index_file: Path
    cached: dict[str, np.ndarray] | None = None
    # (position in chunk, pixels)
    images: list[tuple[int, np.ndarray]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (position in chunk, reason)


class _ChunkCache:
    """Where chunks live: ``features/chunks/`` (by content) and their stat index
    ``features/index/``."""

    def __init__(self, backbone: _BackboneHandle, precision: str) -> None:
        self.backbone, self.precision = backbone, precision

    def _path(self, kind: str, content: str, suffix: str) -> Path:
        bb = self.backbone
        return _entry_path(kind, bb.name, bb.weights_id, bb.input_size, self.precision,
                          content=content,
                          suffix=suffix)

    def stat_key(self, paths: Sequence[Path]) -> str:
        stats: list[object] = []
        for p in paths:
            try:
                st = p.stat()
                stats.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                stats.append([str(p), None])
        return _content_hash(json.dumps(stats))

    def content_key(self, digests: Sequence[str]) -> str:
        return _content_hash(json.dumps(list(digests)))

    def index_file(self, stat_key: str) -> Path:
        return self._path("features/index", stat_key, ".txt")

    def chunk_file(self, content_key: str) -> Path:
        return self._path("features/chunks", content_key, ".npz")

    def read(self, content_key: str, count: int, dim: int | None) -> dict[str, np.ndarray] | None:
        def read_consistent(path: Path) -> dict[str, np.ndarray]:
            arrays = _load_npz(path, ("features", "kept", "skipped", "reasons"))
            n_kept = len(arrays["kept"])
            if not (arrays["features"].ndim == 2 and arrays["features"].shape[0] == n_kept
                    and n_kept + len(arrays["skipped"]) == count
                    and (dim is None or arrays["features"].shape[1] == dim)):
                raise ValueError("it does not match its files")
            return arrays

        return _read_entry(self.chunk_file(content_key), read_consistent, "feature")

    def write(self, chunk: _Chunk, features: np.ndarray, kept: list[int]) -> dict[str, np.ndarray]:
        arrays = {"features": features, "kept": np.asarray(kept, dtype=np.int64),
                  "skipped": np.asarray([i for i, _ in chunk.skipped], dtype=np.int64),
                  "reasons": np.asarray([r for _, r in chunk.skipped], dtype=str)}
        _write_entry(self.chunk_file(chunk.content_key), lambda f: np.savez(f, **arrays))
        _write_entry(chunk.index_file, chunk.content_key)
        return arrays


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


def _prepare_chunk(cache: _ChunkCache | None, paths: Sequence[Path], start: int, size: int,
                   dim: int | None) -> _Chunk:
    """Find a chunk in the cache (by stat, then by content), else read and decode its files."""
    stat_key = cache.stat_key(paths) if cache is not None else ""
    index_file = cache.index_file(stat_key) if cache is not None else Path()
    indexed_key = ""  # the content key the stat index pointed to, already tried
    if cache is not None and index_file.exists():
        try:
            content_key = index_file.read_text().strip()
        except OSError:
            content_key = ""
        cached = cache.read(content_key, len(paths), dim) if content_key else None
        if cached is not None:
            return _Chunk(start, len(paths), content_key, index_file, cached=cached)
        indexed_key = content_key
    contents = [_read_file(p) for p in paths]
    digests = [hashlib.sha256(c).hexdigest() if isinstance(c, bytes) else f"unreadable:{c}"
               for c in contents]
    content_key = cache.content_key(digests) if cache is not None else ""
    # a corrupt entry is reported once, not twice
    if cache is not None and content_key != indexed_key:
        cached = cache.read(content_key, len(paths), dim)
        if cached is not None:
            _write_entry(index_file, content_key)
            return _Chunk(start, len(paths), content_key, index_file, cached=cached)
    chunk = _Chunk(start, len(paths), content_key, index_file)
    for i, (path, content) in enumerate(zip(paths, contents)):
        if isinstance(content, str):
            chunk.skipped.append((i, content))
            continue
        try:
            chunk.images.append((i, load_image(data=content, size=size)))
        except _ImageLoadError as exc:
            chunk.skipped.append((i, exc.reason))
    return chunk


def _chunks_ahead(cache: _ChunkCache | None, paths: Sequence[Path], size: int, dim: int | None,
                  chunk_files: int) -> Iterator[_Chunk]:
    """Chunks decoded in a background thread, at most :data:`_MAX_CHUNKS_AHEAD` ahead of the
    consumer."""
    ready: queue.Queue = queue.Queue(maxsize=_MAX_CHUNKS_AHEAD)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for start in range(0, len(paths), chunk_files):
                if not put(_prepare_chunk(cache, paths[start : start + chunk_files], start,
                                          size, dim)):
                    return
            put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=produce, name="featurize-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def featurize_files(paths: Sequence[str | Path], backbone: str = _DEFAULT_BACKBONE,
                    image_size: int | None = None,
                    batch_size: int = _DEFAULT_BATCH_SIZE, use_cache: bool = True,
                    progress: bool | None = None, precision: str | None = None,
                    on_chunk: Callable[[int, int], None] | None = None,
                    chunk_files: int = _CHUNK_FILES,
                    weights: str | None = "imagenet") -> FileFeatures:
    """Deep features of image files. Unreadable files are skipped and listed with the reason, never
    fatal.

    Images are loaded upright, converted to RGB and resized to ``image_size`` (default: the
    backbone's own). Work is done and cached in chunks of ``chunk_files`` files: an interrupted run
    resumes where it stopped (the progress bar counts the resumed files), and a rerun on unchanged
    files (same path, size and modification time) reads no image. Memory is bounded: at most
    ``_MAX_CHUNKS_AHEAD + 2`` chunks of decoded images exist at once, ``4 x 256 x 224 x 224 x 3``
    bytes = 154 MB at 224 px, whatever the number of files (plus the output matrix, 5 kB per file
    for 1280 features).

    ``precision``: ``"float32"`` (default) or ``"int8"``, see
    :func:`utils.fast_inference.resolve_precision`. ``on_chunk(done, total)`` is called after every
    chunk (files done so far, including resumed ones). Skipped files are in the result's ``skipped``
    list (the command line prints them). ``weights``: as in :func:`featurize_images`.

    Used in lesson 9.
    """
    paths = [Path(p) for p in paths]
    if batch_size < 1 or chunk_files < 1:
        raise ValueError(f"batch_size and chunk_files must be positive, "
                         f"got {batch_size} and {chunk_files}")
    # resolved once, passed down; builds no Keras model
    bb = _backbone_handle(backbone, image_size, weights)
    size, dim = bb.input_size, bb.feature_dim
    precision = resolve_precision(precision)
    cache = _ChunkCache(bb, precision) if use_cache else None
    # One output matrix filled in place (concatenating chunks at the end would hold every feature
    # twice).
    out = np.empty((len(paths), dim), dtype=np.float32)
    kept_idx: list[int] = []
    skipped: list[tuple[int, str]] = []
    step = None
    resumed = 0
    with _progress(len(paths), f"{bb.name} {size}px", progress) as bar:
        for chunk in _chunks_ahead(cache, paths, size, dim, chunk_files):
            if chunk.cached is not None:
                arrays = chunk.cached
                resumed += chunk.count
                bar.set_postfix_str(f"{resumed} from cache", refresh=False)
            else:
                if step is None:  # Keras is built only if a conversion is needed
                    step = _inference_step(bb, precision)
                good = chunk.images
                features = np.empty((len(good), dim), dtype=np.float32)
                for s in range(0, len(good), batch_size):
                    batch = np.stack([x for _, x in good[s : s + batch_size]])
                    features[s : s + len(batch)] = np.asarray(step(batch))
                    bar.update(len(batch))
                bar.update(len(chunk.skipped))
                kept = [i for i, _ in good]
                chunk.images = good = []  # free the pixels before the next chunk is taken
                if cache is not None:
                    arrays = cache.write(chunk, features, kept)
                else:
                    arrays = {"features": features, "kept": np.asarray(kept, dtype=np.int64),
                              "skipped": np.asarray([i for i, _ in chunk.skipped], dtype=np.int64),
                              "reasons": np.asarray([r for _, r in chunk.skipped], dtype=str)}
            if chunk.cached is not None:
                bar.update(chunk.count)
            n_kept = len(kept_idx)
            out[n_kept : n_kept + len(arrays["kept"])] = arrays["features"]
            kept_idx += [chunk.start + int(i) for i in arrays["kept"]]
            skipped += [(chunk.start + int(i), str(r))
                        for i, r in zip(arrays["skipped"], arrays["reasons"])]
            if on_chunk is not None:
                on_chunk(chunk.start + chunk.count, len(paths))
    features = out[: len(kept_idx)]  # a view: no copy when files were skipped
    return FileFeatures(features, [paths[i] for i in kept_idx],
                        [(paths[i], r) for i, r in skipped])
