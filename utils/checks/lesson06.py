"""The exercise checks of Lesson 6: few shots."""

import numpy as np
from sklearn.base import clone

from ..data import take_per_class
from ._common import _accuracy, _nearest
from . import exercise


@exercise("6.1", "idx = data.take_per_class(y_train, 10, seed=seed); fit a clone on those rows",
                 tolerance=1e-3)
def _(model, X_train, y_train, X_test, y_test, seed):
    idx = take_per_class(np.asarray(y_train), 10, seed=seed)
    return _accuracy(clone(model).fit(X_train[idx], np.asarray(y_train)[idx]), X_test, y_test)


@exercise("6.2", "for idx in draws: NearestCentroid().fit(X_train[idx], y_train[idx]), score it on "
                 "the test set; average the scores", tolerance=1e-3)
def _(draws, X_train, y_train, X_test, y_test):
    X_train, y_train, X_test = np.asarray(X_train), np.asarray(y_train), np.asarray(X_test)

    def score(idx):  # the class of the nearest class mean by Euclidean distance, not normalized
        classes = np.unique(y_train[idx])
        centroids = np.stack([X_train[idx][y_train[idx] == c].mean(axis=0) for c in classes])
        return float((classes[_nearest(X_test, centroids, 1)[1][:, 0]] == y_test).mean())

    return float(np.mean([score(idx) for idx in draws]))


@exercise("6.3", "for idx in draws: fit KNeighborsClassifier(1, metric=\"cosine\") on "
                 "X_train[idx], score on the test set; average the scores", tolerance=1e-3)
def _(draws, X_train, y_train, X_test, y_test):
    X_train, y_train, X_test = np.asarray(X_train), np.asarray(y_train), np.asarray(X_test)

    def score(idx):  # the class of the nearest shot by cosine distance
        nearest = _nearest(X_test, X_train[idx], 1, metric="cosine")[1][:, 0]
        return float((y_train[idx][nearest] == y_test).mean())

    return float(np.mean([score(idx) for idx in draws]))
