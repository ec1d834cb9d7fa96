"""Your own recognizer from a folder of a few photos per class, as a file: ``deep-features
train-recognizer`` and ``recognize`` (lesson 6 ends with the same two calls in Python).

The model is lesson 6's ``Pipeline`` (``DeepFeatures`` -> L2 ``Normalizer`` -> logistic
regression), with what a person needs around it: its leave-one-out accuracy on the training photos
and the photos it gets wrong; ``unknown`` for a photo whose cosine similarity to the nearest class
centroid is below :attr:`Recognizer.threshold` (the lowest leave-one-out similarity of a training
photo: on the course classes, ``benchmarks/recognizer.py``, unrelated photos fall below it); and
that similarity as a readable score. A recognizer file is a ``joblib`` pickle: load only your own.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from utils.backbones import load_backbone
from utils.data import list_images, load_image_folder
from utils.deep_features import DeepFeatures
from utils.features import featurize_files
from utils.runtime import atomic_write

from . import DEFAULT_BACKBONE

RECOGNIZER_LAYOUT_VERSION = 1  # of the file the user keeps (not a cache entry): bump on change
UNKNOWN = "unknown"
FEW_SHOT_C = 1.0  # lesson 6's `few_shot_C`: logistic regression on L2-normalized features


class RecognizerError(ValueError):
    """A training folder, a recognizer file or photos the recognizer cannot use."""


def default_classifier() -> Pipeline:
    """L2-normalization + logistic regression (C=1, lesson 6's choice), with balanced class weights:
    leaving a photo out makes its class the smallest, and without them the leave-one-out accuracy
    on course photos (``benchmarks/recognizer.py``) falls from 0.605 to 0.265."""
    logistic = LogisticRegression(C=FEW_SHOT_C, class_weight="balanced", max_iter=1000)
    return Pipeline([("l2", Normalizer()), ("classify", logistic)])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def centroids(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """One unit vector per class: the normalized mean of its L2-normalized features."""
    unit = _unit(features)
    return _unit(np.stack([unit[labels == c].mean(axis=0) for c in range(n_classes)]))


def leave_one_out_similarities(features: np.ndarray, labels: np.ndarray,
                               n_classes: int) -> np.ndarray:
    """Each training photo's cosine similarity to the nearest class centroid computed without it."""
    unit = _unit(features)
    sums = np.stack([unit[labels == c].sum(axis=0) for c in range(n_classes)])
    counts = np.bincount(labels, minlength=n_classes)
    out = np.empty(len(unit))
    for i, (u, c) in enumerate(zip(unit, labels)):
        cents = sums.copy()
        cents[c] -= u
        alive = counts - (np.arange(n_classes) == c) > 0
        out[i] = float((_unit(cents[alive]) @ u).max())
    return out


def leave_one_out_predictions(classifier: Pipeline, features: np.ndarray,
                              labels: np.ndarray) -> np.ndarray:
    """Each photo's class by ``classifier`` fitted on all the others (one class left: that one)."""
    predicted = np.empty(len(labels), dtype=labels.dtype)
    for rest, (i,) in LeaveOneOut().split(features):
        if len(np.unique(labels[rest])) < 2:
            predicted[i] = labels[rest][0]
        else:
            fitted = clone(classifier).fit(features[rest], labels[rest])
            predicted[i] = fitted.predict(features[i:i + 1])[0]
    return predicted


@dataclass
class Recognition:
    """One photo's class (or ``unknown``), its cosine similarity to that (or the nearest) class."""
    path: Path
    label: str
    similarity: float
    nearest: str


@dataclass
class Recognizer:
    """A fitted recognizer: pipeline, classes, centroids, ``unknown`` threshold, leave-one-out."""
    pipeline: Pipeline
    class_names: list[str]
    centroids: np.ndarray
    threshold: float
    counts: dict[str, int]
    loo_accuracy: float
    loo_wrong: list[tuple[str, str, str]] = field(default_factory=list)  # (photo, true, predicted)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    format: int = RECOGNIZER_LAYOUT_VERSION

    @property
    def backbone(self) -> str:
        return self.pipeline.named_steps["features"].backbone

    @property
    def image_size(self) -> int:
        step = self.pipeline.named_steps["features"]
        return load_backbone(step.backbone, step.image_size).input_size

    def recognize(self, photos: Sequence[str | Path]
                  ) -> tuple[list[Recognition], list[tuple[Path, str]]]:
        """Classify photo files; unreadable ones are returned apart, with their reasons."""
        found = featurize_files([Path(p) for p in photos], self.backbone, self.image_size,
                                progress=None)
        answers = self.answer(found.features) if len(found.paths) else []
        results = [Recognition(Path(path), *answer) for path, answer in zip(found.paths, answers)]
        return results, [(Path(p), r) for p, r in found.skipped]

    def answer(self, features: np.ndarray) -> list[tuple[str, float, str]]:
        """(class or ``unknown``, cosine similarity, nearest class) for each row of features."""
        labels = self.pipeline[1:].predict(features)  # the steps after DeepFeatures
        sims = _unit(features) @ self.centroids.T
        out = []
        for label, row in zip(labels, sims):
            nearest = int(row.argmax())
            if row[nearest] < self.threshold:
                out.append((UNKNOWN, float(row[nearest]), self.class_names[nearest]))
            else:
                out.append((self.class_names[label], float(row[label]), self.class_names[nearest]))
        return out

    @classmethod
    def from_features(cls, features: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                      names: Sequence[str], backbone: str = DEFAULT_BACKBONE,
                      image_size: int | None = None,
                      classifier: Pipeline | None = None) -> "Recognizer":
        """Fit on the training photos' features (``names``: how mistakes are reported)."""
        features, labels = np.asarray(features), np.asarray(labels)
        n_classes = len(class_names)
        tail = clone(classifier if classifier is not None else default_classifier())
        predicted = leave_one_out_predictions(tail, features, labels)
        wrong = [(name, class_names[t], class_names[q])
                 for name, t, q in zip(names, labels, predicted) if t != q]
        threshold = float(leave_one_out_similarities(features, labels, n_classes).min())
        spec = load_backbone(backbone).spec
        size = int(image_size or spec.input_size)
        step = DeepFeatures(backbone=spec.name, image_size=size).fit(None)
        pipeline = Pipeline([("features", step), *tail.steps])
        pipeline[1:].fit(features, labels)
        counts = {c: int((labels == i).sum()) for i, c in enumerate(class_names)}
        return cls(pipeline, list(class_names),
                   centroids(features, labels, n_classes).astype(np.float32), threshold, counts,
                   float((predicted == labels).mean()), wrong)

    def describe(self) -> str:
        return (f"{len(self.class_names)} classes, {sum(self.counts.values())} photos, "
                f"{self.backbone} at {self.image_size} px, "
                f"{' -> '.join(self.pipeline.named_steps)}")

    def save(self, path: str | Path) -> Path:
        import joblib
        return atomic_write(Path(path), lambda handle: joblib.dump(self, handle))

    @classmethod
    def load(cls, path: str | Path) -> "Recognizer":
        """A recognizer file written by :meth:`save`; anything else: :class:`RecognizerError`."""
        import joblib
        path = Path(path)
        if not path.is_file():
            raise RecognizerError(f"{path}: no such recognizer file (make one with deep-features "
                                  "train-recognizer FOLDER --output FILE)")
        try:
            loaded = joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign pickle raises many types
            raise RecognizerError(f"{path}: not a recognizer file, or a damaged one "
                                  f"({type(exc).__name__}: {exc}); train it again with "
                                  "deep-features train-recognizer") from exc
        if not isinstance(loaded, cls):
            raise RecognizerError(f"{path}: holds a {type(loaded).__name__}, not a recognizer made "
                                  "by deep-features train-recognizer")
        version = getattr(loaded, "format", None)
        if version != RECOGNIZER_LAYOUT_VERSION:
            raise RecognizerError(f"{path}: recognizer format {version} is not this version's "
                                  f"({RECOGNIZER_LAYOUT_VERSION}); train it again")
        return loaded


def check_training_folder(folder: str | Path) -> None:
    """Refuse, naming the problem, a folder that cannot train a recognizer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RecognizerError(f"{folder}: no such folder. Make one sub-folder per class with its "
                              f"photos, e.g. {folder}/mug/1.jpg, {folder}/plant/1.jpg")

    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    loose = [p.name for p in list_images(folder, recursive=False)]
    if loose:
        more = f" (and {len(loose) - 3} more)" if len(loose) > 3 else ""
        raise RecognizerError(f"{folder}: photos lie in the top folder, not in a class folder: "
                              f"{', '.join(loose[:3])}{more}. Move each into {folder}/<class>/")
    classes = sorted(p for p in entries if p.is_dir())
    empty = [p.name for p in classes if not list_images(p)]
    if empty:
        raise RecognizerError(f"{folder}: class folder(s) with no photos: {', '.join(empty)}. Add "
                              "photos or remove the folder")
    if len(classes) < 2:
        found = f"only {classes[0].name}" if classes else "none"
        raise RecognizerError(f"{folder}: a recognizer needs at least 2 class folders with photos "
                              f"({found}); make one sub-folder per class, e.g. {folder}/mug/, "
                              f"{folder}/plant/")


def train_recognizer(folder: str | Path, backbone: str = DEFAULT_BACKBONE,
                     image_size: int | None = None, classifier: Pipeline | None = None,
                     progress: bool | None = None) -> Recognizer:
    """Fit a recognizer on ``folder/<class>/<photos>`` (2+ classes); unreadable: ``skipped``."""
    check_training_folder(folder)
    spec = load_backbone(backbone).spec
    size = spec.input_size if image_size is None else int(image_size)
    if size < 1:
        raise RecognizerError(f"image size must be a positive number of pixels, got {size}")
    images = load_image_folder(folder, min_classes=2, check_images=False)
    found = featurize_files(images.paths, spec.name, size, progress=progress)
    bad = {Path(p): r for p, r in found.skipped}
    keep = np.asarray([p not in bad for p in images.paths], dtype=bool)
    labels = images.labels[keep]
    missing = [c for i, c in enumerate(images.class_names) if not (labels == i).any()]
    if missing:
        first = next(iter(bad.values()), "")
        raise RecognizerError(f"{folder}: no readable photo in class folder(s) "
                              f"{', '.join(missing)} ({len(bad)} unreadable file(s); first: "
                              f"{first})")
    names = [str(Path(p).relative_to(folder)) for p, k in zip(images.paths, keep) if k]
    recognizer = Recognizer.from_features(found.features, labels, images.class_names, names,
                                          spec.name, size, classifier)
    recognizer.skipped = [(str(p), r) for p, r in [*images.skipped, *found.skipped]]
    return recognizer


def check_output_file(output: str | Path) -> Path:
    """The recognizer file to write, refused before any work if it cannot be written."""
    output = Path(output)
    if output.is_dir():
        raise RecognizerError(f"{output}: is a folder; give a file name, e.g. "
                              f"{output / 'my.recognizer'}")
    if not output.parent.is_dir():
        raise RecognizerError(f"{output.parent}: no such folder for the recognizer file "
                              f"{output.name}")
    if output.exists() and not os.access(output, os.W_OK):
        raise RecognizerError(f"{output}: cannot be overwritten (no write permission)")
    return output


def report_lines(recognizer: Recognizer) -> list[str]:
    """What ``train-recognizer`` prints (and lesson 6 shows)."""
    n = sum(recognizer.counts.values())
    lines = ["photos per class: " + ", ".join(f"{c} {k}" for c, k in recognizer.counts.items())]
    right = round(recognizer.loo_accuracy * n)
    lines.append(f"leave-one-out accuracy: {recognizer.loo_accuracy:.3f} ({right} of {n} photos, "
                 "each classified by a recognizer fitted on all the others)")
    alone = [c for c, k in recognizer.counts.items() if k == 1]
    if alone:
        lines.append(f"  {', '.join(alone)}: one photo only, which leave-one-out cannot get right; "
                     "add photos")
    for photo, true, predicted in recognizer.loo_wrong:
        lines.append(f"  wrong: {photo} ({true}) -> {predicted}")
    lines.append(f"unknown: a photo whose cosine similarity to every class centroid is below "
                 f"{recognizer.threshold:.3f} (the lowest leave-one-out similarity of a training "
                 "photo)")
    return lines
