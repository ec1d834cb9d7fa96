"""utils.checks: every exercise the notebooks use is registered; right answers pass, wrong ones fail, and the
expected value is never printed. (The notebooks' Solutions sections, run by test_notebooks, check the rest.)"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from utils import checks

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHECK_CALL = re.compile(r"""checks\.check\(\s*["'](\d+\.\d+)["']""")
CLASSES = ["automobile", "bird", "cat", "dog"]


def ids_in(cells) -> list[str]:
    return [i for cell in cells if cell.cell_type == "code" for i in CHECK_CALL.findall(cell.source)]


LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_check_of_every_lesson_is_registered_and_has_a_solution(path: Path) -> None:
    lesson = int(path.name[:2])
    nb = nbformat.read(path, as_version=4)
    solutions = [c for c in nb.cells if "solution" in c.get("metadata", {}).get("tags", [])]
    exercises = [c for c in nb.cells if c not in solutions]
    asked, solved = ids_in(exercises), ids_in(solutions)
    assert asked, f"{path.name} has no exercise"
    assert all(i.startswith(f"{lesson}.") for i in asked), asked
    assert set(asked) <= set(checks.load_all()), f"not registered: {set(asked) - set(checks._EXERCISES)}"
    assert sorted(asked) == sorted(solved), f"{path.name}: exercises {asked} vs solutions {solved}"
    registered = sorted(i for i in checks.load_all() if i.startswith(f"{lesson}."))
    assert registered == sorted(asked), f"registered but unused: {set(registered) - set(asked)}"
    for cell in exercises:  # an exercise cell holds the answer slot and the check, never the expected value
        if CHECK_CALL.search(cell.source):
            assert re.search(r"^answer = \.\.\.$", cell.source, re.M), cell.source


def test_unknown_id_raises_even_before_an_answer() -> None:
    with pytest.raises(KeyError, match="unknown exercise '9.9'"):
        checks.check("9.9", 1)
    with pytest.raises(KeyError, match="unknown exercise"):
        checks.check("9.9", ...)
    with pytest.raises(KeyError, match="unknown exercise"):
        checks._expected_answer("9.9")


def test_registering_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        checks.exercise("1.1")(lambda: 0)


@pytest.fixture
def toy() -> SimpleNamespace:
    """A 4-class toy run: 8 'images' per class, with features that separate the classes."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 8)
    images = (rng.integers(0, 200, (32, 4, 4, 3)) + 10 * labels[:, None, None, None]).astype(np.uint8)
    feats = rng.normal(size=(32, 6)) + 3 * np.eye(4, 6)[labels]
    queries = rng.normal(size=(12, 6)) + 3 * np.eye(4, 6)[np.repeat(np.arange(4), 3)]
    train = SimpleNamespace(images=images, labels=labels, class_names=CLASSES)
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=1.0, max_iter=500))])
    return SimpleNamespace(train=train, labels=labels, feats=feats, queries=queries,
                           query_labels=np.repeat(np.arange(4), 3), model=model.fit(feats, labels))


def cases(t: SimpleNamespace) -> list[tuple[str, dict, object, object]]:
    """(id, objects, a right answer computed independently, a wrong answer)."""
    bright = [t.train.images[t.labels == c].mean() for c in range(4)]
    bird_rgb = t.train.images[t.labels == 1].mean(axis=(1, 2))
    bluer_birds = int((bird_rgb[:, 2] > bird_rgb[:, 0]).sum())
    saturated = SimpleNamespace(images=t.train.images.copy())  # test images: 4 of 32 all 255
    saturated.images[:4] = 255
    assert not (t.train.images == 255).any()
    d = np.linalg.norm(t.queries[:, None] - t.feats[None], axis=2)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    cosine = 1 - unit(t.queries) @ unit(t.feats).T
    dog_q, cats = t.queries[t.query_labels == 3], t.feats[t.labels == 2]
    shot_draws = [np.array([0, 8, 16, 24]), np.array([1, 9, 17, 25])]  # one image per class, two draws
    one_nn = [np.mean(t.labels[i][(1 - t.queries @ t.feats[i].T / np.outer(np.linalg.norm(t.queries, axis=1),
                                                                        np.linalg.norm(t.feats[i], axis=1)))
                                  .argmin(axis=1)] == t.query_labels) for i in shot_draws]
    # one image per class: the nearest centroid is the nearest shot, by Euclidean distance (features as they are)
    euclidean_nn = [np.mean(t.labels[i][d[:, i].argmin(axis=1)] == t.query_labels) for i in shot_draws]
    gray = t.train.images.mean(axis=3)
    contrast = [gray[t.labels == c].std(axis=(1, 2)).mean() for c in range(4)]
    cat_q = t.queries[t.query_labels == 2]
    def nearest_to(c: int) -> np.ndarray:  # each cat query's distance to the nearest training image of class c
        return np.linalg.norm(cat_q[:, None] - t.feats[t.labels == c][None], axis=2).min(axis=1)

    cats_nearer_a_dog = int((nearest_to(3) < nearest_to(2)).sum())
    # exercise 2.1: images 8 pixels wide, class c with a bright column at 2c; shifted 4 pixels to the right
    # (the columns that leave on the right come back on the left), class 0's column is where class 2's was
    wide = np.random.default_rng(1).integers(0, 60, (32, 6, 8, 3)).astype(np.uint8)
    wide[np.arange(32), :, 2 * t.labels] = 255
    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255  # noqa: E731
    pixel_model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=500))])
    pixel_model.fit(flat(wide), t.labels)
    shifted = np.concatenate([wide[:, :, -4:], wide[:, :, :-4]], axis=2)
    shifted_accuracy = float((pixel_model.predict(flat(shifted)) == t.labels).mean())
    unshifted_accuracy = float((pixel_model.predict(flat(wide)) == t.labels).mean())
    assert abs(shifted_accuracy - unshifted_accuracy) > 0.5  # the check must shift the images
    matrix = confusion_matrix(t.query_labels, t.model.predict(t.queries), labels=range(4))
    return [
        ("1.1", {"train": t.train}, bluer_birds, bluer_birds + 1),
        ("1.2", {"test": saturated}, 4 / 32, 0.0),  # 0.0: the training images' share, not the test's
        ("1.3", {"train": t.train}, CLASSES[int(np.argmax(bright))], CLASSES[int(np.argmin(bright))]),
        ("2.1", {"model": pixel_model, "test_images": wide, "y_test": t.labels}, shifted_accuracy,
         unshifted_accuracy),
        ("1.4", {"train": t.train}, CLASSES[int(np.argmax(contrast))], CLASSES[int(np.argmin(contrast))]),
        ("2.2", {"model": t.model, "X_test": t.queries, "y_test": t.query_labels, "class_names": CLASSES},
         matrix[2, 2] / matrix[:, 2].sum(), matrix[2, 2] / matrix[:, 2].sum() - 0.1),
        # deep right on images 0-2, raw right on image 3 only: 3 gained, 2 net (the wrong answer)
        ("3.2", {"deep_predicted": np.array([0, 1, 2, 3]), "raw_predicted": np.array([1, 0, 0, 2]),
                 "y_test": np.array([0, 1, 2, 2])}, 3, 2),
        ("3.1", {"f_train": np.array([[0.0, 0.5, 0.0], [0.0, 1e-3, 2.0]])}, 3 / 6, 2 / 6),
        ("4.1", {"query": t.queries[0], "collection": t.feats}, cosine[0].min(), d[0].min()),
        ("4.2", {"query": t.queries[0], "query_label": 0, "collection": t.feats, "collection_labels": t.labels},
         int((t.labels[np.argsort(d[0])[:5]] == 0).sum()), 6),
        ("5.1", {"f_test": t.queries, "y_test": t.query_labels, "f_train": t.feats, "y_train": t.labels,
                 "class_names": CLASSES}, cats_nearer_a_dog, cats_nearer_a_dog + 1),
        ("5.2", {"dog_queries": dog_q, "cat_collection": cats},
         np.linalg.norm(dog_q[:, None] - cats[None], axis=2).min(axis=1).mean(), 0.0),
        ("6.2", {"draws": shot_draws, "X_train": t.feats, "y_train": t.labels, "X_test": t.queries,
                 "y_test": t.query_labels}, float(np.mean(euclidean_nn)), float(np.mean(euclidean_nn)) - 0.1),
        ("6.3", {"draws": shot_draws, "X_train": t.feats, "y_train": t.labels, "X_test": t.queries,
                 "y_test": t.query_labels}, float(np.mean(one_nn)), float(np.mean(one_nn)) - 0.1),
    ]


def test_right_answers_pass_and_wrong_ones_fail_without_revealing(toy, capsys) -> None:
    for exercise_id, objects, right, wrong in cases(toy):
        assert checks.check(exercise_id, right, **objects) is True, exercise_id
        assert checks.check(exercise_id, wrong, **objects) is False, exercise_id
        out = capsys.readouterr().out
        assert "correct" in out and "not quite" in out and "Hint:" in out
        if not isinstance(right, str):
            assert f"{float(right):.3f}" not in out.replace(f"[{exercise_id}]", "")
        assert checks.check(exercise_id, ..., **objects) is None
        assert checks.check(exercise_id, None, **objects) is None
        assert "not answered" in capsys.readouterr().out


@pytest.mark.parametrize("answer, verdict", [("  Dog ", True), ("dog", True), ("cat", False), (3, False),
                                             ([1, 2], False)])
def test_text_answers_ignore_case_and_spaces(answer, verdict) -> None:
    assert checks._same(answer, "dog", 0) is verdict


def test_numeric_tolerance_and_shapes() -> None:
    assert checks._same(0.81234, 0.8123, 1e-3) and not checks._same(0.7, 0.8123, 1e-3)
    assert checks._same([1, 2, 3], np.array([1, 2, 3]), 0) and not checks._same([1, 2], np.array([1, 2, 3]), 0)
    assert not checks._same("lots", 0.8, 1e-3)


def test_9_1_is_the_recall_of_a_2_link_graph_the_student_built() -> None:
    """Exercise 9.1 changes the index (2 links per image instead of hnsw_m): the expected answer is that graph's
    recall@10 at the lesson's efSearch against the exact index, computed from the student's own index (which keeps
    its efSearch); another graph, or none yet, is not accepted."""
    import faiss

    rng = np.random.default_rng(0)
    collection = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    faiss.normalize_L2(collection)
    faiss.normalize_L2(queries)
    exact = faiss.IndexFlatIP(16)
    exact.add(collection)
    truth = exact.search(queries, 10)[1]
    sparse = faiss.IndexHNSWFlat(16, 2, faiss.METRIC_INNER_PRODUCT)
    sparse.hnsw.efConstruction = 64
    sparse.add(collection)
    sparse.hnsw.efSearch = 12
    found = sparse.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) for a, b in zip(found, truth)]) / 10
    sparse.hnsw.efSearch = 99  # the check searches at the lesson's efSearch, and leaves the student's alone
    objects = {"approximate": sparse, "exact": exact, "queries": queries, "ef_search": 12}
    assert checks._expected_answer("9.1", **objects) == pytest.approx(recall, abs=1e-12) and recall < 1
    assert checks.check("9.1", recall, **objects) is True and sparse.hnsw.efSearch == 99
    assert checks.check("9.1", recall - 0.01, **objects) is False
    dense = faiss.IndexHNSWFlat(16, 32, faiss.METRIC_INNER_PRODUCT)
    dense.add(collection)
    for other in (dense, exact, None):  # the lesson's kind of graph, an exact index, not built yet
        assert checks._expected_answer("9.1", **{**objects, "approximate": other}) is None
        assert checks.check("9.1", recall, **{**objects, "approximate": other}) is False


def test_4_5_mirrors_the_query_images_itself() -> None:
    """Exercise 4.5 changes the data: the expected answer is the precision@5 of the mirrored images' features, which
    the check computes itself (the featurizer on the images reversed left to right), not the unmirrored one's."""
    from utils import features

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    images[:6, :, :16] = 255  # half the images bright on the left: mirroring moves it to the right
    labels = np.repeat([0, 1], 6)
    collection = features.featurize_images(images, "efficientnet_lite0", 32)
    mirrored = features.featurize_images(np.ascontiguousarray(images[:, :, ::-1]), "efficientnet_lite0", 32)
    d = np.linalg.norm(mirrored[:, None] - collection[None], axis=2)
    right = float((labels[np.argsort(d, axis=1, kind="stable")[:, :5]] == labels[:, None]).mean())
    objects = {"images": images, "labels": labels, "collection": collection, "collection_labels": labels,
               "backbone": "efficientnet_lite0", "image_size": 32}
    assert checks.check("4.5", right, **objects) is True
    assert checks.check("4.5", right + 0.1, **objects) is False
