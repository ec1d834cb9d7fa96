"""A faiss index of a folder's deep features, on disk: build it once, update it, query it in milliseconds.

An index folder holds ``index.json`` (the settings it was built with: backbone, weights id, image size, precision,
metric, index kind; and the names of the current files), the faiss index, the features and the indexed files with
their size and modification time. Cosine similarity (the default metric) is the inner product of
L2-normalized features, so the exact index is ``faiss.IndexFlatIP``; a Euclidean index holds the raw
features in ``faiss.IndexFlatL2``. Above :data:`EXACT_MAX_IMAGES` images, the default is an HNSW
graph (``faiss.IndexHNSWFlat``), which answers in about a millisecond at 10^5 images with recall@10
close to 1 (``benchmarks/index.py``; IVF-PQ took far less memory but missed more of the true
neighbours).

Updating (:func:`build_index` on a folder indexed before) featurizes only the files that are new or changed; a
kill loses nothing: the features are cached chunk by chunk while they are computed, and the index folder's files
are written under new names before ``index.json`` switches to them in one atomic step.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .backbones import DEFAULT_BACKBONE, get_spec, weights_fingerprint
from .data import list_images
from .fast_inference import resolve_precision
from .features import featurize_files
from .runtime import atomic_write

INDEX_LAYOUT_VERSION = 1  # of the index folder the user keeps (not a cache entry): bump when its layout changes
INDEX_KINDS = ("auto", "exact", "hnsw")
EXACT_MAX_IMAGES = 20_000  # "auto": exact up to here: ~0.41 ms of CPU per 1000 images per query (one thread)
HNSW_M = 32  # graph neighbours per vector: recall vs memory (benchmarks/index.py)
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 64  # candidates kept per query: recall vs query time
METRICS = ("cosine", "euclidean")  # inner products of unit vectors, or L2 on the raw features
METRIC = "cosine"  # the default: lesson 4 measures it as the better of the two on deep features


class IndexSettingsError(ValueError):
    """A query or an update asked an index for other settings (backbone, weights, size, precision,
    metric) than its own."""


@dataclass(frozen=True)
class IndexSettings:
    """What an index's features are: they must match a query's for the search to mean anything."""

    backbone: str
    weights: str
    image_size: int
    precision: str
    metric: str = METRIC

    @classmethod
    def of(cls, backbone: str = DEFAULT_BACKBONE, image_size: int | None = None,
           precision: str | None = None, metric: str = METRIC) -> "IndexSettings":
        spec = get_spec(backbone)
        return cls(spec.name, weights_fingerprint(spec.name), int(image_size or spec.input_size),
                   resolve_precision(precision), check_metric(metric))

    def describe(self) -> str:
        return f"{self.backbone} ({self.weights}) at {self.image_size} px, {self.precision}, {self.metric}"

    def check(self, other: "IndexSettings", where: Path) -> None:
        """Raise :class:`IndexSettingsError`, naming every difference, unless ``other`` is the same."""
        differ = [f"{name} {getattr(other, name)} (index: {getattr(self, name)})"
                  for name in ("backbone", "weights", "image_size", "precision", "metric")
                  if getattr(self, name) != getattr(other, name)]
        if differ:
            raise IndexSettingsError(
                f"the index {where} was built with {self.describe()}; features with other settings cannot be "
                f"compared with it: {'; '.join(differ)}. Use the index's settings (leave the options out), or "
                "build a new index with --output elsewhere")


def choose_kind(kind: str, count: int) -> str:
    """The index kind to build for ``count`` images: ``kind``, or for ``"auto"`` exact up to
    :data:`EXACT_MAX_IMAGES`, HNSW above."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "exact" if count <= EXACT_MAX_IMAGES else "hnsw"


def check_metric(metric: str) -> str:
    """``metric`` if it is one of :data:`METRICS`, else a ValueError."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def normalized(features: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (a new float32 array): inner products are then cosine similarities."""
    import faiss

    rows = np.array(features, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(rows)
    return rows


def prepared(features: np.ndarray, metric: str = METRIC) -> np.ndarray:
    """The rows a ``metric`` index holds or is queried with (a new float32 array): L2-normalized for
    cosine, as they are for euclidean."""
    if check_metric(metric) == "cosine":
        return normalized(features)
    return np.array(features, dtype=np.float32, order="C", copy=True)


def new_faiss_index(kind: str, dim: int, metric: str = METRIC):
    """An empty faiss index of ``kind`` (``exact`` or ``hnsw``) of ``dim``-d vectors: for inner
    products (cosine, on :func:`prepared` rows) or squared L2 distances (euclidean)."""
    import faiss

    euclidean = check_metric(metric) == "euclidean"
    if kind == "exact":
        return faiss.IndexFlatL2(dim) if euclidean else faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        measure = faiss.METRIC_L2 if euclidean else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexHNSWFlat(dim, HNSW_M, measure)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    raise ValueError(f"unknown index kind {kind!r}")


@dataclass
class SearchIndex:
    """An index folder loaded: its settings, the faiss index and the indexed files, in the index's row order."""

    folder: Path
    settings: IndexSettings
    kind: str
    faiss_index: object
    paths: list[Path]

    @classmethod
    def load(cls, folder: str | Path) -> "SearchIndex":
        folder = Path(folder)
        meta = _read_meta(folder)
        if meta is None:
            raise FileNotFoundError(f"{folder}: not an index folder (no index.json); build one with "
                                    "python -m utils index FOLDER --output INDEX_DIR")
        import faiss

        index = faiss.read_index(str(folder / meta["files"]["index"]))
        if meta["kind"] == "hnsw":
            index.hnsw.efSearch = int(meta.get("ef_search", HNSW_EF_SEARCH))
        entries = json.loads((folder / meta["files"]["entries"]).read_text("utf-8"))
        return cls(folder, IndexSettings(**meta["settings"]), meta["kind"], index, [Path(e[0]) for e in entries])

    def __len__(self) -> int:
        return len(self.paths)

    def search(self, query_features: np.ndarray, k: int, settings: IndexSettings) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed images to each query row: (scores, rows), both (Q, k),
        nearest first. The scores are faiss's: cosine similarities for a cosine index, squared L2
        distances for a euclidean one.

        ``settings`` are the query features' own (their metric included); other settings than the
        index's raise :class:`IndexSettingsError`. An HNSW search keeps at least ``k`` candidates; a
        row of -1 is a neighbour the graph did not find.
        """
        self.settings.check(settings, self.folder)
        queries = prepared(np.atleast_2d(query_features), self.settings.metric)
        k = min(int(k), len(self))
        if k < 1:
            raise ValueError(f"the number of neighbours must be at least 1, got {k}")
        if self.kind == "hnsw" and k > self.faiss_index.hnsw.efSearch:
            import faiss

            wider = faiss.SearchParametersHNSW(efSearch=k)
            return self.faiss_index.search(queries, k, params=wider)
        return self.faiss_index.search(queries, k)


@dataclass
class IndexUpdate:
    """What :func:`build_index` did: the loaded index and the files added, removed, kept and skipped."""

    index: SearchIndex
    added: int
    removed: int
    kept: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    rebuilt: bool = True


def _read_meta(folder: Path) -> dict | None:
    path = folder / "index.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text("utf-8"))
    if meta.get("format") != INDEX_LAYOUT_VERSION:
        raise ValueError(f"{folder}: index format {meta.get('format')} is not this version's ({INDEX_LAYOUT_VERSION}); "
                         "build the index again into a new folder")
    return meta


def _built_metric(folder: Path) -> str:
    """The metric of the index in ``folder``, or the default for a new one."""
    meta = _read_meta(folder)
    return meta["settings"].get("metric", METRIC) if meta is not None else METRIC


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def build_index(folder: str | Path, output: str | Path, backbone: str = DEFAULT_BACKBONE,
                image_size: int | None = None, precision: str | None = None, kind: str = "auto", *,
                metric: str | None = None,
                workers: int | None = None, scheduler: str | None = None, progress: bool | None = None,
                report: bool = False, files: Sequence[str | Path] | None = None) -> IndexUpdate:
    """Index the images under ``folder`` into the folder ``output``, or update the index already there.

    Only files that are new or changed (size or modification time) since the last run are featurized; files
    gone from the folder leave the index. ``kind``: ``"exact"``, ``"hnsw"`` or ``"auto"`` (see
    :func:`choose_kind`). ``metric``: ``"cosine"`` or ``"euclidean"`` (default: the index's own on
    an update, else cosine). ``workers`` / ``scheduler`` run the featurization on Dask
    (:mod:`utils.dask_features`); default: this process. ``files`` replaces the folder listing (for a list of
    files). Unreadable files are skipped and named in the result (``report=True`` prints them, as ``featurize``
    does); they are tried again on the next update.
    """
    output = Path(output)
    settings = IndexSettings.of(backbone, image_size, precision, metric or _built_metric(output))
    paths = [Path(p).absolute() for p in (files if files is not None else list_images(folder))]
    meta = _read_meta(output)
    old_entries: list[list] = []
    old_features = np.empty((0, get_spec(backbone).feature_dim), np.float32)
    if meta is not None:
        IndexSettings(**meta["settings"]).check(settings, output)
        old_entries = json.loads((output / meta["files"]["entries"]).read_text("utf-8"))
        old_features = np.load(output / meta["files"]["features"], mmap_mode="r")
    stats = {p: _stat(p) for p in paths}
    unchanged = [row for row, (p, size, mtime) in enumerate(old_entries) if stats.get(Path(p)) == (size, mtime)]
    known = {Path(old_entries[row][0]) for row in unchanged}
    new = [p for p in paths if p not in known]
    if workers or scheduler:
        from .dask_features import featurize_files_on_dask

        found = featurize_files_on_dask(new, settings.backbone, settings.image_size, settings.precision,
                                        workers=workers, scheduler=scheduler, progress=progress, report=report)
    else:
        found = featurize_files(new, settings.backbone, settings.image_size, progress=progress,
                                precision=settings.precision, report=report)
    added_entries = [[str(p), *(stats[p] or (None, None))] for p in found.paths]
    entries = [old_entries[row] for row in unchanged] + added_entries
    if not entries:
        raise ValueError(f"{folder}: no readable image files to index ({len(found.skipped)} skipped)")
    removed = len(old_entries) - len(unchanged)
    chosen = choose_kind(kind, len(entries))
    import faiss

    # New files are added to the graph in place; a removed file or another kind means building it again.
    rebuilt = meta is None or removed > 0 or meta["kind"] != chosen
    if rebuilt:
        all_features = np.concatenate([np.asarray(old_features[unchanged]), found.features])
        faiss_index = new_faiss_index(chosen, all_features.shape[1], settings.metric)
        faiss_index.add(prepared(all_features, settings.metric))
    else:
        faiss_index = faiss.read_index(str(output / meta["files"]["index"]))
        if len(found.paths):
            faiss_index.add(prepared(found.features, settings.metric))
            all_features = np.concatenate([np.asarray(old_features), found.features])
    if rebuilt or len(found.paths):
        _write(output, settings, chosen, faiss_index, all_features, entries)
    if chosen == "hnsw":
        faiss_index.hnsw.efSearch = HNSW_EF_SEARCH
    index = SearchIndex(output, settings, chosen, faiss_index, [Path(e[0]) for e in entries])
    return IndexUpdate(index, len(found.paths), removed, len(unchanged), list(found.skipped), rebuilt)


def _write(output: Path, settings: IndexSettings, kind: str, faiss_index, features: np.ndarray,
           entries: list[list]) -> None:
    """Write a new generation of the index files, switch ``index.json`` to it, then delete the other ones
    (the previous generation, and any left by a killed run)."""
    import faiss

    output.mkdir(parents=True, exist_ok=True)
    generation = secrets.token_hex(4)
    files = {"index": f"index-{generation}.faiss", "features": f"features-{generation}.npy",
             "entries": f"files-{generation}.json"}
    # Unreferenced until index.json names them: these need no atomic write, index.json does.
    faiss.write_index(faiss_index, str(output / files["index"]))
    np.save(output / files["features"], np.ascontiguousarray(features, np.float32))
    (output / files["entries"]).write_text(json.dumps(entries), "utf-8")
    meta = {"format": INDEX_LAYOUT_VERSION, "settings": asdict(settings), "kind": kind, "count": len(entries),
            "dim": int(features.shape[1]), "files": files}
    if kind == "hnsw":
        meta.update(m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH)
    atomic_write(output / "index.json", json.dumps(meta, indent=2) + "\n")
    for pattern in ("index-*.faiss", "features-*.npy", "files-*.json"):
        for stale in output.glob(pattern):
            if stale.name not in files.values():
                stale.unlink(missing_ok=True)
