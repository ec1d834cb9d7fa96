"""A faiss index of a folder's deep features, on disk: build it once, update it, query it in
milliseconds (``deep-features index`` and ``similar``; lesson 9 builds and queries one).

``index.json`` names the current *generation* of files (the faiss index, the features, the files
with their size and modification time) and the settings. An update featurizes only new or changed
files (cached chunk by chunk: a kill loses nothing) and writes a new generation before switching
``index.json`` atomically. One writer at a time holds ``.lock``; readers take no lock and always
load one whole generation. Damage raises :class:`IndexDamagedError`; :func:`build_index` repairs it.
"""

import contextlib
import errno
import json
import re
import secrets
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from filelock import FileLock, Timeout

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
    """A query or an update asked an index for other settings than its own."""


class IndexDamagedError(ValueError):
    """A file of an index folder is missing or unreadable; ``problem``: the damage alone."""
    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


class IndexBusyError(RuntimeError):
    """Another :func:`build_index` held the index folder's lock longer than the wait allowed."""


def rebuild_advice(folder: Path) -> str:
    return f"run `deep-features index FOLDER --output {folder}` to rebuild it"


def looks_like_index(folder: str | Path) -> bool:
    """Whether ``folder`` holds ``index.json`` or a generation's file (an index or its remains)."""
    folder = Path(folder)
    if (folder / "index.json").is_file():
        return True
    try:
        return any(GENERATION_FILE.fullmatch(p.name) for p in folder.iterdir())
    except OSError:  # not a folder, or unreadable
        return False


def being_built(folder: str | Path) -> bool:
    """Whether ``folder`` holds only the lock file: its first ``index`` run is under way."""
    try:
        return [p.name for p in Path(folder).iterdir()] == [LOCK_FILE]
    except OSError:
        return False


@dataclass(frozen=True)
class IndexSettings:
    """What an index's features are: a query's must match them."""
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

    def asked(self, where: Path, backbone: str | None = None, image_size: int | None = None,
              precision: str | None = None, metric: str | None = None) -> "IndexSettings":
        """The settings given, each by default this index's own: checked against the index's."""
        asked = IndexSettings.of(backbone or self.backbone, image_size or self.image_size,
                                 precision or self.precision, metric or self.metric)
        self.check(asked, where)
        return asked

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
    """``kind``, or for ``"auto"``: exact up to :data:`EXACT_MAX_IMAGES` images, HNSW above."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "exact" if count <= EXACT_MAX_IMAGES else "hnsw"


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def prepared(features: np.ndarray, metric: str = METRIC) -> np.ndarray:
    """The rows a ``metric`` index holds or is queried with (a new float32 array)."""
    import faiss
    rows = np.array(features, dtype=np.float32, order="C", copy=True)
    if check_metric(metric) == "cosine":
        faiss.normalize_L2(rows)
    return rows


def normalized(features: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (a new float32 array)."""
    return prepared(features, "cosine")


def new_faiss_index(kind: str, dim: int, metric: str = METRIC):
    """An empty faiss index of ``kind`` (``exact`` or ``hnsw``) of ``dim``-d prepared rows."""
    import faiss
    euclidean = check_metric(metric) == "euclidean"
    if kind == "exact":
        return faiss.IndexFlatL2(dim) if euclidean else faiss.IndexFlatIP(dim)
    measure = faiss.METRIC_L2 if euclidean else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(dim, HNSW_M, measure)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


@dataclass
class SearchIndex:
    """An index folder loaded: its settings, the faiss index and the indexed files (row order)."""
    folder: Path
    settings: IndexSettings
    kind: str
    faiss_index: object
    paths: list[Path]

    @classmethod
    def load(cls, folder: str | Path) -> "SearchIndex":
        """The index in ``folder``: one whole generation, even while :func:`build_index` runs."""
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
        """faiss's (scores, rows) of the ``k`` nearest rows to each query (-1: not found)."""
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
    """What :func:`build_index` did, and the damage it repaired (``notes``, one line each)."""
    index: SearchIndex
    added: int
    removed: int
    kept: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    rebuilt: bool = True
    notes: list[str] = field(default_factory=list)


def _damaged(path: Path, what: str) -> IndexDamagedError:
    problem = f"{path} {what}"
    advice = rebuild_advice(path.parent)
    return IndexDamagedError(f"{problem}: the index is damaged; {advice}", problem)


def _read_meta(folder: Path) -> dict | None:
    """``index.json``, checked: ``None`` if there is none."""
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
    """:class:`FileNotFoundError` if missing, :class:`IndexDamagedError` if unreadable."""
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
    try:
        return read(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise _damaged(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc


def _read_entries(path: Path) -> list[list]:
    """``[path, size, mtime_ns]`` rows."""
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
    """Index the images under ``folder`` (or ``files``) into the folder ``output``, or update it:
    only new or changed files are featurized (on Dask with ``workers`` or ``scheduler``), unreadable
    ones are skipped and tried again next time; settings default to the index's own; a second
    writer waits for the first, for at most ``lock_timeout`` s (``None``: no limit)."""
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
    lock = _writer_lock(output, lock_timeout)
    try:
        return _update(folder, output, files, backbone, image_size, precision, kind, metric,
                       workers=workers, scheduler=scheduler, progress=progress, report=report)
    except BaseException:
        if created:  # no empty folder left behind
            _remove_if_only_lock(output)
        raise
    finally:
        lock.release()


def _writer_lock(output: Path, timeout: float | None) -> FileLock:
    """``output/.lock``, held; waits for another writer, saying so, for at most ``timeout`` s."""
    lock, waited = FileLock(output / LOCK_FILE), False
    while True:
        output.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=(-1 if timeout is None else timeout) if waited else 0)
            return lock
        except FileNotFoundError:  # a failed first run removed the folder it made: make it again
            continue
        except Timeout:
            if waited:
                raise IndexBusyError(f"another `index` run has been updating {output} for more "
                                     f"than {timeout:g} s (it holds {output / LOCK_FILE}); try "
                                     "again when it is done") from None
        limit = f"; giving up after {timeout:g} s" if timeout is not None else ""
        print(f"waiting for another `index` run on {output} to finish (it holds "
              f"{output / LOCK_FILE}{limit}) ...", file=sys.stderr, flush=True)
        waited = True


def _remove_if_only_lock(output: Path) -> None:
    with contextlib.suppress(OSError):
        if being_built(output):
            (output / LOCK_FILE).unlink()
            output.rmdir()


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
    guess = "auto" if meta["kind"] == choose_kind("auto", int(meta["count"])) else meta["kind"]
    return meta["requested_kind"] if meta.get("requested_kind") in INDEX_KINDS else guess


def _update(folder, output: Path, files: Sequence[str | Path] | None, backbone: str | None,
            image_size: int | None, precision: str | None, kind: str | None, metric: str | None, *,
            workers, scheduler, progress, report) -> IndexUpdate:
    """:func:`build_index` under the lock (the folder is listed here: a writer may have waited)."""
    paths = [Path(p).absolute() for p in (files if files is not None else list_images(folder))]
    previous = _previous(output)
    meta, notes = previous.meta, previous.notes
    if meta is not None:
        built = IndexSettings(**meta["settings"])
        settings = built.asked(output, backbone, image_size, precision, metric)
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
    """Write a new generation, switch ``index.json`` to it, delete the others but ``keep``."""
    import faiss
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
