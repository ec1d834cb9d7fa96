"""``similar``: one metric, said out loud (a folder and its index give the same answers, for cosine
and for euclidean), its header line and ``--json``, and the command line's argument checks.

Real fixture photos as files, at 64 px, as in tests/test_index.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deep_features.dask_features
import deep_features.retrieval
import utils.features
from deep_features.__main__ import main
from deep_features.index import IndexSettingsError, SearchIndex, build_index
from deep_features.retrieval import Search, SimilarImage, _distance, search_folder, search_index

SIZE = 64
REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "cifar10-4class-small"
METRICS = ("cosine", "euclidean")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 fixture photos (train/cat, train/dog, test/bird, test/automobile: 10 each) and one broken
    file (as tests/test_index.py's)."""
    folder = tmp_path_factory.mktemp("similar") / "photos"
    classes = (("train", "cat"), ("train", "dog"), ("test", "bird"), ("test", "automobile"))
    for split, cls in classes:
        (folder / cls).mkdir(parents=True)
        for src in sorted((FIXTURE / split / cls).glob("*.jpg"))[:10]:
            shutil.copy2(src, folder / cls / f"{split}-{src.name}")
    (folder / "cat" / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def indexes(photos: Path) -> dict[str, Path]:
    """An exact index of ``photos`` for each metric."""
    out = {}
    for metric in METRICS:
        out[metric] = photos.parent / f"{metric}.index"
        build_index(photos, out[metric], image_size=SIZE, kind="exact", metric=metric,
                    progress=False)
    return out


def _queries(photos: Path) -> list[Path]:
    """Three photos of the folder (so also in its index: the query itself is left out of both)."""
    return [photos / "cat" / "train-0000.jpg", photos / "dog" / "train-0003.jpg",
            photos / "automobile" / "test-0001.jpg"]


@pytest.mark.parametrize("metric", METRICS)
def test_a_folder_and_its_index_give_the_same_top_10(metric: str, photos: Path, indexes) -> None:
    import faiss

    index = SearchIndex.load(indexes[metric])
    measure = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    assert index.settings.metric == metric and index.faiss_index.metric_type == measure
    features = np.load(indexes[metric] / json.loads((indexes[metric] / "index.json").read_text())
                       ["files"]["features"])
    rows = {p: r for r, p in enumerate(index.paths)}
    for query in _queries(photos):
        in_folder = search_folder(query, photos, 10, image_size=SIZE, progress=False, metric=metric)
        in_index = search_index(query, index, 10)  # no metric given: the index's own
        assert in_index.metric == in_folder.metric == metric
        paths = [r.path.resolve() for r in in_folder.results]
        assert [r.path.resolve() for r in in_index.results] == paths
        assert [r.distance for r in in_index.results] == pytest.approx(
            [r.distance for r in in_folder.results], abs=1e-4)
        # The distances are the metric's own, from the stored (raw) features.
        q = features[rows[query.resolve()]]
        found = features[[rows[r.path.resolve()] for r in in_index.results]]
        if metric == "cosine":
            expected = 1 - found @ q / (np.linalg.norm(found, axis=1) * np.linalg.norm(q))
        else:
            expected = np.linalg.norm(found - q, axis=1)
        assert [r.distance for r in in_index.results] == pytest.approx(expected, abs=1e-4)
        assert in_folder.query_in_source and in_index.query_in_source
        assert in_folder.skipped and [p.name for p, _ in in_folder.skipped] == ["broken.jpg"]


@pytest.mark.parametrize("metric", METRICS)
def test_the_command_line_prints_the_metric_and_the_same_results(metric: str, photos: Path, indexes,
                                                                 capsys) -> None:
    query = _queries(photos)[0]
    assert main(["similar", str(query), str(photos), "--top", "10", "--image-size", str(SIZE),
                 "--metric", metric]) == 0
    folder_header, *folder_rows = capsys.readouterr().out.splitlines()
    assert main(["similar", str(query), str(indexes[metric]), "--top", "10"]) == 0
    index_header, *index_rows = capsys.readouterr().out.splitlines()
    said = f"# {metric} distance, efficientnet_lite0 at {SIZE} px"
    assert folder_header == f"{said}, folder of 40 images"
    assert index_header == f"{said}, index of 40 images (exact)"

    def parsed(rows: list[str]) -> list[tuple[float, Path]]:
        return [(float(d), Path(p).resolve()) for d, p in (row.split(None, 1) for row in rows)]

    assert len(folder_rows) == len(index_rows) == 10
    assert [p for _, p in parsed(folder_rows)] == [p for _, p in parsed(index_rows)]
    distances = [d for d, _ in parsed(index_rows)]
    assert [d for d, _ in parsed(folder_rows)] == pytest.approx(distances, abs=2e-3)


def test_an_index_refuses_the_other_metric_and_keeps_its_own_on_update(photos: Path, indexes,
                                                                       capsys) -> None:
    query = _queries(photos)[0]
    with pytest.raises(IndexSettingsError, match=r"metric cosine \(index: euclidean\)"):
        search_index(query, indexes["euclidean"], metric="cosine")
    assert main(["similar", str(query), str(indexes["cosine"]), "--metric", "euclidean"]) == 2
    err = capsys.readouterr().err
    assert "was built with" in err and "metric euclidean (index: cosine)" in err
    assert "Traceback" not in err
    with pytest.raises(IndexSettingsError, match=r"metric cosine \(index: euclidean\)"):
        build_index(photos, indexes["euclidean"], image_size=SIZE, metric="cosine", progress=False)
    # No metric given: an update keeps the index's own.
    update = build_index(photos, indexes["euclidean"], image_size=SIZE, progress=False)
    assert update.index.settings.metric == "euclidean" and update.kept == 40


def test_json_is_all_that_goes_to_stdout(photos: Path) -> None:
    query = _queries(photos)[1]
    argv = ["similar", str(query), str(photos), "--top", "4", "--image-size", str(SIZE), "--json"]
    result = subprocess.run([sys.executable, "-m", "deep_features", *argv], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    expected = {"metric": "cosine", "backbone": "efficientnet_lite0", "image_size": SIZE,
                "source": "folder", "searched": 40}
    assert {k: answer[k] for k in expected} == expected
    assert Path(answer["query"]) == query.resolve()
    assert [r["rank"] for r in answer["results"]] == [1, 2, 3, 4]
    distances = [r["distance"] for r in answer["results"]]
    assert distances == sorted(distances) and all(0 <= d <= 2 for d in distances)
    assert all(Path(r["path"]).is_file() for r in answer["results"])
    assert "skipped " in result.stderr and "broken.jpg" in result.stderr  # skipped files: on stderr


def test_distances_are_never_negative() -> None:
    assert _distance(1.0000001, "cosine") == 0.0 and _distance(-1e-7, "euclidean") == 0.0
    assert _distance(0.5, "cosine") == pytest.approx(0.5) and _distance(9.0, "euclidean") == 3.0
    assert f"{_distance(1.0, 'cosine'):8.3f}" == "   0.000"


def test_fewer_results_than_asked_come_with_a_note(photos: Path, indexes, capsys) -> None:
    query = _queries(photos)[0]
    assert main(["similar", str(query), str(photos), "--top", "100", "--image-size", "64"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 39
    assert "note: only 39 images in the folder besides the query, not the 100 asked" in captured.err
    assert main(["similar", str(query), str(indexes["cosine"]), "--top", "100"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 39
    assert "note: only 39 images in the index besides the query, not the 100 asked" in captured.err
    outside = FIXTURE / "test" / "cat" / "0000.jpg"  # not in the index: all 40 are answers
    assert main(["similar", str(outside), str(indexes["cosine"]), "--top", "40"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 40 and "note:" not in captured.err
    few = Search(query, [SimilarImage(query, 0.1)] * 5, 10, "cosine", "efficientnet_lite0", SIZE,
                 "float32", "index", 1000, "hnsw")
    assert few.shortfall().startswith("the HNSW graph returned 5 of the 10 asked")


@pytest.mark.parametrize("metric", METRICS)
def test_an_hnsw_search_asked_for_more_than_ef_search_returns_them_all(metric: str) -> None:
    import faiss

    from deep_features.index import IndexSettings, prepared

    # A sparse graph (M = 4) searched with few candidates: faiss alone returns rows of -1.
    vectors = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    measure = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    graph = faiss.IndexHNSWFlat(8, 4, measure)
    graph.add(prepared(vectors, metric))
    graph.hnsw.efSearch = 4
    assert (graph.search(prepared(vectors[:2], metric), 40)[1] < 0).any()
    settings = IndexSettings("efficientnet_lite0", "w", SIZE, "float32", metric)
    paths = [Path(f"{i}.jpg") for i in range(50)]
    index = SearchIndex(Path("in-memory"), settings, "hnsw", graph, paths)
    _, rows = index.search(vectors[:2], 40, settings)
    assert rows.shape == (2, 40) and (rows >= 0).all() and rows[:, 0].tolist() == [0, 1]
    assert graph.hnsw.efSearch == 4  # widened for that search only


@pytest.mark.parametrize("argv, expected", [
    (["similar", "q.jpg", "folder", "--top", "0"], "argument --top: must be at least 1, got 0"),
    (["similar", "q.jpg", "folder", "--top", "-1"], "argument --top: must be at least 1, got -1"),
    (["similar", "q.jpg", "folder", "--top", "many"], "argument --top: must be a whole number"),
    (["similar", "q.jpg", "folder", "--metric", "manhattan"], "argument --metric: invalid choice"),
    (["predict", "q.jpg", "--top", "1001"], "argument --top: must be from 1 to 1000, got 1001"),
    (["predict", "q.jpg", "--top", "0"], "argument --top: must be from 1 to 1000, got 0"),
    (["featurize", "folder", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
    (["index", "folder", "--output", "ix", "--workers", "-1"], "argument --workers: must be"),
    (["featurize", "folder", "--image-size", "0"], "--image-size: must be at least 32 pixels"),
    (["similar", "q.jpg", "folder", "--image-size", "16"], "--image-size: must be at least 32"),
])
def test_bad_numbers_are_usage_errors(argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.startswith("usage:")


@pytest.fixture
def nothing_featurized(monkeypatch: pytest.MonkeyPatch) -> None:
    """Featurizing fails the test: the checks come before the heavy work."""
    def refused(*_a, **_k):
        raise AssertionError("featurized before the arguments were checked")

    monkeypatch.setattr(deep_features.retrieval, "featurize_files", refused)
    monkeypatch.setattr(utils.features, "featurize_files", refused)
    monkeypatch.setattr(deep_features.dask_features, "featurize_files", refused)


@pytest.mark.parametrize("case", ["missing query", "query is a folder", "a file as the folder",
                                  "missing folder", "output folder missing", "output is a folder",
                                  "output.npz is a folder", "output's parent is a file"])
def test_paths_are_checked_before_the_heavy_work(case: str, photos: Path, tmp_path: Path,
                                                 nothing_featurized, capsys) -> None:
    query = _queries(photos)[0]
    (tmp_path / "taken.npz").mkdir()
    (tmp_path / "file.txt").write_text("a file")
    typo = tmp_path / "typo"
    argv, expected = {
        "missing query": (["similar", str(tmp_path / "gone.jpg"), str(photos)],
                          "gone.jpg: no such file"),
        "query is a folder": (["similar", str(photos), str(photos)],
                              "is a folder, not an image file"),
        "a file as the folder": (["similar", str(query), str(query)],
                                 f"{query} is a file, not a folder of images or an index folder"),
        "missing folder": (["similar", str(query), str(tmp_path / "nowhere")],
                           "nowhere: no such folder"),
        "output folder missing": (["featurize", str(photos), "--output", str(typo / "f.npz")],
                                  f"the folder {typo} does not exist; create it first"),
        "output is a folder": (["featurize", str(photos), "--output", str(tmp_path)],
                               f"--output {tmp_path} is a folder; name a file"),
        "output.npz is a folder": (["featurize", str(photos), "--output", str(tmp_path / "taken")],
                                   f"--output {tmp_path / 'taken.npz'} is a folder"),
        "output's parent is a file": (["featurize", str(photos), "--output",
                                       str(tmp_path / "file.txt" / "f")],
                                      "file.txt is not a folder"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


def test_featurize_output_gets_npz_added_and_reports_the_real_name(photos: Path, tmp_path: Path,
                                                                   capsys) -> None:
    argv = ["featurize", str(photos), "--output", str(tmp_path / "name"), "--image-size", str(SIZE)]
    assert main(argv) == 0
    assert not (tmp_path / "name").exists() and (tmp_path / "name.npz").is_file()
    assert f"features in {tmp_path / 'name.npz'};" in capsys.readouterr().out
    assert np.load(tmp_path / "name.npz")["features"].shape == (40, 1280)


def test_predict_top_is_checked_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import deep_features.__main__ as cli

    monkeypatch.setattr(cli, "load_backbone", lambda *_a, **_k: pytest.fail("loaded"))
    for top in (0, 1001):
        with pytest.raises(ValueError, match="top must be from 1 to 1000"):
            cli.predict_imagenet(np.zeros((1, 32, 32, 3), np.uint8), top=top)
