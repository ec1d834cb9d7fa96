"""The exercise checks of Lesson 2: the raw-pixel classifier."""

import numpy as np
from sklearn.base import clone
from sklearn.metrics import confusion_matrix

from ._common import _accuracy
from . import exercise


@exercise("2.1", "shifted = np.roll(test.images, 4, axis=2); flatten it and divide by 255 as "
                 "X_test was; raw_model.score(...) on it, not rounded", tolerance=1e-4)
def _(model, test_images, y_test):
    shifted = np.roll(np.asarray(test_images), 4, axis=2)  # 4 pixels to the right
    return _accuracy(model, shifted.reshape(len(shifted), -1).astype(np.float32) / 255, y_test)


@exercise("2.2", "the cat column of the confusion matrix (matrix[:, cat]): its diagonal count over "
                 "the column's total", tolerance=1e-3)
def _(model, X_test, y_test, class_names):
    matrix = confusion_matrix(y_test, model.predict(X_test), labels=range(len(class_names)))
    cat = list(class_names).index("cat")
    return float(matrix[cat, cat] / matrix[:, cat].sum())


@exercise("2.3", "clone the pipeline, set_params(classify__C=C / 100), fit it and compare; answer "
                 '"up" or "down"')
def _(model, X_train, y_train, X_test, y_test):
    smaller = clone(model).set_params(classify__C=model.get_params()["classify__C"] / 100)
    smaller.fit(X_train, y_train)
    return "up" if _accuracy(smaller, X_test, y_test) > _accuracy(model, X_test, y_test) else "down"
