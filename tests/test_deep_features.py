"""utils.deep_features.DeepFeatures as a scikit-learn citizen: clone, params, Pipeline, GridSearchCV, joblib, files.

Real photos (scikit-image's cat and coffee cup), cut into small crops and featurized at 64 px, so it is fast.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from utils import deep_features
from utils.data import _ImageLoadError, load_image
from utils.features import featurize_files, featurize_images
from utils.deep_features import DeepFeatures
from _numerics import assert_close

SIZE = 64


@pytest.fixture(scope="module")
def crops(skimage_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """16 crops of 48x48: 8 of the cat photo (label 0), 8 of the coffee photo (label 1)."""
    images, labels = [], []
    for label, name in enumerate(["chelsea.png", "coffee.png"]):
        photo = load_image(skimage_data / name)
        for k in range(8):
            y, x = 20 + 25 * (k % 4), 40 + 60 * (k // 4)
            images.append(photo[y : y + 48, x : x + 48])
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def recognizer(size: int = SIZE) -> Pipeline:
    return Pipeline([("features", DeepFeatures(image_size=size)), ("scale", StandardScaler()),
                     ("classify", LogisticRegression(max_iter=500))])


def test_params_and_clone() -> None:
    step = DeepFeatures(image_size=96, batch_size=8)
    assert step.get_params() == {"backbone": "efficientnet_lite0", "image_size": 96, "batch_size": 8,
                                 "use_cache": True, "progress": None, "weights": "imagenet"}
    copy = clone(step)
    assert copy is not step and copy.get_params() == step.get_params()
    assert clone(step.set_params(image_size=64)).image_size == 64


def test_transform_equals_the_featurizer_and_names_features(crops) -> None:
    images, _ = crops
    step = DeepFeatures(image_size=SIZE).fit(images)
    out = step.transform(images)
    assert out.shape == (len(images), 1280) and out.dtype == np.float32
    assert_close(out, featurize_images(images, image_size=SIZE, use_cache=False))
    names = step.get_feature_names_out()
    assert len(names) == 1280 and names[0] == "efficientnet_lite0_0" and names[-1] == "efficientnet_lite0_1279"
    # A subset in another order is served from the in-process memo, row for row.
    order = np.array([5, 0, 3])
    np.testing.assert_array_equal(step.transform(images[order]), out[order])


def test_unfitted_and_bad_input_errors(crops) -> None:
    images, _ = crops
    with pytest.raises(Exception, match="not fitted"):
        DeepFeatures().transform(images)
    step = DeepFeatures(image_size=SIZE).fit(images)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        step.transform(images[0])
    with pytest.raises(TypeError, match="list of image file"):
        step.transform(np.zeros((2, 5)))
    with pytest.raises(TypeError, match="wrap it in a list"):
        step.transform("cat.png")
    with pytest.raises(KeyError):
        DeepFeatures(backbone="no_such_net").fit(images)


def test_pipeline_fits_and_predicts(crops) -> None:
    images, labels = crops
    model = recognizer().fit(images, labels)
    assert (model.predict(images) == labels).mean() == 1.0  # two very different photos: separable
    assert model.predict_proba(images).shape == (len(images), 2)


def test_grid_search_over_image_size(crops) -> None:
    images, labels = crops
    search = GridSearchCV(recognizer(), {"features__image_size": [48, SIZE]}, cv=2).fit(images, labels)
    assert search.best_params_["features__image_size"] in (48, SIZE)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.named_steps["features"].image_size == search.best_params_["features__image_size"]


def test_joblib_round_trip_predicts_the_same_without_a_tf_model(crops, tmp_path, monkeypatch) -> None:
    images, labels = crops
    model = recognizer().fit(images, labels)
    before = model.predict_proba(images)
    path = tmp_path / "recognizer.joblib"
    joblib.dump(model, path)
    assert path.stat().st_size < 200_000  # the scaler and the weights, not a network
    assert b"keras" not in pickle.dumps(model) and b"tensorflow" not in pickle.dumps(model)
    monkeypatch.setattr(deep_features, "_MEMO", {})  # the loaded model computes its features afresh
    loaded = joblib.load(path)
    assert_close(loaded.predict_proba(images), before)


def test_file_paths_in_and_a_bad_file_is_named(crops, tmp_path) -> None:
    images, labels = crops
    paths = []
    for i in (0, 9):
        paths.append(tmp_path / f"crop{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    step = DeepFeatures(image_size=SIZE).fit(paths)
    from_files = step.transform([str(p) for p in paths])
    assert from_files.shape == (2, 1280)
    # Files are decoded and resized by PIL, arrays in the graph: compare with the file featurizer itself.
    assert_close(from_files, featurize_files(paths, image_size=SIZE, use_cache=False).features)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(_ImageLoadError, match="broken.jpg"):
        step.transform([paths[0], bad])
