"""Helpers shared by the lessons' checks."""

from typing import Any

import numpy as np
from sklearn.metrics import pairwise_distances


def _accuracy(model: Any, X: Any, y: np.ndarray) -> float:
    return float((np.asarray(model.predict(X)) == np.asarray(y)).mean())


def _right_only_by(predicted: Any, other: Any, labels: Any) -> int:
    """How many images ``predicted`` gets right and ``other`` gets wrong."""
    labels = np.asarray(labels)
    return int(((np.asarray(predicted) == labels) & (np.asarray(other) != labels)).sum())


def _nearest(queries: np.ndarray, collection: np.ndarray, k: int,
             metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the ``k`` nearest collection rows, nearest first (brute force)."""
    d = pairwise_distances(np.atleast_2d(queries), collection, metric=metric)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx
