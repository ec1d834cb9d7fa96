"""A faiss index of a folder's deep features, on disk: build it once, update it, query it in
milliseconds (``deep-features index`` and ``similar``; lesson 9 builds and queries one).

An index folder holds ``index.json`` (the settings it was built with and the names of the current
files), the faiss index, the features and the indexed files with their size and modification time.
Cosine similarity (the default metric) is the inner product of L2-normalized features
(``faiss.IndexFlatIP``); a Euclidean index holds the raw features (``faiss.IndexFlatL2``). Above
:data:`EXACT_MAX_IMAGES` images the default is an HNSW graph (``faiss.IndexHNSWFlat``; chosen over
IVF-PQ by ``benchmarks/index.py``).

An update featurizes only new or changed files; a kill loses nothing: features are cached chunk by
chunk, and the index's files are written under new names (a new *generation*) before
``index.json`` switches to them atomically. One writer at a time holds the lock file ``.lock``
(see :func:`build_index`); readers take no lock: the writer keeps the previous generation, and
:meth:`SearchIndex.load` rereads ``index.json`` if a file it names is gone, so a reader always
loads one whole generation. A file that cannot be read makes :meth:`SearchIndex.load` raise
:class:`IndexDamagedError` naming it; :func:`build_index` repairs the damage (from the stored
features, or the files through the feature cache) and says so in :attr:`IndexUpdate.notes`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from utils.backbones import load_backbone
from utils.data import list_images
from utils.fast_inference import resolve_precision
from utils.runtime import atomic_write

from . import DEFAULT_BACKBONE
from .dask_features import featurize

INDEX_LAYOUT_VERSION = 1  # of the index folder the user keeps (not a cache entry): bump on change
INDEX_KINDS = ("auto", "exact", "hnsw")
EXACT_MAX_IMAGES = 20_000  # "auto": exact up to here: ~0.41 ms of CPU per 1000 images per query
HNSW_M = 32  # graph neighbours per vector: recall vs memory (benchmarks/index.py)
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 64  # candidates kept per query: recall vs query time
METRICS = ("cosine", "euclidean")  # inner products of unit vectors, or L2 on the raw features
METRIC = "cosine"  # the default: lesson 4 measures it as the better of the two on deep features
LOCK_FILE = ".lock"  # in the index folder: held by the one writer (build_index)
LOCK_TIMEOUT = 600.0  # s a second writer waits for the first before it gives up
#: The files of one generation of an index folder (the hex part is the generation's name).
GENERATION_FILE = re.compile(
    r"(?:index-[0-9a-f]{8}\.faiss|features-[0-9a-f]{8}\.npy|files-[0-9a-f]{8}\.json)")


class IndexSettingsError(ValueError):
    """A query or an update asked an index for other settings (backbone, weights, size, precision,
    metric) than its own."""


class IndexDamagedError(ValueError):
    """A file of an index folder is missing or cannot be read: :func:`build_index` rebuilds it.

    ``problem`` is the damage alone (``DIR/index-....faiss is not a readable faiss index (...)``),
    without the advice the message adds.
    """

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


class IndexBusyError(RuntimeError):
    """Another :func:`build_index` held the index folder's lock longer than the wait allowed."""


def rebuild_advice(folder: Path) -> str:
    """What to do about a damaged index folder."""
    return f"run `deep-features index FOLDER --output {folder}` to rebuild it"


def looks_like_index(folder: str | Path) -> bool:
    """Whether ``folder`` is an index folder, or the remains of one: ``index.json`` or a
    generation's file (the lock file alone is not: see :func:`being_built`)."""
    folder = Path(folder)
    if (folder / "index.json").is_file():
        return True
    try:
        return any(GENERATION_FILE.fullmatch(p.name) for p in folder.iterdir())
    except OSError:  # not a folder, or unreadable
        return False


def being_built(folder: str | Path) -> bool:
    """Whether ``folder`` holds only the writers' lock file: its first ``index`` run is under way
    (or was killed before writing anything)."""
    try:
        return [p.name for p in Path(folder).iterdir()] == [LOCK_FILE]
    except OSError:
        return False


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
        bb = load_backbone(backbone, image_size)
        return cls(bb.name, bb.weights_id, bb.input_size,
                   resolve_precision(precision), check_metric(metric))

    def describe(self) -> str:
        return (f"{self.backbone} ({self.weights}) at {self.image_size} px, {self.precision}, "
                f"{self.metric}")

    def check(self, other: "IndexSettings", where: Path) -> None:
        """:class:`IndexSettingsError`, naming every difference, unless ``other`` is the same."""
        differ = [f"{name} {getattr(other, name)} (index: {getattr(self, name)})"
                  for name in ("backbone", "weights", "image_size", "precision", "metric")
                  if getattr(self, name) != getattr(other, name)]
        if differ:
            raise IndexSettingsError(
                f"the index {where} was built with {self.describe()}; features with other "
                f"settings cannot be compared with it: {'; '.join(differ)}. Use the index's "
                "settings (leave the options out), or build a new index with --output elsewhere")


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
    """Each row divided by its L2 norm (a new float32 array): inner products are then cosine
    similarities."""
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
    """An index folder loaded: its settings, the faiss index and the indexed files, in the index's
    row order."""

    folder: Path
    settings: IndexSettings
    kind: str
    faiss_index: object
    paths: list[Path]

    @classmethod
    def load(cls, folder: str | Path) -> "SearchIndex":
        """The index in ``folder``: one whole generation, even while :func:`build_index` updates it.

        Raises :class:`FileNotFoundError` when ``folder`` is not an index folder,
        :class:`IndexDamagedError` (naming the file) when a file of the index is missing or
        unreadable.
        """
        folder = Path(folder)
        tried = None
        for _ in range(3):  # a file index.json names is gone: an update switched meanwhile, reread
            meta = _read_meta(folder)
            if meta is None:
                if looks_like_index(folder):
                    raise IndexDamagedError(f"{folder} looks like an index folder but its "
                                            f"index.json is missing; {rebuild_advice(folder)}")
                if being_built(folder):
                    raise FileNotFoundError(f"{folder}: no index there yet: an `index` run may be "
                                            f"building it ({folder / LOCK_FILE}); try again when "
                                            "it is done")
                raise FileNotFoundError(f"{folder}: not an index folder (no index.json); build one "
                                        "with deep-features index FOLDER --output INDEX_DIR")
            if meta == tried:
                break
            try:
                return cls._load(folder, meta)
            except FileNotFoundError as exc:
                tried, missing = meta, exc.filename
        raise _damaged(Path(missing), f"is missing, though {folder / 'index.json'} names it")

    @classmethod
    def _load(cls, folder: Path, meta: dict) -> "SearchIndex":
        """One generation: :class:`FileNotFoundError` if one of its files is missing."""
        index = _read_faiss(folder / meta["files"]["index"])
        if meta["kind"] == "hnsw":
            index.hnsw.efSearch = int(meta.get("ef_search", HNSW_EF_SEARCH))
        entries = _read_entries(folder / meta["files"]["entries"])
        if index.ntotal != len(entries):
            raise _damaged(folder / meta["files"]["index"],
                           f"holds {index.ntotal} vectors for {len(entries)} files")
        return cls(folder, IndexSettings(**meta["settings"]), meta["kind"], index,
                   [Path(e[0]) for e in entries])

    def __len__(self) -> int:
        return len(self.paths)

    def search(self, query_features: np.ndarray, k: int,
               settings: IndexSettings) -> tuple[np.ndarray, np.ndarray]:
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
    """What :func:`build_index` did: the loaded index, the files added, removed, kept and skipped,
    and the damage it repaired (``notes``, one line each)."""

    index: SearchIndex
    added: int
    removed: int
    kept: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    rebuilt: bool = True
    notes: list[str] = field(default_factory=list)  # damage found and repaired


def _damaged(path: Path, what: str) -> IndexDamagedError:
    problem = f"{path} {what}"
    advice = rebuild_advice(path.parent)
    return IndexDamagedError(f"{problem}: the index is damaged; {advice}", problem)


def _read_meta(folder: Path) -> dict | None:
    """``index.json``, checked: ``None`` if there is none, :class:`IndexDamagedError` if
    unusable."""
    path = folder / "index.json"
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"cannot be read ({exc})") from exc
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise _damaged(path, f"is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise _damaged(path, "is not an index description (not a JSON object)")
    if meta.get("format") != INDEX_LAYOUT_VERSION:
        raise ValueError(f"{folder}: index format {meta.get('format')} is not this version's "
                         f"({INDEX_LAYOUT_VERSION}); build the index again into a new folder")
    try:
        IndexSettings(**meta["settings"])
        files = meta["files"]
        if not all(isinstance(files[k], str) and GENERATION_FILE.fullmatch(files[k])
                   for k in ("index", "features", "entries")):
            raise ValueError("file names")
        if meta["kind"] not in ("exact", "hnsw"):
            raise ValueError("kind")
        int(meta["count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, f"is incomplete or invalid ({type(exc).__name__}: {exc})") from exc
    return meta


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such file", str(path))


def _read_faiss(path: Path):
    """The faiss index in ``path``: :class:`FileNotFoundError` if missing,
    :class:`IndexDamagedError` if not readable (faiss says only ``RuntimeError``, with a C++
    location)."""
    import faiss

    if not path.is_file():
        raise _missing(path)
    try:
        return faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:  # MemoryError: a damaged header asking for exabytes
        if not path.exists():  # removed between the check and the read
            raise _missing(path) from exc
        reason = str(exc).split("failed: ", 1)[-1].splitlines()[0][:200]
        if not path.stat().st_size:
            reason = "empty file"
        raise _damaged(path, f"is not a readable faiss index ({reason})") from exc


def _read(path: Path, read):
    """``read(path)``: :class:`FileNotFoundError` if missing, :class:`IndexDamagedError` if not
    readable."""
    try:
        return read(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise _damaged(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc


def _read_entries(path: Path) -> list[list]:
    """The indexed files: ``[path, size, mtime_ns]`` rows."""
    entries = _read(path, lambda p: json.loads(p.read_text("utf-8")))
    if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) for e in entries):
        raise _damaged(path, "is not a list of [path, size, modification time]")
    return entries


def _read_features(path: Path, count: int, dim: int) -> np.ndarray:
    features = _read(path, lambda p: np.load(p, mmap_mode="r"))
    if features.shape != (count, dim) or features.dtype != np.float32:
        raise _damaged(path, f"holds {features.dtype} {features.shape}, not float32 "
                             f"{(count, dim)}")
    return features


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def build_index(folder: str | Path, output: str | Path, backbone: str | None = None,
                image_size: int | None = None, precision: str | None = None,
                kind: str | None = None, *, metric: str | None = None, workers: int | None = None,
                scheduler: str | None = None, progress: bool | None = None, report: bool = False,
                files: Sequence[str | Path] | None = None,
                lock_timeout: float | None = LOCK_TIMEOUT) -> IndexUpdate:
    """Index the images under ``folder`` into the folder ``output``, or update the index there.

    Only files new or changed (size or modification time) since the last run are featurized; files
    gone from the folder leave the index. ``backbone``, ``image_size``, ``precision``, ``metric``
    (``"cosine"`` or ``"euclidean"``) and ``kind`` (``"exact"``, ``"hnsw"`` or ``"auto"``:
    :func:`choose_kind`) default (``None``) to the existing index's own, else to the backbone's,
    cosine and ``"auto"``. Settings other than the index's raise :class:`IndexSettingsError` (the
    features could not be compared), but another ``kind`` rebuilds the index as that kind from the
    stored features, and later updates keep it. ``workers`` / ``scheduler`` featurize on Dask
    (:mod:`~deep_features.dask_features`). ``files`` replaces the folder listing. Unreadable files
    are skipped, named in the result (``report=True`` prints them) and tried again next time.

    One writer at a time: the update holds ``output/.lock`` from reading ``index.json`` to switching
    it. A second writer *waits* (saying so on stderr), then reads the index the first one wrote and
    featurizes only what is still new: both runs succeed, nothing is done twice (a scheduled update
    overlapping a manual one). The wait is bounded by ``lock_timeout`` seconds (``None``: no
    limit), then :class:`IndexBusyError`: a script should hear of a run holding the lock for hours
    rather than hang. The lock is the operating system's, released when its holder dies.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file, not a folder: give the index folder (a new "
                         "one, or one indexed before)")
    if kind is not None:
        choose_kind(kind, 0)  # an unknown kind fails before any work
    if backbone is not None:
        load_backbone(backbone)  # an unknown or unavailable backbone fails before any work
    if files is None and not Path(folder).is_dir():
        list_images(folder)  # its error: no such folder
    created = not output.exists()

    def waiting() -> None:
        limit = f"; giving up after {lock_timeout:g} s" if lock_timeout is not None else ""
        print(f"waiting for another `index` run on {output} to finish (it holds "
              f"{output / LOCK_FILE}{limit}) ...", file=sys.stderr, flush=True)

    try:
        with exclusive_lock(output / LOCK_FILE, lock_timeout, on_wait=waiting):
            try:
                return _update(folder, output, files, backbone, image_size, precision, kind,
                               metric, workers=workers, scheduler=scheduler, progress=progress,
                               report=report)
            except BaseException:
                if created:  # no empty folder left (a waiter sees the lock file go: exclusive_lock)
                    _remove_if_only_lock(output)
                raise
    except LockTimeoutError:
        raise IndexBusyError(f"another `index` run has been updating {output} for more than "
                             f"{lock_timeout:g} s (it holds {output / LOCK_FILE}); try again when "
                             "it is done") from None


def _remove_if_only_lock(output: Path) -> None:
    try:
        if [p.name for p in output.iterdir()] == [LOCK_FILE]:
            (output / LOCK_FILE).unlink()
            output.rmdir()
    except OSError:
        pass


@dataclass
class _Previous:
    """What an update starts from: the last generation's usable parts."""

    meta: dict | None = None
    entries: list[list] = field(default_factory=list)
    features: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _previous(output: Path) -> _Previous:
    """The index in ``output`` as far as it can be read; what could not be is in ``notes``."""
    previous = _Previous()
    try:
        previous.meta = _read_meta(output)
    except IndexDamagedError as exc:
        previous.notes.append(f"{exc.problem}: building the index again")
        return previous
    if previous.meta is None:
        if looks_like_index(output):
            previous.notes.append(f"{output / 'index.json'} is missing: building the index again")
        return previous
    files = previous.meta["files"]
    try:
        previous.entries = _read_entries(output / files["entries"])
        dim = load_backbone(previous.meta["settings"]["backbone"]).feature_dim
        previous.features = _read_features(output / files["features"], len(previous.entries), dim)
    except (FileNotFoundError, IndexDamagedError) as exc:
        what = exc.problem if isinstance(exc, IndexDamagedError) else f"{exc.filename} is missing"
        previous.notes.append(f"{what}: featurizing every file again (cached features make it "
                              "quick)")
        previous.entries, previous.features = [], None
    return previous


def _requested_kind(meta: dict) -> str:
    """The kind an index was asked for (``auto`` included); guessed when index.json does not say."""
    if meta.get("requested_kind") in INDEX_KINDS:
        return meta["requested_kind"]
    return "auto" if meta["kind"] == choose_kind("auto", int(meta["count"])) else meta["kind"]


def _update(folder, output: Path, files: Sequence[str | Path] | None, backbone: str | None,
            image_size: int | None, precision: str | None, kind: str | None, metric: str | None, *,
            workers, scheduler, progress, report) -> IndexUpdate:
    """:func:`build_index` under the lock (the folder is listed here: a writer may have waited)."""
    paths = [Path(p).absolute() for p in (files if files is not None else list_images(folder))]
    previous = _previous(output)
    meta, notes = previous.meta, previous.notes
    if meta is not None:
        built = IndexSettings(**meta["settings"])
        settings = IndexSettings.of(backbone or built.backbone, image_size or built.image_size,
                                    precision or built.precision, metric or built.metric)
        built.check(settings, output)
        requested = kind or _requested_kind(meta)
    else:
        settings = IndexSettings.of(backbone or DEFAULT_BACKBONE, image_size, precision,
                                    metric or METRIC)
        requested = kind or "auto"
    if notes and meta is None:
        notes[-1] += f" with {settings.describe()}"
    old_entries = previous.entries
    dim = load_backbone(settings.backbone).feature_dim
    old_features = previous.features
    if old_features is None:
        old_features = np.empty((0, dim), np.float32)
    stats = {p: _stat(p) for p in paths}
    unchanged = [row for row, (p, size, mtime) in enumerate(old_entries)
                 if stats.get(Path(p)) == (size, mtime)]
    known = {Path(old_entries[row][0]) for row in unchanged}
    new = [p for p in paths if p not in known]
    found = featurize(new, settings.backbone, settings.image_size, settings.precision,
                      workers=workers, scheduler=scheduler, progress=progress, report=report)
    added_entries = [[str(p), *(stats[p] or (None, None))] for p in found.paths]
    entries = [old_entries[row] for row in unchanged] + added_entries
    if not entries:
        raise ValueError(f"{folder}: no readable image files to index ({len(found.skipped)} "
                         "skipped)")
    removed = len(old_entries) - len(unchanged)
    chosen = choose_kind(requested, len(entries))

    # New files are added to the graph in place; a removed file, another kind or damage: rebuilt.
    faiss_index = None
    if (meta is not None and not removed and meta["kind"] == chosen
            and previous.features is not None):
        faiss_index = _faiss_to_extend(output / meta["files"]["index"], len(old_entries), notes)
    rebuilt = faiss_index is None
    all_features = old_features
    if rebuilt:
        all_features = np.concatenate([np.asarray(old_features[unchanged]), found.features])
        faiss_index = new_faiss_index(chosen, all_features.shape[1], settings.metric)
        faiss_index.add(prepared(all_features, settings.metric))
    elif len(found.paths):
        faiss_index.add(prepared(found.features, settings.metric))
        all_features = np.concatenate([np.asarray(old_features), found.features])
    if meta is None or rebuilt or len(found.paths) or requested != _requested_kind(meta):
        keep = set(meta["files"].values()) if meta is not None else set()
        _write(output, settings, chosen, requested, faiss_index, all_features, entries, keep)
    if chosen == "hnsw":
        faiss_index.hnsw.efSearch = HNSW_EF_SEARCH
    index = SearchIndex(output, settings, chosen, faiss_index, [Path(e[0]) for e in entries])
    return IndexUpdate(index, len(found.paths), removed, len(unchanged), list(found.skipped),
                       rebuilt, notes)


def _faiss_to_extend(path: Path, count: int, notes: list[str]):
    """The stored faiss index to add new files to, or ``None`` (noted) when damaged: rebuild it."""
    try:
        index = _read_faiss(path)
        if index.ntotal == count:
            return index
        what = f"{path} holds {index.ntotal} vectors for {count} files"
    except FileNotFoundError:
        what = f"{path} is missing"
    except IndexDamagedError as exc:
        what = exc.problem
    notes.append(f"{what}: rebuilding it from the stored features")
    return None


def _write(output: Path, settings: IndexSettings, kind: str, requested: str, faiss_index,
           features: np.ndarray, entries: list[list], keep: set[str]) -> None:
    """Write a new generation of the index files, switch ``index.json`` to it, then delete the
    generations other than it and ``keep`` (the previous one, which a reader may be loading; older
    ones, and any a killed run left, go)."""
    import faiss

    output.mkdir(parents=True, exist_ok=True)
    generation = secrets.token_hex(4)
    files = {"index": f"index-{generation}.faiss", "features": f"features-{generation}.npy",
             "entries": f"files-{generation}.json"}
    # Unreferenced until index.json names them: these need no atomic write, index.json does.
    faiss.write_index(faiss_index, str(output / files["index"]))
    np.save(output / files["features"], np.ascontiguousarray(features, np.float32))
    (output / files["entries"]).write_text(json.dumps(entries), "utf-8")
    meta = {"format": INDEX_LAYOUT_VERSION, "settings": asdict(settings), "kind": kind,
            "requested_kind": requested, "count": len(entries), "dim": int(features.shape[1]),
            "files": files}
    if kind == "hnsw":
        meta.update(m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH)
    atomic_write(output / "index.json", json.dumps(meta, indent=2) + "\n")
    for stale in output.iterdir():
        if GENERATION_FILE.fullmatch(stale.name) and stale.name not in {*files.values(), *keep}:
            stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# The writer's lock (build_index): one `index` run at a time per index folder
# --------------------------------------------------------------------------------------------------

class LockTimeoutError(TimeoutError):
    """:func:`exclusive_lock` waited ``timeout`` seconds for another process to release the lock."""


def _lock_functions() -> tuple[Callable[[int], bool], Callable[[int], None]] | None:
    """``(try_lock(fd) -> bool, unlock(fd))`` for this platform: ``fcntl.flock`` on POSIX,
    ``msvcrt.locking`` on Windows; ``None`` where neither exists."""
    try:
        import fcntl
    except ImportError:
        pass
    else:
        def try_flock(fd: int) -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        return try_flock, lambda fd: fcntl.flock(fd, fcntl.LOCK_UN)
    try:
        import msvcrt
    except ImportError:
        return None

    # one byte at offset 0 (past the end of an empty file: allowed)
    def try_locking(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def unlock_locking(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    return try_locking, unlock_locking


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a holder may have removed it
    meanwhile)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    if not here.st_ino or not there.st_ino:  # no inode numbers here: cannot tell, assume it is
        return True
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], timeout: float | None = None,
                   on_wait: Callable[[], None] | None = None, poll: float = 0.2) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``path`` (created if needed) while the ``with`` block
    runs.

    The lock is the operating system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows): it
    is released when the process ends however it ends, so a killed holder leaves no stale lock. When
    another process holds it, ``on_wait()`` is called once and the lock is tried again every
    ``poll`` seconds, for at most ``timeout`` seconds (``None``: no limit), then
    :class:`LockTimeoutError`. Yields ``True``, or ``False`` without locking on a platform with
    neither call. Locks on network file systems are only as good as the server's (NFSv4: yes). The
    lock file is left in place. A holder may still remove it before it lets go (to tidy up): a
    waiter that then gets the lock of the removed file notices and locks the file now at ``path``
    instead.
    """
    path = Path(path)
    functions = _lock_functions()
    if functions is None:
        yield False
        return
    try_lock, unlock = functions
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if try_lock(fd):
                if _same_file(fd, path):
                    break
                unlock(fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeoutError(f"{path} is still locked by another process after {timeout:g} s")
        time.sleep(poll)
    try:
        yield True
    finally:
        try:
            unlock(fd)
        finally:
            os.close(fd)
