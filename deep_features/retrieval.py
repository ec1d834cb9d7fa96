"""Search a folder of image files, or an index of one, for the images nearest to a query image
(``deep-features similar``): the lessons' nearest-neighbour search with the folder's features
cached. A folder and an index of it give the same answers: by cosine distance (1 - cosine
similarity, lesson 4's better metric) by default, or Euclidean distance (an index: its own metric).
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from utils.backbones import load_backbone
from utils.data import list_images
from utils.fast_inference import resolve_precision
from utils.features import featurize_files

from . import DEFAULT_BACKBONE
from .index import METRIC, SearchIndex, check_metric


def _nearest(query: np.ndarray, collection: np.ndarray, k: int,
             metric: str = METRIC) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest collection rows to each query row: (distances, indices), both (Q, k)."""
    k = min(k, len(collection))
    index = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=check_metric(metric))
    return index.fit(collection).kneighbors(np.atleast_2d(query))


def _distance(score: float, metric: str) -> float:
    """A faiss score as a distance, never below 0 (never printed as -0.000)."""
    distance = 1.0 - float(score) if metric == "cosine" else math.sqrt(max(0.0, float(score)))
    return max(0.0, distance)


@dataclass
class SimilarImage:
    """A search result: a file and its distance to the query."""
    path: Path
    distance: float


@dataclass
class Search:
    """A search of a folder or of an index: the results and what was searched."""
    query: Path
    results: list[SimilarImage]
    top: int  # the number of results asked for
    metric: str
    backbone: str
    image_size: int
    precision: str
    source: str  # "folder" or "index"
    searched: int  # the images in the folder (readable ones) or in the index, the query's file too
    kind: str = "exact"  # an index's: "exact" or "hnsw"
    query_in_source: bool = False  # the query is one of the files searched (it is left out)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def header(self) -> str:
        """``# cosine distance, efficientnet_lite0 at 224 px, folder of 400 images``."""
        kind = f" ({self.kind})" if self.source == "index" else ""
        return (f"# {self.metric} distance, {self.backbone} at {self.image_size} px, "
                f"{self.source} of {self.searched} images{kind}")

    def shortfall(self) -> str | None:
        """Why there are fewer results than asked (None when there are not)."""
        found = len(self.results)
        if found >= self.top:
            return None
        others = self.searched - self.query_in_source
        if found < others:  # only an approximate search misses images it holds
            return (f"the HNSW graph returned {found} of the {self.top} asked: an approximate "
                    "index may not reach every image; build it with --kind exact to rank them all")
        besides = " besides the query" if self.query_in_source else ""
        noun = "image" if others == 1 else "images"
        return f"only {others} {noun} in the {self.source}{besides}, not the {self.top} asked"

    def as_json(self) -> dict:
        return {"metric": self.metric, "backbone": self.backbone, "image_size": self.image_size,
                "precision": self.precision, "source": self.source, "searched": self.searched,
                "query": str(self.query),
                "results": [{"rank": rank, "path": str(r.path), "distance": r.distance}
                            for rank, r in enumerate(self.results, 1)]}


def _checked_top(top: int) -> int:
    if int(top) < 1:
        raise ValueError(f"the number of results must be at least 1, got {top}")
    return int(top)


def search_folder(query: str | Path, folder: str | Path, top: int = 5, backbone: str | None = None,
                  image_size: int | None = None, progress: bool | None = None,
                  precision: str | None = None, metric: str = METRIC) -> Search:
    """The ``top`` images under ``folder`` (not the query file) closest to the ``query`` file."""
    top, metric = _checked_top(top), check_metric(metric)
    spec = load_backbone(backbone or DEFAULT_BACKBONE).spec
    all_files = list_images(folder)
    query = Path(query).resolve()
    files = [f for f in all_files if f.resolve() != query]  # the query itself is not an answer
    if not files:
        raise ValueError(f"{folder}: no image files to search")
    collection = featurize_files(files, spec.name, image_size, progress=progress,
                                 precision=precision)
    if len(collection.paths) == 0:
        raise ValueError(f"{folder}: none of the {len(files)} image files could be read")
    found = featurize_files([query], spec.name, image_size, use_cache=False, progress=False,
                            precision=precision)
    if found.skipped:
        raise ValueError("{}: {}".format(*found.skipped[0]))  # as load_image says
    distances, indices = _nearest(found.features, collection.features, top, metric)
    results = [SimilarImage(collection.paths[i], max(0.0, float(d)))
               for d, i in zip(distances[0], indices[0])]
    query_in_folder = len(files) < len(all_files)
    return Search(query, results, top, metric, spec.name, int(image_size or spec.input_size),
                  resolve_precision(precision), "folder", len(collection.paths) + query_in_folder,
                  query_in_source=query_in_folder, skipped=list(collection.skipped))


def search_index(query: str | Path, index: str | Path | SearchIndex, top: int = 5,
                 backbone: str | None = None, image_size: int | None = None,
                 precision: str | None = None, metric: str | None = None) -> Search:
    """The ``top`` indexed images (not the query file) closest to the ``query`` file, featurized
    with the index's settings (others: :class:`~deep_features.index.IndexSettingsError`)."""
    top = _checked_top(top)
    index = index if isinstance(index, SearchIndex) else SearchIndex.load(index)
    settings = index.settings.asked(index.folder, backbone, image_size, precision, metric)
    found = featurize_files([query], settings.backbone, settings.image_size, use_cache=False,
                            progress=False, precision=settings.precision)
    if found.skipped:
        raise ValueError("{}: {}".format(*found.skipped[0]))  # as load_image says
    scores, rows = index.search(found.features, top + 1, settings)
    query = Path(query).resolve()
    hits = [(index.paths[r], score) for score, r in zip(scores[0], rows[0]) if r >= 0]
    results = [SimilarImage(path, _distance(score, settings.metric)) for path, score in hits
               if path.resolve() != query]  # the query itself is not an answer
    return Search(query, results[:top], top, settings.metric, settings.backbone,
                  settings.image_size, settings.precision, "index", len(index), index.kind,
                  query_in_source=len(results) < len(hits))

