"""Exercise self-checks: say whether a student's answer is right without showing the right answer.

Each exercise registers a function that computes its expected answer from the run's own objects (the data,
the fitted models), so the expected value follows the notebook's parameters and never sits on screen beside
``answer = ...``. A check cell holds only the student's answer and the objects the check needs::

    answer = ...
    checks.check("3.2", answer, deep_accuracy=deep_accuracy, raw_accuracy=raw_accuracy, n_test=len(test))

Register an exercise next to the others with::

    @exercise("3.2", tolerance=0, hint="count images, not a fraction")
    def _(deep_accuracy, raw_accuracy, n_test):
        return round((deep_accuracy - raw_accuracy) * n_test)

When ``$DEEP_FEATURES_ANSWERS`` names a file (the course runner sets it for each notebook), every check that
computes its expected answer also appends it there as a JSON line (``{"exercise": id, "expected": value,
"tolerance": ...}``): the answer key of that run, which the tests compare with what the notebook printed before
each exercise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import faiss
import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, pairwise_distances
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .data import take_per_class
from .fine_tuning import activations, block_count
from .runtime import ANSWERS_ENV_VAR, CHECK_RESULTS_ENV_VAR


@dataclass(frozen=True)
class Exercise:
    """One registered exercise: how to compute its expected answer and how close an answer must be."""

    exercise_id: str
    expected: Callable[..., Any]
    tolerance: float
    hint: str


EXERCISES: dict[str, Exercise] = {}


def exercise(exercise_id: str, tolerance: float = 1e-6, hint: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``function(**objects) -> expected answer`` as the check of ``exercise_id``."""
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        EXERCISES[exercise_id] = Exercise(exercise_id, function, tolerance, hint)
        return function
    return register


def expected_answer(exercise_id: str, **objects: Any) -> Any:
    """The expected answer of ``exercise_id`` for these objects (for tests and instructors, not for cells)."""
    try:
        registered = EXERCISES[exercise_id]
    except KeyError:
        raise KeyError(f"unknown exercise {exercise_id!r}; registered: {', '.join(sorted(EXERCISES))}") from None
    return registered.expected(**objects)


def _same(answer: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    try:
        return bool(np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                                atol=tolerance, rtol=0))
    except (TypeError, ValueError):
        return False


def _record_result(exercise_id: str, status: str, answer: Any) -> None:
    """Append this check's result to ``$DEEP_FEATURES_CHECK_RESULTS`` when the grader set it (else nothing)."""
    path = os.environ.get(CHECK_RESULTS_ENV_VAR)
    if path:
        shown = repr(answer.item() if isinstance(answer, np.generic) else answer)  # 6, not np.int64(6)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        with open(path, "a", encoding="utf-8") as results:
            results.write(json.dumps({"exercise": exercise_id, "status": status, "answer": shown}) + "\n")


def _record_expected(registered: Exercise, expected: Any) -> None:
    """Append the expected answer to ``$DEEP_FEATURES_ANSWERS`` when it is set (never to the screen)."""
    path = os.environ.get(ANSWERS_ENV_VAR)
    if path:
        value = expected.tolist() if isinstance(expected, (np.ndarray, np.generic)) else expected
        record = {"exercise": registered.exercise_id, "expected": value, "tolerance": registered.tolerance}
        with open(path, "a", encoding="utf-8") as key:
            key.write(json.dumps(record, default=str) + "\n")


def check(exercise_id: str, answer: Any, **objects: Any) -> bool | None:
    """Print whether ``answer`` is right (never printing the expected value); None while it is still ``...``/None."""
    registered = EXERCISES.get(exercise_id)
    if registered is None:  # a typo in the id fails loudly, even before the student answers
        raise KeyError(f"unknown exercise {exercise_id!r}; registered: {', '.join(sorted(EXERCISES))}")
    if answer is None or answer is Ellipsis:
        _record_result(exercise_id, "not attempted", answer)
        print(f"[{exercise_id}] not answered yet: replace the ... with your answer and run the cell again.")
        return None
    expected = registered.expected(**objects)
    _record_expected(registered, expected)
    correct = _same(answer, expected, registered.tolerance)
    _record_result(exercise_id, "correct" if correct else "wrong", answer)
    if correct:
        print(f"[{exercise_id}] correct. Well done!")
        return True
    print(f"[{exercise_id}] not quite, try again." + (f" Hint: {registered.hint}" if registered.hint else ""))
    return False


# ---- Exercises, one block per lesson. ----


def _accuracy(model: Any, X: Any, y: np.ndarray) -> float:
    return float((np.asarray(model.predict(X)) == np.asarray(y)).mean())


def _nearest(queries: np.ndarray, collection: np.ndarray, k: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the ``k`` nearest collection rows, nearest first (an independent brute force)."""
    d = pairwise_distances(np.atleast_2d(queries), collection, metric=metric)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


# Lesson 1: the data.
@exercise("1.1", tolerance=1e-3, hint="count the bird labels and divide by the number of training images")
def _(train):
    return float((train.labels == train.class_names.index("bird")).mean())


@exercise("1.2", tolerance=0, hint="every image holds height x width x 3 numbers")
def _(train):
    return int(train.images.size)


@exercise("1.3", hint="average the pixels of each class's images; answer with a class name")
def _(train):
    means = [train.images[train.labels == i].mean() for i in range(len(train.class_names))]
    return train.class_names[int(np.argmax(means))]


@exercise("1.4", hint="gray = train.images.mean(axis=3); contrast = gray.std(axis=(1, 2)); average it per class; "
                      "answer with a class name")
def _(train):
    contrast = train.images.mean(axis=3).std(axis=(1, 2))
    means = [contrast[train.labels == i].mean() for i in range(len(train.class_names))]
    return train.class_names[int(np.argmax(means))]


# Lesson 2: the raw-pixel classifier.
@exercise("2.1", tolerance=1e-4, hint="shifted = np.roll(test.images, 4, axis=2); flatten it and divide by 255 "
                                      "as X_test was; raw_model.score(...) on it, not rounded")
def _(model, test_images, y_test):
    shifted = np.roll(np.asarray(test_images), 4, axis=2)  # every image 4 pixels to the right (axis 2: width)
    return _accuracy(model, shifted.reshape(len(shifted), -1).astype(np.float32) / 255, y_test)


@exercise("2.2", tolerance=1e-3, hint="the cat column of the confusion matrix (matrix[:, cat]): its diagonal "
                                      "count over the column's total")
def _(model, X_test, y_test, class_names):
    matrix = confusion_matrix(y_test, model.predict(X_test), labels=range(len(class_names)))
    cat = list(class_names).index("cat")
    return float(matrix[cat, cat] / matrix[:, cat].sum())


@exercise("2.3", hint='clone the pipeline, set_params(classify__C=C / 100), fit it and compare; answer "up" or "down"')
def _(model, X_train, y_train, X_test, y_test):
    smaller = clone(model).set_params(classify__C=model.get_params()["classify__C"] / 100).fit(X_train, y_train)
    return "up" if _accuracy(smaller, X_test, y_test) > _accuracy(model, X_test, y_test) else "down"


# Lesson 3: deep features.
@exercise("3.1", tolerance=0, hint="model.count_params() minus feature_model.count_params()")
def _(model, feature_model):
    return int(model.count_params() - feature_model.count_params())


@exercise("3.2", tolerance=0, hint="count the right predictions of each model, then subtract")
def _(deep_predicted, raw_predicted, y_test):
    y = np.asarray(y_test)
    return int((np.asarray(deep_predicted) == y).sum() - (np.asarray(raw_predicted) == y).sum())


@exercise("3.3", hint="per class: the fraction of its test images predicted right, deep minus raw")
def _(deep_predicted, raw_predicted, y_test, class_names):
    y = np.asarray(y_test)
    gain = [((np.asarray(deep_predicted) == y) & (y == c)).sum() - ((np.asarray(raw_predicted) == y) & (y == c)).sum()
            for c in range(len(class_names))]
    return class_names[int(np.argmax(gain))]


@exercise("3.4", tolerance=1e-3, hint="train_test_split(..., test_size=0.2, random_state=seed, stratify=labels), "
                                      "fit a clone of the model on the 80%, score it on the 20%")
def _(model, X_train, y_train, seed):
    fit_x, val_x, fit_y, val_y = train_test_split(X_train, y_train, test_size=0.2, random_state=seed, stratify=y_train)
    return _accuracy(clone(model).fit(fit_x, fit_y), val_x, val_y)


@exercise("3.5", tolerance=1e-3, hint="keras.Model(model.input, GlobalAveragePooling2D()(model.get_layer(name)"
                                      ".output)); predict on the images resized to the model's input size; "
                                      "fit StandardScaler + LogisticRegression on the training probe")
def _(model, layer, C, X_train, y_train, X_test, y_test):
    import keras  # here, not at the top: importing the checks must not start TensorFlow

    pixels = model.inputs[0]  # a keras.applications model built on input_tensor lists its inputs
    pooled = keras.layers.GlobalAveragePooling2D()(model.get_layer(layer).output)
    cut = keras.Model(pixels, pooled)
    size = pixels.shape[1:3]
    resize = keras.layers.Resizing(*size, interpolation="bilinear")

    images = np.concatenate([X_train, X_test]).astype("float32")
    cut_features = cut.predict(keras.ops.convert_to_numpy(resize(images)), verbose=0)  # one call: one trace
    f_train, f_test = np.split(cut_features, [len(X_train)])
    probe = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=C, max_iter=1000))])
    return _accuracy(probe.fit(f_train, y_train), f_test, y_test)


@exercise("3.6", tolerance=1e-3, hint="GridSearchCV(deep_model, {'features__backbone': candidates, "
                                      "'features__weights': ['imagenet']}, cv=cv_folds), fitted on the training "
                                      "images; its best_score_")
def _(model, backbones, cv_folds, X_train, y_train):
    scores = [cross_val_score(clone(model).set_params(features__backbone=name, features__weights="imagenet"),
                              X_train, y_train, cv=cv_folds).mean() for name in backbones]
    return float(max(scores))


# Lesson 4: retrieval.
@exercise("4.1", tolerance=1e-4, hint="NearestNeighbors(metric='cosine'); kneighbors returns the distances first, "
                                      "nearest first")
def _(query, collection):
    return float(_nearest(query, collection, 1, metric="cosine")[0][0, 0])


@exercise("4.2", tolerance=0, hint="kneighbors(..., n_neighbors=5), then compare the neighbours' labels")
def _(query, query_label, collection, collection_labels):
    _, idx = _nearest(query, collection, 5)
    return int((np.asarray(collection_labels)[idx[0]] == query_label).sum())


@exercise("4.3", tolerance=1e-3, hint="precision@10: the fraction of the 10 nearest with the query's class, "
                                      "averaged over all queries; use metric='cosine'")
def _(queries, query_labels, collection, collection_labels):
    _, idx = _nearest(queries, collection, 10, metric="cosine")
    return float((np.asarray(collection_labels)[idx] == np.asarray(query_labels)[:, None]).mean())


# Lesson 5: per-class distances.
@exercise("5.1", tolerance=0, hint="for every cat test image, compare the cat-dog column with the cat-cat column "
                                    "(the distances to the nearest training dog and cat) and count")
def _(f_test, y_test, f_train, y_train, class_names):
    cat, dog = list(class_names).index("cat"), list(class_names).index("dog")
    y_test, y_train = np.asarray(y_test), np.asarray(y_train)
    queries = f_test[y_test == cat]
    to_cat = _nearest(queries, f_train[y_train == cat], 1)[0][:, 0]
    to_dog = _nearest(queries, f_train[y_train == dog], 1)[0][:, 0]
    return int((to_dog < to_cat).sum())


@exercise("5.2", tolerance=1e-3, hint="the distance of each dog test image to its nearest training cat, averaged")
def _(dog_queries, cat_collection):
    return float(_nearest(dog_queries, cat_collection, 1)[0][:, 0].mean())


@exercise("5.3", tolerance=0, hint="kneighbors(n_neighbors=5) on each class's model; average each row's 5 distances")
def _(dog_queries, f_train, y_train, class_names):
    y_train = np.asarray(y_train)
    means = np.stack([_nearest(dog_queries, f_train[y_train == c], 5)[0].mean(axis=1)
                      for c in range(len(class_names))], axis=1)
    return int((means.argmin(axis=1) == list(class_names).index("dog")).sum())


# Lesson 6: few shots.
@exercise("6.1", tolerance=1e-3, hint="idx = data.take_per_class(y_train, 10, seed=seed); fit a clone on those rows")
def _(model, X_train, y_train, X_test, y_test, seed):
    idx = take_per_class(np.asarray(y_train), 10, seed=seed)
    return _accuracy(clone(model).fit(X_train[idx], np.asarray(y_train)[idx]), X_test, y_test)


@exercise("6.2", tolerance=1e-3, hint="for idx in draws: NearestCentroid().fit(X_train[idx], y_train[idx]), "
                                      "score it on the test set; average the scores")
def _(draws, X_train, y_train, X_test, y_test):
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    scores = []
    for idx in draws:  # the class of the nearest class mean by Euclidean distance, features not normalized
        classes = np.unique(y_train[idx])
        centroids = np.stack([np.asarray(X_train)[idx][y_train[idx] == c].mean(axis=0) for c in classes])
        nearest = _nearest(np.asarray(X_test), centroids, 1)[1][:, 0]
        scores.append(float((classes[nearest] == y_test).mean()))
    return float(np.mean(scores))


@exercise("6.3", tolerance=1e-3, hint="for idx in draws: fit KNeighborsClassifier(1, metric=\"cosine\") on "
                                      "X_train[idx], score on the test set; average the scores")
def _(draws, X_train, y_train, X_test, y_test):
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    scores = []
    for idx in draws:  # the class of the nearest shot by cosine distance
        nearest = _nearest(np.asarray(X_test), np.asarray(X_train)[idx], 1, metric="cosine")[1][:, 0]
        scores.append(float((y_train[idx][nearest] == y_test).mean()))
    return float(np.mean(scores))


# ---- Lesson 7: a Keras classifier on deep features ----

def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    """``model.predict(x)``: what the lessons call, so the check sees the student's predictions. (Called directly
    without ``training=False``, a model whose ``Resizing`` layer comes before a nested model ran that model's
    BatchNorm layers in training mode, Keras 3.15.)"""
    return np.asarray(model.predict(np.asarray(x), verbose=0))


def _keras_head_accuracy(model: Any, features: np.ndarray, labels: np.ndarray) -> float | None:
    """Validation accuracy of a Keras model that takes the feature vectors (None for anything else)."""
    try:
        takes = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):  # None, a model never built or called
        return None
    if takes != tuple(np.asarray(features).shape[1:]):
        return None
    predicted = _predict(model, features).argmax(axis=1)
    return float((predicted == np.asarray(labels)).mean())


@exercise("7.1", tolerance=1e-4, hint="p = best_head.predict(z_val); -np.log(p[np.arange(len(y_val)), y_val]) "
                                      "is each image's loss; average it over the images with y_val == the cat label")
def _(model, features, labels, class_names, class_name):
    labels = np.asarray(labels)
    probabilities = np.clip(_predict(model, features).astype(np.float64), 1e-7, 1)
    losses = -np.log(probabilities[np.arange(len(labels)), labels])
    return float(losses[labels == list(class_names).index(class_name)].mean())


@exercise("7.2", tolerance=1e-5, hint="compile make_head() with keras.optimizers.Adam(learning_rate=10 * "
                                      "learning_rate), fit it with a new EarlyStopping, then the share of "
                                      "predict(z_val).argmax(axis=1) == y_val, as computed (not rounded)")
def _(model, learning_rate, features, labels):
    # right only for a head compiled with Adam at that learning rate
    optimizer = getattr(model, "optimizer", None)
    try:
        rate = float(np.asarray(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):  # no model, not compiled, or a schedule
        return None
    if type(optimizer).__name__ != "Adam" or not np.isclose(rate, learning_rate, rtol=1e-6):
        return None
    return _keras_head_accuracy(model, features, labels)


@exercise("7.3", tolerance=1e-5, hint="keras.Sequential([keras.Input(...), keras.layers.Dense(64, activation="
                                      "\"relu\"), keras.layers.Dense(4, activation=\"softmax\")]); compile, fit, "
                                      "then the share of predict(z_val).argmax(axis=1) == y_val, as computed")
def _(model, features, labels):
    # right only for a head with a hidden Dense layer before its output layer
    import keras  # here, not at the top: importing the checks must not start TensorFlow

    dense = [layer for layer in getattr(model, "layers", []) if isinstance(layer, keras.layers.Dense)]
    if len(dense) < 2:
        return None
    return _keras_head_accuracy(model, features, labels)


# ---- Lesson 8: fine-tuning ----

@exercise("8.1", tolerance=0, hint="count the validation images where fine_tuned_val_predicted == y_val "
                                    "and probe_val_predicted != y_val")
def _(fine_tuned_predicted, frozen_predicted, labels):
    labels = np.asarray(labels)
    return int(((np.asarray(fine_tuned_predicted) == labels) & (np.asarray(frozen_predicted) != labels)).sum())


@exercise("8.2", tolerance=0, hint="count images where fine_tuned_predicted == y_test and probe_predicted != y_test")
def _(fine_tuned_predicted, probe_predicted, labels):
    labels = np.asarray(labels)
    return int(((np.asarray(fine_tuned_predicted) == labels) & (np.asarray(probe_predicted) != labels)).sum())


@exercise("8.3", tolerance=1e-5, hint="last_bottom, last_top = cut(net.feature_model, n_blocks - 1); their "
                                      "activations; step 2 for 1 epoch; answer: the validation accuracy, as "
                                      "computed (not rounded)")
def _(bottom, model, network, images, labels):
    # right only for a bottom cut just before the network's last block, and a model that takes its activations
    if bottom is None or model is None or block_count(bottom) != block_count(network) - 1:
        return None
    try:
        takes = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):  # a model never built or called
        return None
    if takes != tuple(bottom.output.shape[1:]):
        return None
    predicted = _predict(model, activations(bottom, images)).argmax(axis=1)
    return float((predicted == np.asarray(labels)).mean())


# ---- Lesson 9: search a large collection ----

def _exact_top(exact: Any, queries: np.ndarray, k: int) -> np.ndarray:
    return exact.search(np.atleast_2d(queries).astype(np.float32), k)[1]


@exercise("9.1", tolerance=1e-3, hint="faiss.IndexHNSWFlat(collection.shape[1], 2, faiss.METRIC_INNER_PRODUCT), "
                                      "efConstruction = 64, add the collection, efSearch = ef_search; search the "
                                      "queries with k=10: the mean share of each query's exact 10 (flat_rows) found")
def _(approximate, exact, queries, ef_search):
    # right only for an HNSW graph of the whole collection with 2 links per image (layer 0 holds 2 x 2): its own
    # recall@10 at efSearch = ef_search, whatever graph its build made
    graph = getattr(approximate, "hnsw", None)
    if graph is None or graph.nb_neighbors(1) != 2 or approximate.ntotal != exact.ntotal:
        return None
    probe = faiss.clone_index(approximate)  # the student's index keeps its own efSearch
    probe.hnsw.efSearch = ef_search
    queries = np.atleast_2d(queries).astype(np.float32)
    found = probe.search(queries, 10)[1]
    truth = _exact_top(exact, queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))


@exercise("9.2", tolerance=1e-3, hint="hnsw.hnsw.efSearch = 8, search with k=10, then the mean share of each "
                                      "query's exact 10 found")
def _(approximate, queries, exact_rows):
    probe = faiss.clone_index(approximate)  # the student's index keeps its own efSearch
    probe.hnsw.efSearch = 8
    found = probe.search(queries, 10)[1]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, np.asarray(exact_rows)[:, :10])]))


@exercise("9.3", tolerance=1.0, hint="faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT), add the collection, "
                                    "then faiss.serialize_index(index).nbytes / index.ntotal")
def _(collection):
    index = faiss.IndexHNSWFlat(collection.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.add(np.asarray(collection, dtype=np.float32))
    return faiss.serialize_index(index).nbytes / index.ntotal
