"""The exercise checks of Lesson 7: a Keras classifier on deep features."""

import numpy as np

from . import exercise


def _predict(model, x):
    """``model.predict(x)``: what the lessons call, so the check sees the student's predictions.
    (Called directly without ``training=False``, a model whose ``Resizing`` layer comes before a
    nested model ran that model's BatchNorm layers in training mode, Keras 3.15.)"""
    return np.asarray(model.predict(np.asarray(x), verbose=0))


def _takes(model):
    """The input shape of a Keras model, without the batch (None for a model never built)."""
    try:
        return tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):  # None, never built or called
        return None


def _head_accuracy(model, x, labels):
    """The accuracy of a Keras model that takes ``x`` (None for anything else)."""
    if _takes(model) != np.shape(x)[1:]:
        return None
    return float((_predict(model, x).argmax(axis=1) == np.asarray(labels)).mean())


@exercise("7.1", "p = best_head.predict(z_val); -np.log(p[np.arange(len(y_val)), y_val]) is each "
                 "image's loss; average it over the images with y_val == the cat label",
                 tolerance=1e-4)
def _(model, features, labels, class_names, class_name):
    labels = np.asarray(labels)
    probabilities = np.clip(_predict(model, features).astype(np.float64), 1e-7, 1)
    losses = -np.log(probabilities[np.arange(len(labels)), labels])
    return float(losses[labels == list(class_names).index(class_name)].mean())


@exercise("7.2", "compile make_head() with keras.optimizers.Adam(learning_rate=10 * "
                 "learning_rate), fit it with a new EarlyStopping, then the share of "
                 "predict(z_val).argmax(axis=1) == y_val, as computed (not rounded)",
                 tolerance=1e-5)
def _(model, learning_rate, features, labels):
    # right only for a head compiled with Adam at that learning rate
    optimizer = getattr(model, "optimizer", None)
    try:
        rate = float(np.asarray(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):  # no model, not compiled, or a schedule
        return None
    if type(optimizer).__name__ != "Adam" or not np.isclose(rate, learning_rate, rtol=1e-6):
        return None
    return _head_accuracy(model, features, labels)


@exercise("7.3", 'keras.Sequential([keras.Input(...), keras.layers.Dense(64, activation="relu"), '
                 'keras.layers.Dense(4, activation="softmax")]); compile, fit, then the share of '
                 "predict(z_val).argmax(axis=1) == y_val, as computed", tolerance=1e-5)
def _(model, features, labels):
    # right only for a head with a hidden Dense layer before its output layer
    import keras  # here, not at the top: importing the checks must not start TensorFlow
    dense = [lay for lay in getattr(model, "layers", []) if isinstance(lay, keras.layers.Dense)]
    return _head_accuracy(model, features, labels) if len(dense) >= 2 else None
