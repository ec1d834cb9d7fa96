"""The index and the Dask path under concurrency and faults (issue 24, section 4).

Two writers into one index folder, a reader during updates, damaged index files, updates that keep an index's
own settings, relative paths sent to Dask workers, unreachable or worker-less clusters, file modes. Real fixture
photos at 64 px; the subprocesses are ``deep-features`` as a user runs it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import WorkerPlugin
from filelock import FileLock
from PIL import Image

from deep_features import dask_features
from deep_features import index as index_module
import deep_features.__main__ as cli_module
from deep_features.__main__ import main
from deep_features.index import IndexBusyError, IndexDamagedError, SearchIndex, build_index, looks_like_index
from utils import runtime
from utils.data import _NO_SUCH_FILE, list_images
from utils.features import FileFeatures, featurize_files
from utils.runtime import _cache_root, atomic_write

SIZE = 64
REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "cifar10-4class-small"


@pytest.fixture(scope="module", autouse=True)
def converted_model() -> None:
    """The 64 px model converted once, into the session's cache, before any subprocess needs it."""
    featurize_files([FIXTURE / "train" / "cat" / "0000.jpg"], image_size=SIZE, use_cache=False, progress=False)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """20 fixture photos (cat, dog: 10 each) and one broken file."""
    folder = tmp_path / "photos"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for src in sorted((FIXTURE / "train" / cls).glob("*.jpg"))[:10]:
            shutil.copy2(src, folder / cls / src.name)
    (folder / "cat" / "broken.jpg").write_bytes(b"not an image")
    return folder


def _readable(photos: Path) -> list[Path]:
    return [p for p in list_images(photos) if p.name != "broken.jpg"]


def _cli(*args: str, cwd: Path = REPO, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deep_features", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _assert_searchable(out: Path, count: int) -> SearchIndex:
    """The index loads whole, holds ``count`` files, and finds each stored vector first."""
    index = SearchIndex.load(out)
    assert len(index) == count == index.faiss_index.ntotal
    meta = json.loads((out / "index.json").read_text())
    stored = np.load(out / meta["files"]["features"])
    _, rows = index.search(stored, 1, index.settings)
    assert (rows[:, 0] == np.arange(count)).all()
    return index


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    return lines[0]


# --- one writer at a time; readers see whole generations ------------------------------------------------------

def test_two_index_runs_into_one_folder_both_succeed_and_leave_a_valid_index(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    extra = sorted((FIXTURE / "train" / "bird").glob("*.jpg"))[:2]
    for round_ in range(3):
        if round_ == 1:  # the second round adds files, the third removes one: real updates, not no-ops
            for src in extra:
                shutil.copy2(src, photos / "cat" / f"new-{src.name}")
        if round_ == 2:
            (photos / "dog" / "0000.jpg").unlink()
        command = [sys.executable, "-m", "deep_features", "index", str(photos), "--output", str(out), "--image-size",
                   str(SIZE)]
        runs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        results = [run.communicate(timeout=240) + (run.returncode,) for run in runs]
        for stdout, stderr, code in results:  # the second one waited for the first, then found little to do
            assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
            assert f"{len(_readable(photos))} images in" in stdout
        _assert_searchable(out, len(_readable(photos)))


def test_a_second_writer_waits_for_the_first_then_updates(photos: Path, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ix"
    build_index(photos, out, image_size=SIZE, progress=False)
    with FileLock(out / index_module.LOCK_FILE):  # another writer holds the folder
        started = time.monotonic()
        with pytest.raises(IndexBusyError, match=r"another `index` run has been updating .* try again"):
            build_index(photos, out, lock_timeout=0.5, progress=False)
        assert 0.4 < time.monotonic() - started < 5
        assert "waiting for another `index` run on" in capsys.readouterr().err
        # On the command line: one line, exit 2.
        monkeypatch.setattr(cli_module, "build_index",  # the name the command calls
                            functools.partial(build_index, lock_timeout=0.3))
        assert main(["index", str(photos), "--output", str(out)]) == 2
        assert "another `index` run" in _one_error_line(capsys.readouterr().err.split("...")[-1])
        monkeypatch.undo()
    shutil.copy2(FIXTURE / "train" / "bird" / "0000.jpg", photos / "cat" / "new.jpg")
    lock = FileLock(out / index_module.LOCK_FILE, thread_local=False)  # released by another thread
    lock.acquire()
    threading.Timer(1.0, lock.release).start()  # the first writer finishes in 1 s
    assert main(["index", str(photos), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "waiting for another `index` run on" in captured.err and "1 added" in captured.out
    _assert_searchable(out, 21)


def test_a_waiting_writer_survives_the_first_one_removing_the_folder_it_made(photos: Path, tmp_path: Path,
                                                                          capsys) -> None:
    out = tmp_path / "ix"
    out.mkdir()
    lock = FileLock(out / index_module.LOCK_FILE, thread_local=False)
    lock.acquire()

    def fail_and_tidy_up() -> None:  # a first run that failed: it removes the folder it created
        (out / index_module.LOCK_FILE).unlink()
        out.rmdir()
        lock.release()

    threading.Timer(1.0, fail_and_tidy_up).start()
    build_index(photos, out, image_size=SIZE, progress=False, lock_timeout=30)
    assert "waiting for another `index` run on" in capsys.readouterr().err
    _assert_searchable(out, 20)


_WRITER = """
import sys
from deep_features.index import build_index
for i in range(int(sys.argv[3])):
    build_index(sys.argv[1], sys.argv[2], kind=("exact", "hnsw")[i % 2], progress=False)
"""


def test_a_reader_during_repeated_updates_always_loads_a_whole_index(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    build_index(photos, out, image_size=SIZE, progress=False)
    query = np.load(out / json.loads((out / "index.json").read_text())["files"]["features"])[:3]
    # Every update rebuilds (the kind alternates) and switches to a new generation, deleting older ones.
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(photos), str(out), "60"], cwd=REPO,
                              stderr=subprocess.PIPE, text=True)
    loads, kinds = 0, set()
    try:
        while writer.poll() is None or loads == 0:
            index = SearchIndex.load(out)
            _, rows = index.search(query, 1, index.settings)
            assert len(index) == 20 and rows[:, 0].tolist() == [0, 1, 2]
            loads, kinds = loads + 1, kinds | {index.kind}
    finally:
        _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err[-3000:]
    assert loads > 10 and kinds == {"exact", "hnsw"}, (loads, kinds)


def test_a_reader_that_read_an_old_index_json_reads_it_again(photos: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ix"
    build_index(photos, out, image_size=SIZE, progress=False)
    first = index_module._read_meta(out)
    build_index(photos, out, kind="hnsw", progress=False)
    previous = index_module._read_meta(out)
    assert SearchIndex._load(out, previous).kind == "hnsw"
    build_index(photos, out, kind="exact", progress=False)
    assert SearchIndex._load(out, previous).kind == "hnsw"  # the previous generation stays loadable
    assert not (out / first["files"]["index"]).exists()  # older ones go
    real = index_module._read_meta
    stale = iter([first])
    monkeypatch.setattr(index_module, "_read_meta", lambda folder: next(stale, None) or real(folder))
    assert SearchIndex.load(out).kind == "exact"  # the stale index.json's files were gone: read again
    monkeypatch.setattr(index_module, "_read_meta", lambda folder: first)
    with pytest.raises(IndexDamagedError, match=r"index-.*\.faiss is missing, though .*index.json names it"):
        SearchIndex.load(out)


# --- damaged index folders -------------------------------------------------------------------------------------

@pytest.mark.parametrize("part, size", [("index", 100), ("index", 0), ("entries", 10), ("features", 100)])
def test_a_damaged_file_is_named_and_the_next_update_repairs_it(photos: Path, tmp_path: Path, capsys,
                                                                part: str, size: int) -> None:
    out = tmp_path / "ix"
    assert main(["index", str(photos), "--output", str(out), "--image-size", str(SIZE)]) == 0
    damaged = out / json.loads((out / "index.json").read_text())["files"][part]
    os.truncate(damaged, size)
    query = str(photos / "cat" / "0003.jpg")
    capsys.readouterr()
    if part == "features":  # a query does not read the features
        assert main(["similar", query, str(out), "--top", "2"]) == 0
    else:
        assert main(["similar", query, str(out), "--top", "2"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert str(damaged) in line and "the index is damaged; run `deep-features index FOLDER --output" in line
    assert main(["index", str(photos), "--output", str(out)]) == 0  # no options: the index's own settings
    captured = capsys.readouterr()
    assert f"repaired: {damaged}" in captured.err and "(exact, built)" in captured.out, captured
    index = _assert_searchable(out, 20)
    assert index.settings.image_size == SIZE
    assert main(["similar", query, str(out), "--top", "2"]) == 0
    results = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(results) == 2  # under the header line naming the metric


def test_an_invalid_or_missing_index_json(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ix"
    build_index(photos, out, image_size=SIZE, progress=False)
    query = str(photos / "cat" / "0003.jpg")
    (out / "index.json").write_text('{"format": 1,\n')
    assert main(["similar", query, str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{out / 'index.json'} is not valid JSON" in line and "to rebuild it" in line
    assert main(["index", str(photos), "--output", str(out), "--image-size", str(SIZE)]) == 0
    assert "is not valid JSON" in capsys.readouterr().err
    _assert_searchable(out, 20)
    (out / "index.json").unlink()
    assert looks_like_index(out) and not looks_like_index(photos)
    assert main(["similar", query, str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{out} looks like an index folder but its index.json is missing" in line and "rebuild" in line
    assert main(["index", str(photos), "--output", str(out), "--image-size", str(SIZE)]) == 0
    assert "index.json is missing: building the index again" in capsys.readouterr().err
    _assert_searchable(out, 20)
    assert sum(1 for p in out.iterdir() if p.suffix == ".faiss") == 1  # the orphaned generation is gone


# --- updates keep the index's settings; arguments checked first ------------------------------------------------

def test_a_plain_update_keeps_the_size_and_kind_it_was_built_with(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ix"
    assert main(["index", str(photos), "--output", str(out), "--image-size", str(SIZE), "--kind", "hnsw"]) == 0
    shutil.copy2(FIXTURE / "train" / "bird" / "0000.jpg", photos / "cat" / "new.jpg")
    assert main(["index", str(photos), "--output", str(out)]) == 0
    assert "(hnsw, updated in place): 1 added" in capsys.readouterr().out
    index = _assert_searchable(out, 21)
    assert (index.kind, index.settings.image_size) == ("hnsw", SIZE)
    (photos / "cat" / "new.jpg").unlink()  # a removal rebuilds the graph: still hnsw
    assert main(["index", str(photos), "--output", str(out)]) == 0
    assert SearchIndex.load(out).kind == "hnsw"
    capsys.readouterr()
    assert main(["index", str(photos), "--output", str(out), "--image-size", "96"]) == 2  # other features
    assert "image_size 96 (index: 64)" in _one_error_line(capsys.readouterr().err)
    assert main(["index", str(photos), "--output", str(out), "--kind", "exact"]) == 0  # another kind: rebuilt
    assert main(["index", str(photos), "--output", str(out)]) == 0
    assert "(exact, updated in place)" in capsys.readouterr().out
    assert json.loads((out / "index.json").read_text())["requested_kind"] == "exact"


def test_bad_arguments_are_refused_before_any_featurizing(photos: Path, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_a, **_k):
        raise AssertionError("featurized before checking the arguments")

    monkeypatch.setattr(dask_features, "featurize_files", never)  # the in-process path of build_index
    (tmp_path / "a-file").write_text("x")
    assert main(["index", str(photos), "--output", str(tmp_path / "a-file")]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    monkeypatch.undo()
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "broken.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no readable image files"):
        build_index(empty, tmp_path / "new-ix", image_size=SIZE, progress=False)
    assert not (tmp_path / "new-ix").exists()  # a failed first build leaves no folder behind


# --- featurize: never an empty result written with exit 0 -------------------------------------------------------

def test_featurize_refuses_when_every_file_is_skipped(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "b.png").write_bytes(b"")
    out = tmp_path / "f.npz"
    assert main(["featurize", str(folder), "--output", str(out), "--image-size", str(SIZE)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "none of the 2 image files could be read; nothing written" in err
    assert "Traceback" not in err and "skipped " in err and not out.exists()
    (folder / "a.jpg").unlink()
    (folder / "b.png").unlink()
    assert main(["featurize", str(folder), "--output", str(out)]) == 2
    assert "no image files to featurize" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


# --- Dask: absolute paths, unreachable schedulers, lost workers -------------------------------------------------

@pytest.fixture(scope="module")
def one_worker():
    from deep_features.dask_features import close_client, open_client

    client = open_client(workers=1)  # its worker runs in this folder (REPO), not in the tests' tmp folders
    yield client
    close_client(client)


def test_relative_paths_reach_workers_running_in_another_folder(one_worker, photos: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(photos.parent)
    relative = [p.relative_to(photos.parent) for p in list_images(photos)]
    assert not (REPO / relative[0]).exists()  # the worker's folder has no such files
    on_dask = dask_features.featurize_files_on_dask(relative, image_size=SIZE, client=one_worker, use_cache=False,
                                                    chunk_files=8, progress=False)
    single = featurize_files(relative, image_size=SIZE, use_cache=False, progress=False)
    assert on_dask.paths == single.paths and len(on_dask.paths) == 20  # named as the caller named them
    assert [(p.name, r.split(" (")[0]) for p, r in on_dask.skipped] == [("broken.jpg", "not an image")]
    np.testing.assert_array_equal(on_dask.features, single.features)


def test_an_unreachable_scheduler_is_one_line_within_seconds(photos: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = _cli("featurize", str(photos), "--output", str(tmp_path / "f.npz"), "--scheduler",
                  f"tcp://127.0.0.1:{port}", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert f"could not reach the Dask scheduler at tcp://127.0.0.1:{port} within 10 s" in line
    assert "is `dask scheduler` running there?" in line
    assert elapsed < 25, elapsed  # 10 s of connecting and the start-up, not distributed's 30 s and retries
    assert not (tmp_path / "f.npz").exists()


@pytest.fixture
def in_process_cluster():
    """A LocalCluster in this process (threads, no nanny: a worker that closes is not restarted)."""
    from distributed import Client, LocalCluster

    made = []

    def start(n_workers: int):
        cluster = LocalCluster(n_workers=n_workers, processes=False, threads_per_worker=1, dashboard_address=None,
                               silence_logs=logging.ERROR)
        made.append((Client(cluster), cluster))
        return made[-1][0]

    yield start
    for client, cluster in made:
        dask_features.close_client(client)
        cluster.close()


def test_a_cluster_with_no_worker_fails_in_bounded_time(in_process_cluster) -> None:
    client = in_process_cluster(0)
    started = time.monotonic()
    with pytest.raises(dask_features.DaskClusterError, match=r"no Dask worker on the cluster at .* for 1 s "
                                                             r"\(0 of 3 chunks done\)"):
        dask_features.featurize_files_on_dask(list_images(FIXTURE)[:24], image_size=SIZE, client=client,
                                              chunk_files=8, progress=False, no_workers_timeout=1)
    assert time.monotonic() - started < 10


class CloseOnFirstTask(WorkerPlugin):
    """A worker plugin: the worker closes (for good: no nanny) as soon as it starts its first task."""

    def setup(self, worker) -> None:
        self.worker, self.closing = worker, False

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and not self.closing:
            self.closing = True
            self.worker.loop.add_callback(functools.partial(self.worker.close, executor_wait=False, nanny=False))


def test_a_cluster_that_loses_all_its_workers_mid_run_fails_in_bounded_time(in_process_cluster) -> None:
    client = in_process_cluster(1)
    client.register_plugin(CloseOnFirstTask(), name="close-on-first-task")
    started = time.monotonic()
    with pytest.raises(dask_features.DaskClusterError, match=r"no Dask worker (left )?on the cluster .* for 2 s"):
        dask_features.featurize_files_on_dask(list_images(FIXTURE)[:24], image_size=SIZE, client=client,
                                              use_cache=False, chunk_files=8, progress=False,
                                              no_workers_timeout=2)
    assert time.monotonic() - started < 20
    assert not client.nthreads()


def test_workers_that_see_none_of_the_files_are_named(in_process_cluster, photos: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing_there(paths, *_args) -> FileFeatures:  # as on workers without the shared file system
        return FileFeatures(np.empty((0, 1280), np.float32), [], [(Path(p), _NO_SUCH_FILE) for p in paths])

    monkeypatch.setattr(dask_features, "_featurize_chunk", nothing_there)
    client = in_process_cluster(1)
    with pytest.raises(dask_features.DaskClusterError, match="workers found none of the 21 files, which exist "
                                                             "here .* under the same paths"):
        dask_features.featurize_files_on_dask(list_images(photos), image_size=SIZE, client=client,
                                              progress=False)


def test_cluster_errors_reach_the_user_as_one_line(photos: Path, tmp_path: Path, capsys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*_a, **_k):
        raise dask_features.DaskClusterError("no Dask worker left on the cluster at tcp://x:8786 for 30 s")

    monkeypatch.setattr(dask_features, "featurize_files_on_dask", fails)
    for command in ("featurize", "index"):
        assert main([command, str(photos), "--output", str(tmp_path / command), "--scheduler", "tcp://x:8786"]) == 2
        assert "no Dask worker left" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "index").exists()


# --- file modes --------------------------------------------------------------------------------------------------

def test_index_and_cache_files_follow_the_umask(photos: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)  # a photo never seen: its chunk's cache entry is written now
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(photos / "dog" / "noise.png")
    cache = _cache_root() / "features"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    old = os.umask(0o022)
    try:
        build_index(photos, tmp_path / "ix", image_size=SIZE, progress=False)
        written = list((tmp_path / "ix").iterdir())
        written += [p for p in cache.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime_ns]
        assert {p.name for p in written} >= {"index.json", ".lock"}
        assert any(p.suffix == ".npz" for p in written) and any(p.suffix == ".txt" for p in written)
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {
            p.name: "0o644" for p in written}
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write(tmp_path / "private.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_without_proc_the_umask_read_at_import_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_umask_from_proc", lambda: None)  # not Linux
    monkeypatch.setattr(runtime, "_UMASK_AT_IMPORT", 0o027)
    assert stat.S_IMODE(atomic_write(tmp_path / "group.txt", b"x").stat().st_mode) == 0o640
