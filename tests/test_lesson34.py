"""Lessons 3 and 4: lesson 3 runs a keras.applications backbone through the same cells (random weights, offline),
and no exercise of lessons 3 and 4 has its answer on screen above it."""

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


def _shown_before(nb, exercise_id: str) -> str:
    """Every output above the exercise cell that checks ``exercise_id``."""
    cells = nb.cells[: next(i for i, c in enumerate(nb.cells)
                            if c.cell_type == "code" and f'checks.check("{exercise_id}"' in c.source)]
    return "\n".join(_outputs(c) for c in cells if c.cell_type == "code")


def _lesson3_cut(name: str, weights: str | None, images: np.ndarray) -> np.ndarray:
    """The lesson's load and cut, written again: the constructor on 0-255 pixels, cut at the output layer's input."""
    import keras

    spec = backbones.get_spec(name)
    network_class, preprocess_input = spec.application()
    if weights is None:
        keras.utils.set_random_seed(backbones.RANDOM_WEIGHTS_SEED)
    pixels = keras.Input((SIZE, SIZE, 3))
    network = network_class(weights=weights, include_top=True, input_shape=(SIZE, SIZE, 3),
                            input_tensor=preprocess_input(pixels))
    cut = keras.Model(pixels, network.get_layer(spec.head).input)
    resized = keras.ops.convert_to_numpy(keras.layers.Resizing(SIZE, SIZE)(images.astype("float32")))
    return cut.predict(resized, verbose=0)


def test_lesson3_runs_a_keras_applications_backbone_with_random_weights(tmp_path, small_data_dir) -> None:
    parameters = dict(SMALL, data_dir=str(small_data_dir), backbone="mobilenet_v2", weights=None,
                      size_grid=[SIZE], compare_backbones=[], probe_per_class=6)
    results = run.run_course(tmp_path / "build", parameters,
                             notebooks=[NOTEBOOK_DIR / "03_deep_features_classifier.ipynb"], log=lambda _: None)
    m = results["metrics"]["03_deep_features_classifier"]
    assert m["head"] == "predictions" and m["feature_dim"] == 1280
    assert m["keras_vs_featurizer_relative_diff"] < 1e-4  # the lesson's cut against the featurizer, in the run
    nb = nbformat.read(tmp_path / "build" / "notebooks" / "03_deep_features_classifier.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "Network(weights=weights, include_top=True" in code and "preprocess_input(pixels)" in code
    assert "keras.applications.MobileNetV2(weights=None, include_top=True)" in "\n".join(map(_outputs, nb.cells))

    # The same cut, recomputed here, equals the featurizer with the same (seeded random) weights.
    train, test = data.load_course_data(small_data_dir, SMALL["n_train_per_class"], SMALL["n_test_per_class"])
    featurized = features.featurize_images(test.images[:8], "mobilenet_v2", SIZE, weights=None)
    cut = _lesson3_cut("mobilenet_v2", None, test.images[:8])
    assert np.abs(cut - featurized).max() <= 1e-4 * np.abs(cut).max()
    # ... and the lesson's classifier was trained on those features, not on ImageNet ones.
    f_train = features.featurize_images(train.images, "mobilenet_v2", SIZE, weights=None)
    f_test = features.featurize_images(test.images, "mobilenet_v2", SIZE, weights=None)
    probe = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=0.01, max_iter=1000))])
    assert m["deep_feature_accuracy"] == pytest.approx(probe.fit(f_train, train.labels).score(f_test, test.labels))
    assert backbones.weights_fingerprint("mobilenet_v2", None) != backbones.weights_fingerprint("mobilenet_v2")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    return built_real_course(tmp_path_factory)


def test_no_answer_of_lessons_3_and_4_is_on_screen_before_its_exercise(course) -> None:
    build = course["build"] / "notebooks"
    lesson3 = nbformat.read(build / "03_deep_features_classifier.ipynb", as_version=4)
    head = backbones.imagenet_model("efficientnet_lite0", SMALL["image_size"]).get_layer("fc")
    removed = head.count_params()  # exercise 3.1: what cutting the output layer removed
    assert not re.search(rf"\b({removed}|{removed:,})\b", _shown_before(lesson3, "3.1"))

    lesson4 = nbformat.read(build / "04_image_retrieval.ipynb", as_version=4)
    train, test = data.load_course_data(course["data_dir"], SMALL["n_train_per_class"], SMALL["n_test_per_class"])
    f_train = features.featurize_images(train.images, "efficientnet_lite0", SMALL["image_size"])
    f_test = features.featurize_images(test.images, "efficientnet_lite0", SMALL["image_size"])
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
