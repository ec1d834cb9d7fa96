"""The six course notebooks, executed by papermill at a small size on the real course images.

Assertions are on what the notebooks compute (their metrics JSON and executed outputs), checked against
independent recomputations where that is cheap.
"""

from __future__ import annotations


import nbformat
import numpy as np
import pytest
from sklearn.metrics import pairwise_distances

from _course_fixtures import built_real_course
from utils import course, data, features

pytestmark = pytest.mark.slow
SMALL = course.SMALL_PARAMETERS
LESSONS = ["01_explore_data", "02_raw_pixel_classifier", "03_deep_features_classifier", "04_image_retrieval",
           "05_per_class_distances", "06_few_shot_recognizer", "07_fine_tuning"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    return built_real_course(tmp_path_factory)


@pytest.fixture(scope="module")
def small_split(run) -> tuple[data.ImageSet, data.ImageSet]:
    return data.load_course_data(run["data_dir"], SMALL["n_train_per_class"], SMALL["n_test_per_class"], seed=0)


def test_every_notebook_ran_without_errors(run) -> None:
    assert sorted(run["metrics"]) == LESSONS
    for name in LESSONS:
        nb = nbformat.read(run["build"] / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert run["metrics"][name]["seconds"] > 0
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        assert images, f"{name} drew no figure"


def test_explore_counts_match_the_split(run, small_split) -> None:
    m = run["metrics"]["01_explore_data"]
    train, test = small_split
    assert m["train_counts"] == train.counts() == {c: SMALL["n_train_per_class"] for c in data.COURSE_CLASSES}
    assert m["test_counts"] == test.counts()
    assert m["least_common_class"] in data.COURSE_CLASSES
    assert m["train_counts"][m["least_common_class"]] == min(m["train_counts"].values())
    assert m["image_shape"] == [32, 32, 3]


def test_raw_pixels_are_weak_but_above_chance(run) -> None:
    m = run["metrics"]["02_raw_pixel_classifier"]
    assert 0.25 < m["raw_pixel_accuracy"] < 0.75
    matrix = np.array(m["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == 4 * SMALL["n_test_per_class"]
    assert np.isclose(np.trace(matrix) / matrix.sum(), m["raw_pixel_accuracy"])


def test_deep_features_beat_raw_pixels_by_a_clear_margin(run) -> None:
    m = run["metrics"]["03_deep_features_classifier"]
    assert m["feature_dim"] == 1280
    assert m["raw_pixel_accuracy"] == pytest.approx(run["metrics"]["02_raw_pixel_classifier"]["raw_pixel_accuracy"])
    assert m["deep_feature_accuracy"] >= m["raw_pixel_accuracy"] + 0.15
    assert "efficientnet_lite0" in m["backbone_comparison"]
    assert m["backbone_comparison"]["efficientnet_lite0"] == pytest.approx(m["deep_feature_accuracy"], abs=1e-3)


def test_retrieval_finds_same_class_neighbours_and_the_outside_cat(run) -> None:
    m = run["metrics"]["04_image_retrieval"]
    assert m["retrieval_same_class_rate"] > m["raw_pixel_same_class_rate"]
    assert {r["query"] for r in m["query_results"]} == {"cat", "automobile"}
    distances = [r["distance"] for r in m["query_results"] if r["query"] == "cat"]
    assert distances == sorted(distances)
    # Chelsea (a photo of a cat) lands among animals, mostly cats.
    labels = m["outside_query_neighbor_labels"]
    assert labels.count("cat") >= 2 and "automobile" not in labels


def test_dog_distance_table_matches_a_recomputation(run, small_split) -> None:
    m = run["metrics"]["05_per_class_distances"]
    train, test = small_split
    f_train = features.featurize_images(train.images, "efficientnet_lite0", SMALL["image_size"])
    f_test = features.featurize_images(test.images, "efficientnet_lite0", SMALL["image_size"])
    dog = train.class_names.index("dog")
    d = pairwise_distances(f_test[test.labels == dog], f_train)  # every dog test image to every training image
    nearest_per_class = np.stack([d[:, train.labels == c].min(axis=1) for c in range(4)], axis=1)
    expected = int((nearest_per_class.argmin(axis=1) == dog).sum())
    assert m["dog_test_count"] == SMALL["n_test_per_class"]
    assert m["dog_1nn_correct"] == expected
    assert m["per_class_1nn_accuracy"]["dog"] == pytest.approx(expected / m["dog_test_count"])
    nb = nbformat.read(run["build"] / "notebooks" / "05_per_class_distances.ipynb", as_version=4)
    table = next(o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []) if "dog-automobile" in o.get("data", {}).get("text/plain", ""))
    for column in ("dog-automobile", "dog-bird", "dog-cat", "dog-dog"):
        assert column in table


def test_few_shot_curve_rises_and_deep_features_win(run) -> None:
    m = run["metrics"]["06_few_shot_recognizer"]["few_shot"]
    shots, deep, raw = m["shots"], np.array(m["deep_feature_accuracy"]), np.array(m["raw_pixel_accuracy"])
    assert shots == sorted(shots) and shots[0] == 1 and shots[-1] <= SMALL["n_train_per_class"]
    assert deep[-1] > deep[0] + 0.15
    assert (deep > raw).mean() >= 0.75
    recognizer = run["metrics"]["06_few_shot_recognizer"]["recognizer"]
    assert recognizer["classes"] == list(data.COURSE_CLASSES) and recognizer["images"] == 20


def test_fine_tuning_reports_the_probe_beside_the_fine_tuned_model(run) -> None:
    m = run["metrics"]["07_fine_tuning"]  # accuracy vs the frozen head: tests/test_fine_tuning.py (more images)
    assert m["linear_probe_accuracy"] == pytest.approx(
        run["metrics"]["03_deep_features_classifier"]["deep_feature_accuracy"], abs=1e-3)
    assert 0.25 < m["fine_tuned_accuracy"] <= 1
    assert len(m["fine_tune_curves"]["loss"]) == m["fine_tune_epochs_run"] >= 1
    assert m["reload_difference"] < 1e-5


def test_results_report_collects_the_headline_figures(run) -> None:
    text = (run["build"] / "results.md").read_text()
    m = run["metrics"]
    assert f"{m['03_deep_features_classifier']['deep_feature_accuracy']:.3f}" in text
    assert f"{m['05_per_class_distances']['dog_1nn_correct']}" in text
    assert "0.788" in text and "678" in text
