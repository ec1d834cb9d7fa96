"""Batched featurization with a disk cache: images -> float32 deep-feature matrix.

The cache key is a hash of the images' content (pixels, or file bytes), the backbone and its weights, the image
size and :data:`FEATURE_FORMAT`; entries are written atomically, so a re-run or another notebook pays nothing and a
changed parameter never reads stale features.
"""

from __future__ import annotations

import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .backbones import DEFAULT_BACKBONE, Backbone, get_spec, load_backbone, weights_fingerprint
from .data import ImageLoadError, load_image
from .fast_inference import keras_step, tflite_featurizer
from .runtime import atomic_write, cache_root

FEATURE_FORMAT = 1  # bump when preprocessing or resizing changes, to invalidate every cached feature
DEFAULT_BATCH_SIZE = 64


@dataclass
class FileFeatures:
    """Features of the readable files among ``paths``; ``skipped`` lists the others with the reason."""

    features: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _inference_step(backbone: Backbone) -> Callable[[np.ndarray], np.ndarray]:
    """The step uint8 images (N, h, w, 3) -> features (N, dim), resizing to the model's size when needed.

    The fast path is the model converted to float32 TFLite and run by XNNPACK (:mod:`utils.fast_inference`, about
    twice TensorFlow's speed on a small CPU, same features to ~1e-5); the fallback a tf.function around the model.
    """
    if "_step" not in backbone.__dict__:
        backbone.__dict__["_step"] = tflite_featurizer(backbone) or keras_step(backbone)
    return backbone.__dict__["_step"]


def _progress(total: int, description: str, enabled: bool | None):
    from tqdm import tqdm

    show = enabled if enabled is not None else total >= 512
    # In a notebook every update is a new output line: update rarely there, often in a terminal.
    interval = 1.0 if sys.stderr.isatty() else 10.0
    return tqdm(total=total, desc=description, unit="img", disable=not show, file=sys.stderr, mininterval=interval)


def _cache_path(kind: str, content_hash: str, backbone: str, size: int) -> Path:
    key = hashlib.sha256(
        json.dumps([FEATURE_FORMAT, kind, content_hash, weights_fingerprint(backbone), size]).encode()
    ).hexdigest()[:24]
    return cache_root() / "features" / f"{get_spec(backbone).name}-{size}px-{kind}-{key}.npz"


def _atomic_save(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def array_hash(images: np.ndarray) -> str:
    """Content hash of an image array (shape, dtype and pixels)."""
    digest = hashlib.sha256(f"{images.shape}{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def featurize_images(images: np.ndarray, backbone: str = DEFAULT_BACKBONE, image_size: int | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, use_cache: bool = True,
                     progress: bool | None = None) -> np.ndarray:
    """Deep features of RGB images (N, H, W, 3) uint8 -> (N, feature_dim) float32, resized on the fly.

    ``image_size`` defaults to the backbone's native size. Served from the disk cache when the same images were
    featurized before with the same backbone, weights and size.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (0-255), got {images.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    spec = get_spec(backbone)
    size = int(image_size or spec.input_size)
    path = _cache_path("array", array_hash(images), spec.name, size) if use_cache else None
    if path is not None and path.exists():
        return np.load(path)["features"]
    bb = load_backbone(spec.name, size)
    step = _inference_step(bb)
    out = np.empty((len(images), bb.feature_dim), dtype=np.float32)
    with _progress(len(images), f"{spec.name} {size}px", progress) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            out[start : start + len(batch)] = np.asarray(step(batch))
            bar.update(len(batch))
    if path is not None:
        _atomic_save(path, features=out)
    return out


def _load_batches(paths: Sequence[Path], size: int, batch_size: int) -> Iterator[list[tuple[int, np.ndarray | str]]]:
    """Decode images in a background thread while the model runs; yields (index, pixels-or-error) lists."""
    def load(i: int) -> tuple[int, np.ndarray | str]:
        try:
            return i, load_image(paths[i], size=size)
        except ImageLoadError as exc:
            return i, str(exc)

    with ThreadPoolExecutor(max_workers=2) as pool:
        chunks = [range(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size)]
        pending = pool.map(lambda chunk: [load(i) for i in chunk], chunks)
        yield from pending


def featurize_files(paths: Sequence[str | Path], backbone: str = DEFAULT_BACKBONE, image_size: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, use_cache: bool = True,
                    progress: bool | None = None) -> FileFeatures:
    """Deep features of image files. Unreadable files are skipped and reported, never fatal.

    Images are loaded upright, converted to RGB and resized to ``image_size`` (default: the backbone's own).
    """
    paths = [Path(p) for p in paths]
    spec = get_spec(backbone)
    size = int(image_size or spec.input_size)
    cache_file = None
    if use_cache:
        digest = hashlib.sha256()
        for p in paths:
            digest.update(str(p.name).encode())
            digest.update(hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"missing")
        cache_file = _cache_path("files", digest.hexdigest(), spec.name, size)
        if cache_file.exists():
            cached = np.load(cache_file)
            kept = [paths[i] for i in cached["kept"]]
            skipped = [(paths[i], str(r)) for i, r in zip(cached["skipped"], cached["reasons"])]
            return FileFeatures(cached["features"], kept, skipped)
    bb = load_backbone(spec.name, size)
    step = _inference_step(bb)
    features = np.empty((len(paths), bb.feature_dim), dtype=np.float32)
    kept_idx: list[int] = []
    skipped: list[tuple[int, str]] = []
    with _progress(len(paths), f"{spec.name} {size}px", progress) as bar:
        for chunk in _load_batches(paths, size, batch_size):
            good = [(i, x) for i, x in chunk if isinstance(x, np.ndarray)]
            skipped += [(i, x) for i, x in chunk if isinstance(x, str)]
            if good:
                features[len(kept_idx) : len(kept_idx) + len(good)] = np.asarray(step(np.stack([x for _, x in good])))
                kept_idx += [i for i, _ in good]
            bar.update(len(chunk))
    features = features[: len(kept_idx)]
    for i, reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    if cache_file is not None:
        _atomic_save(cache_file, features=features, kept=np.asarray(kept_idx, dtype=np.int64),
                     skipped=np.asarray([i for i, _ in skipped], dtype=np.int64),
                     reasons=np.asarray([r for _, r in skipped], dtype=str))
    return FileFeatures(features, [paths[i] for i in kept_idx], [(paths[i], r) for i, r in skipped])
