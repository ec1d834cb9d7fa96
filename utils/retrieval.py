"""Nearest-neighbour search on features, and the per-class distance evaluation of the course.

All distances are Euclidean, as in the original course.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors


def nearest_neighbors(queries: np.ndarray, collection: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``collection`` for every row of ``queries``: (distances, indices), both (Q, k)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    collection = np.asarray(collection, dtype=np.float32)
    if len(collection) == 0:
        raise ValueError("the collection is empty: nothing to search")
    if queries.shape[1] != collection.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} features, the collection {collection.shape[1]}: "
                         "featurize both with the same backbone")
    k = min(k, len(collection))
    index = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(collection)
    distances, indices = index.kneighbors(queries)
    return distances.astype(np.float32), indices


def class_distance_table(queries: np.ndarray, collection: np.ndarray, collection_labels: np.ndarray,
                         class_names: Sequence[str], query_class: str, k: int = 1) -> pd.DataFrame:
    """One nearest-neighbour model per class: the mean distance from each query to its ``k`` nearest of each class.

    Columns are named ``"<query_class>-<class>"`` (``dog-automobile``, ``dog-bird``, ...), one row per query.
    """
    columns = {}
    for i, name in enumerate(class_names):
        members = collection[np.asarray(collection_labels) == i]
        distances, _ = nearest_neighbors(queries, members, k=k)
        columns[f"{query_class}-{name}"] = distances.mean(axis=1)
    table = pd.DataFrame(columns)
    table.attrs["query_class"] = query_class  # so nearest_class can split names that contain "-" themselves
    return table


def nearest_class(table: pd.DataFrame) -> pd.Series:
    """For a :func:`class_distance_table`, the class whose nearest example is closest, for each query."""
    nearest = table.idxmin(axis=1)
    query_class = table.attrs.get("query_class")
    if query_class is not None:
        return nearest.str[len(query_class) + 1 :]
    return nearest.str.split("-", n=1).str[1]


def one_nn_predict(queries: np.ndarray, collection: np.ndarray, collection_labels: np.ndarray) -> np.ndarray:
    """1-nearest-neighbour classification: the label of the closest collection row."""
    _, indices = nearest_neighbors(queries, collection, k=1)
    return np.asarray(collection_labels)[indices[:, 0]]


@dataclass
class SimilarImage:
    """A search result: a file and its distance to the query."""

    path: Path
    distance: float


def find_similar(query: str | Path, folder: str | Path, top: int = 5, backbone: str | None = None,
                 image_size: int | None = None, progress: bool | None = None) -> tuple[list[SimilarImage], list]:
    """The ``top`` images in ``folder`` (searched recursively) closest to the ``query`` image file.

    The folder's features are cached, so a second query against the same folder is instant. Returns the results
    and the folder's skipped (unreadable) files with reasons.
    """
    from .backbones import DEFAULT_BACKBONE
    from .data import ImageLoadError, list_images
    from .features import featurize_files

    backbone = backbone or DEFAULT_BACKBONE
    files = list_images(folder)
    query = Path(query).resolve()
    files = [f for f in files if f.resolve() != query]  # the query itself is not an answer
    if not files:
        raise ValueError(f"{folder}: no image files to search")
    collection = featurize_files(files, backbone, image_size, progress=progress)
    if len(collection.paths) == 0:
        raise ValueError(f"{folder}: none of the {len(files)} image files could be read")
    found = featurize_files([query], backbone, image_size, use_cache=False, progress=False)
    if found.skipped:
        raise ImageLoadError(*found.skipped[0])
    distances, indices = nearest_neighbors(found.features, collection.features, k=top)
    results = [SimilarImage(collection.paths[i], float(d)) for d, i in zip(distances[0], indices[0])]
    return results, collection.skipped
