"""Search a large collection: a faiss index at 10^4 and 10^5 images, and featurization on Dask.

    python benchmarks/index.py [--data-dir DIR] [--sizes 10000 100000] [--image-size 96] [--json out.json]
    python benchmarks/index.py --tiny          # seconds, on tests/data/cifar10-4class-small

The collection is made of real photos: every course image of the data folder (``--data-dir``, else
``$DEEP_FEATURES_DATA``, else the repository's ``data/cifar10``) and augmented variants of it (a horizontal flip,
random crops resized back, flipped crops), shuffled with a fixed seed. ``--queries`` of these variants are held
out as queries (so a query's own flip or crop may be in the collection, as in a real photo library). Features are
EfficientNet-Lite0 features at ``--image-size`` px (96 by default, not the native 224, so that 10^5 images are
affordable on 2 shared cores), computed with ``utils.features.featurize_images`` in cached blocks.

For each size and each index kind (``exact``: faiss ``IndexFlatIP``; ``hnsw``: ``IndexHNSWFlat``; ``ivfpq``:
``IndexIVFPQ``, for the comparison), it reports the build seconds (CPU and wall), recall@10 against exact search
(the share of the exact 10 nearest found), query latency p50 / p95 over one query at a time on one thread
(``faiss.omp_set_num_threads(1)``), and the index's memory per vector (its serialized size / count).

Featurization throughput: the same folder of JPEG files featurized (feature cache off, so every run computes)
by the single-process path (``featurize_files``), then on a Dask ``LocalCluster`` with 1 and 2 workers
(``utils.dask_features``), each run after a warm-up, in the same process; features compared bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from utils import data, features  # noqa: E402

TINY_DATA = REPO / "tests" / "data" / "cifar10-4class-small"
BLOCK = 4096  # images per cached featurize_images call: a kill loses at most one block


def data_dir(arg: str | None) -> Path:
    for candidate in (arg, os.environ.get(data.DATA_ENV_VAR), REPO / "data" / "cifar10"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise SystemExit("no data folder: pass --data-dir DIR or set DEEP_FEATURES_DATA")


def load_photos(folder: Path) -> np.ndarray:
    """Every image file under ``folder`` as 32x32 RGB (the course images' size)."""
    return np.stack([data.load_image(p, size=32) for p in data.list_images(folder)])


def variant(image: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """Variant ``kind`` of a 32x32 photo: 0 itself, 1 its mirror, 2-3 a random crop (of 22-28 px) resized back,
    4 a mirrored crop."""
    if kind == 0:
        return image
    if kind == 1:
        return image[:, ::-1]
    side = int(rng.integers(22, 29))
    top, left = (int(v) for v in rng.integers(0, 32 - side + 1, size=2))
    crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    out = np.asarray(crop.resize((32, 32), Image.Resampling.BILINEAR))
    return out[:, ::-1] if kind == 4 else out


def collection(photos: np.ndarray, total: int, seed: int = 0) -> np.ndarray:
    """``total`` distinct (photo, variant) pairs in a seeded random order, as pixels (total, 32, 32, 3)."""
    pairs = len(photos) * 5
    if total > pairs:
        raise SystemExit(f"{len(photos)} photos give {pairs} variants, fewer than {total}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(pairs)[:total]
    return np.stack([variant(photos[c // 5], int(c % 5), rng) for c in chosen])


def featurize(images: np.ndarray, image_size: int, log) -> np.ndarray:
    """Features of ``images`` in cached blocks of :data:`BLOCK` (a rerun reads them back)."""
    out = np.empty((len(images), 1280), np.float32)
    start = time.perf_counter()
    for s in range(0, len(images), BLOCK):
        out[s:s + BLOCK] = features.featurize_images(images[s:s + BLOCK], image_size=image_size, progress=False)
        log(f"  featurized {min(s + BLOCK, len(images))}/{len(images)} ({time.perf_counter() - start:.0f} s)")
    return out
