"""The exercise checks of Lesson 7: a Keras classifier on deep features (imported when a check of
lesson 7 first runs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import exercise


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    """``model.predict(x)``: what the lessons call, so the check sees the student's predictions.
    (Called directly without ``training=False``, a model whose ``Resizing`` layer comes before a
    nested model ran that model's BatchNorm layers in training mode, Keras 3.15.)"""
    return np.asarray(model.predict(np.asarray(x), verbose=0))


def _keras_head_accuracy(model: Any, features: np.ndarray, labels: np.ndarray) -> float | None:
    """Validation accuracy of a Keras model that takes the feature vectors (None for anything
    else)."""
    try:
        takes = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        # None, a model never built or called
        return None
    if takes != tuple(np.asarray(features).shape[1:]):
        return None
    predicted = _predict(model, features).argmax(axis=1)
    return float((predicted == np.asarray(labels)).mean())


@exercise("7.1", tolerance=1e-4, hint="p = best_head.predict(z_val); "
                                      "-np.log(p[np.arange(len(y_val)), y_val]) is each image's "
                                      "loss; average it over the images with y_val == the cat "
                                      "label")
def _(model, features, labels, class_names, class_name):
    labels = np.asarray(labels)
    probabilities = np.clip(_predict(model, features).astype(np.float64), 1e-7, 1)
    losses = -np.log(probabilities[np.arange(len(labels)), labels])
    return float(losses[labels == list(class_names).index(class_name)].mean())


@exercise("7.2", tolerance=1e-5, hint="compile make_head() with keras.optimizers.Adam("
                                      "learning_rate=10 * learning_rate), fit it with a new "
                                      "EarlyStopping, then the share of "
                                      "predict(z_val).argmax(axis=1) == y_val, as computed (not "
                                      "rounded)")
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


@exercise("7.3", tolerance=1e-5, hint="keras.Sequential([keras.Input(...), "
                                      "keras.layers.Dense(64, activation=\"relu\"), "
                                      "keras.layers.Dense(4, activation=\"softmax\")]); compile, "
                                      "fit, then the share of predict(z_val).argmax(axis=1) == "
                                      "y_val, as computed")
def _(model, features, labels):
    # right only for a head with a hidden Dense layer before its output layer
    import keras  # here, not at the top: importing the checks must not start TensorFlow

    dense = [layer for layer in getattr(model, "layers", [])
             if isinstance(layer, keras.layers.Dense)]
    if len(dense) < 2:
        return None
    return _keras_head_accuracy(model, features, labels)
