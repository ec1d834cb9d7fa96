"""The faiss index of a folder (deep_features.index, deep-features index / similar) and featurization on Dask.

Real fixture photos as files, at 64 px; the Dask tests start a LocalCluster of 2 worker processes (seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from distributed import WorkerPlugin

from deep_features import dask_features
from deep_features import index as index_module
from deep_features.__main__ import main
from deep_features.index import IndexSettingsError, SearchIndex, build_index
from deep_features.retrieval import search_index
from utils.data import list_images
from utils.features import featurize_files

SIZE = 64
REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "cifar10-4class-small"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """40 fixture photos (train/cat, train/dog, test/bird, test/automobile: 10 each) and one broken file."""
    folder = tmp_path / "photos"
    for split, cls in (("train", "cat"), ("train", "dog"), ("test", "bird"), ("test", "automobile")):
        (folder / cls).mkdir(parents=True)
        for src in sorted((FIXTURE / split / cls).glob("*.jpg"))[:10]:
            shutil.copy2(src, folder / cls / f"{split}-{src.name}")
    (folder / "cat" / "broken.jpg").write_bytes(b"not an image")
    return folder


def _cosine_top(features: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    return np.argsort(-(unit @ (query / np.linalg.norm(query))), kind="stable")[:k]


def test_exact_index_ranks_like_a_brute_force_cosine_search(photos: Path, tmp_path: Path) -> None:
    update = build_index(photos, tmp_path / "ix", image_size=SIZE, progress=False)
    assert (update.added, update.removed, update.kept) == (40, 0, 0)
    assert [(p.name, r.split(" (")[0]) for p, r in update.skipped] == [("broken.jpg", "not an image")]
    index = SearchIndex.load(tmp_path / "ix")
    assert index.kind == "exact" and len(index) == 40 and index.faiss_index.ntotal == 40
    reference = featurize_files(index.paths, image_size=SIZE, progress=False)
    query = reference.features[7]
    similarities, rows = index.search(query, 5, index.settings)
    assert rows[0].tolist() == _cosine_top(reference.features, query, 5).tolist()
    assert rows[0, 0] == 7 and similarities[0, 0] == pytest.approx(1.0, abs=1e-5)
    found = search_index(index.paths[7], tmp_path / "ix", top=3).results
    assert len(found) == 3 and index.paths[7] not in [r.path for r in found]  # the query itself is left out
    assert [r.path for r in found] == [index.paths[r] for r in rows[0, 1:4]]
    assert [r.distance for r in found] == pytest.approx(1 - similarities[0, 1:4], abs=1e-6)


def test_a_query_with_other_settings_is_refused(photos: Path, tmp_path: Path) -> None:
    build_index(photos, tmp_path / "ix", image_size=SIZE, progress=False)
    query = next(photos.glob("cat/*-0000.jpg"))
    with pytest.raises(IndexSettingsError, match=r"at 64 px.*image_size 96 \(index: 64\)"):
        search_index(query, tmp_path / "ix", image_size=96)
    with pytest.raises(IndexSettingsError, match="backbone efficientnet_lite1"):
        index_module.IndexSettings.of(image_size=SIZE).check(
            index_module.IndexSettings("efficientnet_lite1", "w", SIZE, "float32"), tmp_path / "ix")
    with pytest.raises(IndexSettingsError, match="image_size 96"):  # an update with other settings, too
        build_index(photos, tmp_path / "ix", image_size=96, progress=False)
    assert SearchIndex.load(tmp_path / "ix").settings.image_size == SIZE  # untouched
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        SearchIndex.load(tmp_path)


def test_update_featurizes_only_new_files_and_drops_removed_ones(photos: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    build_index(photos, tmp_path / "ix", image_size=SIZE, kind="hnsw", progress=False)
    asked: list[list[Path]] = []
    real = dask_features.featurize_files  # the in-process path of build_index
    monkeypatch.setattr(dask_features, "featurize_files", lambda paths, *a, **k: asked.append(list(paths))
                        or real(paths, *a, **k))
    for src in sorted((FIXTURE / "train" / "bird").glob("*.jpg"))[:2]:
        shutil.copy2(src, photos / "bird" / f"new-{src.name}")
    update = build_index(photos, tmp_path / "ix", image_size=SIZE, kind="hnsw", progress=False)
    assert [p.name for p in asked[-1]] == ["new-0000.jpg", "new-0001.jpg", "broken.jpg"]  # in file order
    assert (update.added, update.removed, update.kept, update.rebuilt) == (2, 0, 40, False)  # added in place
    previous = json.loads((tmp_path / "ix" / "index.json").read_text())["files"]
    (photos / "dog" / "train-0000.jpg").unlink()
    update = build_index(photos, tmp_path / "ix", image_size=SIZE, kind="hnsw", progress=False)
    assert (update.added, update.removed, update.kept, update.rebuilt) == (0, 1, 41, True)
    assert sorted(p.name for p in asked[-1]) == ["broken.jpg"]  # tried again, skipped again
    index = SearchIndex.load(tmp_path / "ix")
    fresh = featurize_files(list_images(photos), image_size=SIZE, progress=False)
    assert sorted(index.paths) == sorted(p.resolve() for p in fresh.paths)
    # The stored features are those of a fresh featurization, row for row; the graph finds each file first.
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    stored = np.load(tmp_path / "ix" / meta["files"]["features"])
    by_path = dict(zip((p.resolve() for p in fresh.paths), fresh.features))
    np.testing.assert_array_equal(stored, np.stack([by_path[p] for p in index.paths]))
    _, rows = index.search(stored, 1, index.settings)
    assert (rows[:, 0] == np.arange(len(index))).mean() == 1.0
    # This generation and the previous one (a reader may still be loading it); the first one is gone.
    assert sorted(f.name for f in (tmp_path / "ix").iterdir()) == sorted(
        ["index.json", ".lock", *meta["files"].values(), *previous.values()])


def test_a_kill_while_writing_leaves_the_previous_index(photos: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    build_index(photos, tmp_path / "ix", image_size=SIZE, progress=False)
    before = (tmp_path / "ix" / "index.json").read_text()
    first = json.loads(before)["files"]
    shutil.copy2(FIXTURE / "train" / "bird" / "0000.jpg", photos / "bird" / "new.jpg")

    def killed(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "atomic_write", killed)  # dies after the new files, before index.json
    with pytest.raises(KeyboardInterrupt):
        build_index(photos, tmp_path / "ix", image_size=SIZE, progress=False)
    assert (tmp_path / "ix" / "index.json").read_text() == before
    assert len(SearchIndex.load(tmp_path / "ix")) == 40
    monkeypatch.undo()
    update = build_index(photos, tmp_path / "ix", image_size=SIZE, progress=False)
    assert (update.added, len(update.index)) == (1, 41)
    current = json.loads((tmp_path / "ix" / "index.json").read_text())["files"]
    assert sorted(f.name for f in (tmp_path / "ix").iterdir()) == sorted(  # the killed run's files are gone
        ["index.json", ".lock", *current.values(), *first.values()])


def test_cli_index_then_similar(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ix"
    assert main(["index", str(photos), "--output", str(out), "--image-size", str(SIZE)]) == 0
    captured = capsys.readouterr()
    assert "40 images" in captured.out and "(exact, built)" in captured.out
    assert "skipped " in captured.err and "broken.jpg: not an image" in captured.err
    query = photos / "cat" / "train-0000.jpg"
    assert main(["similar", str(query), str(out), "--top", "3"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == "# cosine distance, efficientnet_lite0 at 64 px, index of 40 images (exact)"
    assert len(lines) == 3 and all(str(photos.resolve()) in line for line in lines)
    assert main(["similar", str(query), str(out), "--image-size", "96"]) == 2
    assert "was built with" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dask_client():
    from deep_features.dask_features import close_client, open_client

    featurize_files([FIXTURE / "train" / "cat" / "0000.jpg"], image_size=SIZE, use_cache=False, progress=False)
    client = open_client(workers=2)  # after the model is converted above: the workers read it from the cache
    yield client
    close_client(client)


def _with_broken(tmp_path: Path) -> list[Path]:
    (tmp_path / "empty.png").write_bytes(b"")
    files = list_images(FIXTURE)[:60]
    return files[:25] + [tmp_path / "empty.png"] + files[25:]


def test_dask_features_are_bit_identical_and_in_file_order(dask_client, tmp_path: Path) -> None:
    from deep_features.dask_features import featurize_files_on_dask

    files = _with_broken(tmp_path)
    single = featurize_files(files, image_size=SIZE, use_cache=False, progress=False, chunk_files=8)
    on_dask = featurize_files_on_dask(files, image_size=SIZE, client=dask_client, use_cache=False, chunk_files=8)
    assert on_dask.paths == single.paths and on_dask.skipped == single.skipped
    assert [(p, r.split(" (")[0]) for p, r in on_dask.skipped] == [(files[25], "empty file")]
    np.testing.assert_array_equal(on_dask.features, single.features)
    assert len(dask_client.scheduler_info()["workers"]) == 2


class KillOnce(WorkerPlugin):
    """A Dask worker plugin: the first worker to start a task while ``marker`` exists deletes it and dies."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and os.path.exists(self.marker):
            os.remove(self.marker)
            os._exit(1)


def test_a_killed_worker_is_retried_and_the_features_are_the_same(dask_client, tmp_path: Path) -> None:
    import cloudpickle

    from deep_features.dask_features import featurize_files_on_dask

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    files = _with_broken(tmp_path)
    single = featurize_files(files, image_size=SIZE, use_cache=False, progress=False, chunk_files=8)
    marker = tmp_path / "kill-a-worker"
    marker.touch()
    dask_client.register_plugin(KillOnce(str(marker)), name="kill-once")
    on_dask = featurize_files_on_dask(files, image_size=SIZE, client=dask_client, use_cache=False, chunk_files=8)
    assert not marker.exists()  # a worker did die mid-run
    assert on_dask.paths == single.paths and on_dask.skipped == single.skipped
    np.testing.assert_array_equal(on_dask.features, single.features)


def test_index_with_workers_on_the_command_line(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ix"
    assert main(["index", str(photos), "--output", str(out), "--image-size", str(SIZE), "--workers", "2"]) == 0
    assert "40 images" in capsys.readouterr().out
    index = SearchIndex.load(out)
    single = featurize_files(index.paths, image_size=SIZE, progress=False)
    meta = json.loads((out / "index.json").read_text())
    np.testing.assert_array_equal(np.load(out / meta["files"]["features"]), single.features)


@pytest.mark.slow
def test_the_benchmark_runs_tiny(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "index.py"), "--tiny",
                             "--json", str(tmp_path / "tiny.json")], capture_output=True, text=True, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads((tmp_path / "tiny.json").read_text())
    assert {row["kind"] for row in figures["index"]} == {"exact", "hnsw", "ivfpq"}
    assert all(row["recall_at_10"] == 1.0 for row in figures["index"] if row["kind"] == "exact")
    assert all(run["identical"] for run in figures["featurize"] if run["path"] != "single process")
