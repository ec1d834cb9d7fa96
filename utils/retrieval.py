"""Search a folder of image files, or an index of one, for the images nearest to a query image
(``python -m utils similar``).

The lessons write the nearest-neighbour search in their cells with scikit-learn's ``NearestNeighbors`` (and
lesson 8 with faiss); this is the same search packaged for the command line, with the folder's features cached.
Distances are Euclidean in a folder, cosine distances (1 - cosine similarity) in an index (:mod:`utils.index`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from .backbones import DEFAULT_BACKBONE
from .data import ImageLoadError, list_images
from .features import featurize_files
from .index import IndexSettings, SearchIndex


def _nearest(query: np.ndarray, collection: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest collection rows to each query row (Euclidean): (distances, indices), both (Q, k)."""
    k = min(k, len(collection))
    index = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(collection)
    return index.kneighbors(np.atleast_2d(query))


@dataclass
class SimilarImage:
    """A search result: a file and its distance to the query."""

    path: Path
    distance: float


def find_similar(query: str | Path, folder: str | Path, top: int = 5, backbone: str | None = None,
                 image_size: int | None = None, progress: bool | None = None,
                 precision: str | None = None) -> tuple[list[SimilarImage], list]:
    """The ``top`` images in ``folder`` (searched recursively) closest to the ``query`` image file.

    The folder's features are cached, so a second query against the same folder is instant. Returns the results
    and the folder's skipped (unreadable) files with reasons. ``precision`` is as in
    :func:`~utils.features.featurize_files`.
    """
    backbone = backbone or DEFAULT_BACKBONE
    files = list_images(folder)
    query = Path(query).resolve()
    files = [f for f in files if f.resolve() != query]  # the query itself is not an answer
    if not files:
        raise ValueError(f"{folder}: no image files to search")
    collection = featurize_files(files, backbone, image_size, progress=progress, precision=precision)
    if len(collection.paths) == 0:
        raise ValueError(f"{folder}: none of the {len(files)} image files could be read")
    found = featurize_files([query], backbone, image_size, use_cache=False, progress=False, precision=precision)
    if found.skipped:
        raise ImageLoadError(*found.skipped[0])
    distances, indices = _nearest(found.features, collection.features, k=top)
    results = [SimilarImage(collection.paths[i], float(d)) for d, i in zip(distances[0], indices[0])]
    return results, collection.skipped


def find_similar_in_index(query: str | Path, index: str | Path | SearchIndex, top: int = 5,
                          backbone: str | None = None, image_size: int | None = None,
                          precision: str | None = None) -> list[SimilarImage]:
    """The ``top`` indexed images closest to the ``query`` image file, from an index folder (``python -m utils
    index``); distances are cosine distances. The query is featurized with the index's settings; a ``backbone``,
    ``image_size`` or ``precision`` given and different from the index's raises
    :class:`~utils.index.IndexSettingsError`, as do weights changed since the index was built.
    """
    index = index if isinstance(index, SearchIndex) else SearchIndex.load(index)
    built = index.settings
    settings = IndexSettings.of(backbone or built.backbone, image_size or built.image_size,
                                precision or built.precision)
    built.check(settings, index.folder)
    found = featurize_files([query], settings.backbone, settings.image_size, use_cache=False, progress=False,
                            precision=settings.precision)
    if found.skipped:
        raise ImageLoadError(*found.skipped[0])
    similarities, rows = index.search(found.features, top + 1, settings)
    query = Path(query).resolve()
    results = [SimilarImage(index.paths[r], 1.0 - float(s)) for s, r in zip(similarities[0], rows[0])
               if r >= 0 and index.paths[r].resolve() != query]  # the query itself is not an answer
    return results[:top]
