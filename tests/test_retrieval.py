"""utils.retrieval on synthetic features with known answers, utils.classify basics, and utils.checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.checks import check
from utils.classify import evaluate, raw_pixels, train_logistic
from utils.retrieval import class_distance_table, nearest_class, nearest_neighbors, one_nn_predict

CLASSES = ["automobile", "bird", "cat", "dog"]


@pytest.fixture
def clusters() -> tuple[np.ndarray, np.ndarray]:
    """Class c's 3 points sit near (10c, 0, 0): 0.0, 0.5, 1.0 away along the 2nd axis."""
    points, labels = [], []
    for c in range(4):
        for offset in (0.0, 0.5, 1.0):
            points.append([10.0 * c, offset, 0.0])
            labels.append(c)
    return np.asarray(points, np.float32), np.asarray(labels)


def test_nearest_neighbors_known_answer() -> None:
    collection = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [10.0, 10.0]], np.float32)
    distances, indices = nearest_neighbors(np.array([0.2, 0.0]), collection, k=3)
    assert indices.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(distances, [[0.2, 0.8, np.hypot(2.8, 4.0)]], rtol=1e-5)
    distances, indices = nearest_neighbors(collection[:2], collection, k=10)  # k capped at the collection size
    assert indices.shape == (2, 4) and indices[:, 0].tolist() == [0, 1] and np.allclose(distances[:, 0], 0)


def test_nearest_neighbors_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbors(np.zeros((1, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="same backbone"):
        nearest_neighbors(np.zeros((1, 3)), np.zeros((5, 4)))


def test_class_distance_table_and_nearest_class(clusters) -> None:
    collection, labels = clusters
    queries = np.array([[30.0, 0.0, 0.0], [0.0, 0.25, 0.0], [10.0, 3.0, 0.0]], np.float32)  # near dog, automobile, bird
    table = class_distance_table(queries, collection, labels, CLASSES, query_class="dog")
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["dog-automobile", "dog-bird", "dog-cat", "dog-dog"] and len(table) == 3
    assert table.loc[0, "dog-dog"] == pytest.approx(0.0)
    assert table.loc[0, "dog-cat"] == pytest.approx(10.0)
    assert table.loc[1, "dog-automobile"] == pytest.approx(0.25)
    assert table.loc[2, "dog-bird"] == pytest.approx(2.0)
    assert nearest_class(table).tolist() == ["dog", "automobile", "bird"]
    mean_of_2 = class_distance_table(queries[:1], collection, labels, CLASSES, "dog", k=2)
    assert mean_of_2.loc[0, "dog-dog"] == pytest.approx(0.25)  # mean of 0.0 and 0.5


def test_nearest_class_with_hyphenated_class_names(clusters) -> None:
    """Image-folder classes may contain '-' (``sports-car``): the answer is the whole class name."""
    collection, labels = clusters
    names = ["sports-car", "blue-jay", "cat", "great-dane"]
    table = class_distance_table(np.array([[30.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32), collection, labels,
                                 names, query_class="great-dane")
    assert list(table.columns)[0] == "great-dane-sports-car"
    assert nearest_class(table).tolist() == ["great-dane", "sports-car"]


def test_one_nn_predict(clusters) -> None:
    collection, labels = clusters
    queries = np.array([[9.0, 0.0, 0.0], [21.0, 1.0, 0.0], [-5.0, 0.0, 0.0], [40.0, 0.0, 0.0]], np.float32)
    assert one_nn_predict(queries, collection, labels).tolist() == [1, 2, 0, 3]
    names = np.asarray(CLASSES)[labels]
    assert one_nn_predict(queries[:1], collection, names).tolist() == ["bird"]


def test_logistic_classifier_and_evaluation(clusters) -> None:
    collection, labels = clusters
    model = train_logistic(collection, labels)
    result = evaluate(model.predict(collection), labels, CLASSES)
    assert result["accuracy"] == 1.0 and result["per_class_accuracy"]["dog"] == 1.0
    assert result["confusion_matrix"].shape == (4, 4) and np.trace(result["confusion_matrix"]) == 12
    with pytest.raises(ValueError, match="two classes"):
        train_logistic(collection[:3], labels[:3])
    pixels = raw_pixels(np.full((2, 4, 4, 3), 255, np.uint8))
    assert pixels.shape == (2, 48) and pixels.dtype == np.float32 and pixels.max() == 1.0


@pytest.mark.parametrize("answer, expected, verdict, word", [
    (None, 0.8123, None, "not answered"),
    (..., 0.8123, None, "not answered"),
    (0.8123, 0.8123, True, "correct"),
    (0.81234, 0.8123, True, "correct"),  # within the tolerance
    (0.7, 0.8123, False, "not quite"),
    ("  Dog ", "dog", True, "correct"),
    ("cat", "dog", False, "not quite"),
    ([1, 2, 3], np.array([1, 2, 3]), True, "correct"),
    ([1, 2], np.array([1, 2, 3]), False, "not quite"),
    ("lots", 0.8123, False, "not quite"),
])
def test_check_never_reveals_the_expected_value(capsys, answer, expected, verdict, word) -> None:
    assert check("q1", answer, expected, tolerance=1e-3, hint="look at the table") is verdict
    out = capsys.readouterr().out
    assert out.startswith("[q1]") and word in out
    assert "correct" not in out if verdict is False else True
    secret = np.asarray(expected).ravel()
    if secret.dtype.kind == "f":
        assert "0.81" not in out
    elif secret.dtype.kind == "U":
        assert "dog" not in out.replace("[q1]", "")
    if verdict is False:
        assert "Hint: look at the table" in out
