"""Lessons 3 and 4: lesson 3 runs the load it teaches, one constructor call for the offline backbone and for a
keras.applications one (random weights, offline), and no exercise of lessons 3 and 4 has its answer on screen above
it."""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import pairwise_distances
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from _course_fixtures import built_real_course
from instructor import NOTEBOOK_DIR, run
from instructor.run import SMALL_PARAMETERS as SMALL
from utils import backbones, data, features

pytestmark = pytest.mark.slow
SIZE = 96


def _outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
    return "".join(parts)


def _exercise_cell(nb, exercise_id: str) -> int:
    """The index of the (first) cell that checks ``exercise_id``."""
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and f'checks.check("{exercise_id}"' in c.source)


def _shown_before(nb, exercise_id: str) -> str:
    """Every output above the exercise cell that checks ``exercise_id``."""
    return "\n".join(_outputs(c) for c in nb.cells[: _exercise_cell(nb, exercise_id)] if c.cell_type == "code")


def _lesson3_cut(name: str, weights: str | None, images: np.ndarray) -> np.ndarray:
    """The lesson's load and cut, written again: the constructor on 0-255 pixels, cut at the output layer's input."""
    import keras

    spec = backbones.load_backbone(name, SIZE, weights).spec
    network_class, preprocess_input = backbones.application(name)
    keras.utils.set_random_seed(backbones.RANDOM_WEIGHTS_SEED)  # weights=None: the featurizer's draw
    pixels = keras.Input((SIZE, SIZE, 3))
    network = network_class(weights=weights, include_top=True, input_tensor=preprocess_input(pixels))
    cut = keras.Model(pixels, network.get_layer(spec.head).input)
    resized = keras.ops.convert_to_numpy(keras.layers.Resizing(SIZE, SIZE)(images.astype("float32")))
    return cut.predict(resized, verbose=0)


@pytest.mark.parametrize("name, weights, call", [
    ("efficientnet_lite0", "imagenet", "backbones.EfficientNetLite0(weights='imagenet', include_top=True)"),
    ("mobilenet_v2", None, "keras.applications.MobileNetV2(weights=None, include_top=True)"),
], ids=["offline", "keras-applications-random"])
def test_lesson3_runs_the_constructor_it_teaches(tmp_path, small_data_dir, name, weights, call) -> None:
    """One cell, without if/else, builds the offline network and a keras.applications one (random weights,
    offline) with the call it prints; the featurizer gives the same features; the classifier is trained on them."""
    parameters = dict(SMALL, data_dir=str(small_data_dir), backbone=name, weights=weights, size_grid=[64, SIZE],
                      n_timed=32, compare_backbones=["efficientnet_lite0"], compare_per_class=6, probe_per_class=6)
    results = run.run_course(tmp_path / "build", parameters,
                             notebooks=[NOTEBOOK_DIR / "03_deep_features_classifier.ipynb"], log=lambda _: None)
    m = results["metrics"]["03_deep_features_classifier"]
    spec = backbones.load_backbone(name, SIZE, weights).spec
    assert m["head"] == spec.head and m["feature_dim"] == 1280 and m["constructor"] == call.split("(")[0]
    assert m["keras_vs_featurizer_relative_diff"] < 1e-4  # the lesson's cut against the featurizer, in the run
    assert sorted(m["featurize_seconds"]) == ["64", str(SIZE)] and min(m["featurize_seconds"].values()) > 0
    nb = nbformat.read(tmp_path / "build" / "notebooks" / "03_deep_features_classifier.ipynb", as_version=4)
    load = next(c for c in nb.cells if c.cell_type == "code" and "backbones.application(backbone)" in c.source)
    assert "Network(weights=weights, include_top=True" in load.source and "preprocess_input(pixels)" in load.source
    assert not re.search(r"^\s*(if|else|elif)\b", load.source, re.M)  # the same lines for every backbone
    assert call in _outputs(load)

    # The same cut, recomputed here, equals the featurizer with the same weights (seeded random ones for None).
    train, test = data.load_course_data(small_data_dir, SMALL["n_train_per_class"], SMALL["n_test_per_class"])
    featurized = features.featurize_images(test.images[:8], name, SIZE, weights=weights)
    cut = _lesson3_cut(name, weights, test.images[:8])
    assert np.abs(cut - featurized).max() <= 1e-4 * np.abs(cut).max()
    # ... and the lesson's classifier was trained on those features (ImageNet ones or random ones).
    f_train = features.featurize_images(train.images, name, SIZE, weights=weights)
    f_test = features.featurize_images(test.images, name, SIZE, weights=weights)
    probe = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=0.01, max_iter=1000))])
    assert m["deep_feature_accuracy"] == pytest.approx(probe.fit(f_train, train.labels).score(f_test, test.labels))
    random_id = backbones.load_backbone("mobilenet_v2", SIZE, None).weights_id
    assert random_id != backbones.load_backbone("mobilenet_v2").weights_id


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    return built_real_course(tmp_path_factory)


def test_no_answer_of_lessons_3_and_4_is_on_screen_before_its_exercise(course) -> None:
    build = course["build"] / "notebooks"
    lesson3 = nbformat.read(build / "03_deep_features_classifier.ipynb", as_version=4)
    train, test = data.load_course_data(course["data_dir"], SMALL["n_train_per_class"], SMALL["n_test_per_class"])
    f_train = features.featurize_images(train.images, "efficientnet_lite0", SMALL["image_size"])
    f_test = features.featurize_images(test.images, "efficientnet_lite0", SMALL["image_size"])
    zeros = float((f_train == 0).mean())  # exercise 3.1: the share of the deep features that are 0
    assert 0 < zeros < 1 and f"{zeros:.4f}" not in _shown_before(lesson3, "3.1")
    # Exercise 3.2 (right by deep features, wrong by raw pixels): not the accuracies' difference times the test
    # images, which is on screen; here the two differ, or the exercise would be answered above it.
    def predicted(x_train, x_test):  # the lesson's classifier, on pixels or on deep features
        model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=0.01, max_iter=1000))])
        return model.fit(x_train, train.labels).predict(x_test)

    pixels = lambda s: s.images.reshape(len(s), -1).astype(np.float32) / 255  # noqa: E731
    raw_predicted, deep_predicted = predicted(pixels(train), pixels(test)), predicted(f_train, f_test)
    gained = int(((deep_predicted == test.labels) & (raw_predicted != test.labels)).sum())
    net = int((deep_predicted == test.labels).sum() - (raw_predicted == test.labels).sum())
    assert gained > net  # (the run's answer key, test_notebook_hygiene, checks the screen for it)
    # Exercise 3.3 (which class gains most over raw pixels): no per-class raw-pixel figure above it, so no table
    # that names the classes beside raw pixels and no gain of the best class (raw: lesson 2's, the same model).
    above = [_outputs(c) for c in lesson3.cells[: _exercise_cell(lesson3, "3.3")] if c.cell_type == "code"]
    classes = course["metrics"]["03_deep_features_classifier"]["classes"]
    assert not [text for text in above if "raw" in text.lower() and all(c in text for c in classes)]
    deep = course["metrics"]["03_deep_features_classifier"]["per_class_accuracy"]
    raw = course["metrics"]["02_raw_pixel_classifier"]["per_class_accuracy"]
    gains = {c: deep[c] - raw[c] for c in classes}
    overall = (course["metrics"]["03_deep_features_classifier"]["deep_feature_accuracy"]
               - course["metrics"]["03_deep_features_classifier"]["raw_pixel_accuracy"])
    best = max(gains.values())
    if f"{best:+.3f}" != f"{overall:+.3f}":
        assert f"{best:+.3f}" not in "\n".join(above)

    lesson4 = nbformat.read(build / "04_image_retrieval.ipynb", as_version=4)
    cat_query = int(np.flatnonzero(test.labels == test.class_names.index("cat"))[0])
    nearest = float(pairwise_distances(f_test[[cat_query]], f_train, metric="cosine").min())  # exercise 4.1
    shown = _shown_before(lesson4, "4.1")
    assert f"{nearest:.4f}" not in shown, nearest  # 3 decimals could meet another figure by chance


def test_lesson4_shows_the_query_domain_with_numbers_that_a_recomputation_gives(course, skimage_data) -> None:
    """The photo shrunk to 32x32 and at full size, asked of the same Euclidean search: the full-size photo lies
    farther from its neighbours than the shrunk one and than most test images (another domain)."""
    m = course["metrics"]["04_image_retrieval"]
    train, test = data.load_course_data(course["data_dir"], SMALL["n_train_per_class"], SMALL["n_test_per_class"])
    f_train = features.featurize_images(train.images, "efficientnet_lite0", SMALL["image_size"])
    f_test = features.featurize_images(test.images, "efficientnet_lite0", SMALL["image_size"])
    photo = skimage_data / "chelsea.png"
    queries = {"shrunk to 32×32": data.load_image(photo, size=32), "full size": data.load_image(photo)}
    d_test = np.sort(pairwise_distances(f_test, f_train), axis=1)[:, :5].mean(axis=1)
    assert m["test_query_median_distance"] == pytest.approx(float(np.median(d_test)), rel=1e-5)
    domain = m["outside_query_domain"]
    assert set(domain) == set(queries)
    for name, image in queries.items():
        query = features.featurize_images(image[None], "efficientnet_lite0", SMALL["image_size"], use_cache=False)
        d = pairwise_distances(query, f_train)[0]
        nearest = np.argsort(d, kind="stable")[:5]
        assert domain[name]["mean_distance"] == pytest.approx(float(d[nearest].mean()), rel=1e-4), name
        assert domain[name]["cats"] == int((train.labels[nearest] == train.class_names.index("cat")).sum()), name
        assert domain[name]["test_images_farther"] == pytest.approx(float(np.mean(d_test > d[nearest].mean())))
    # what the text below the figures says
    assert domain["full size"]["mean_distance"] > domain["shrunk to 32×32"]["mean_distance"]
    assert domain["full size"]["test_images_farther"] < min(0.1, domain["shrunk to 32×32"]["test_images_farther"])
    assert domain["shrunk to 32×32"]["test_images_farther"] > 0.1
    # exercise 4.2 asks about the first dog, not the first test image (the car query, shown with its neighbours)
    lesson4 = nbformat.read(course["build"] / "notebooks" / "04_image_retrieval.ipynb", as_version=4)
    asked = next(c.source for c in lesson4.cells if c.cell_type == "code" and 'checks.check("4.2"' in c.source)
    assert "dog_query" in asked and {r["query"] for r in m["query_results"]} == {"cat", "automobile"}
