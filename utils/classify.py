"""The simple classifier of the course: standardize, then multinomial logistic regression; and its evaluation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def raw_pixels(images: np.ndarray) -> np.ndarray:
    """Flatten (N, H, W, 3) uint8 images to (N, H*W*3) float32 values in [0, 1]: the raw-pixel features."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def train_logistic(features: np.ndarray, labels: np.ndarray, C: float = 1.0, max_iter: int = 1000) -> Pipeline:
    """Fit standardization + L2-regularized logistic regression (``C`` is the inverse regularization strength)."""
    if len(np.unique(labels)) < 2:
        raise ValueError("a classifier needs examples of at least two classes")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    return model.fit(features, labels)


def evaluate(predicted: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, per-class accuracy (recall) and confusion matrix of predicted vs true labels."""
    matrix = confusion_matrix(labels, predicted, labels=range(len(class_names)))
    per_class = {name: float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else float("nan")
                 for i, name in enumerate(class_names)}
    return {"accuracy": float(accuracy_score(labels, predicted)), "per_class_accuracy": per_class,
            "confusion_matrix": matrix}
