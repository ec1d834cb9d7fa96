"""The course report: this run's figures beside the classic course's, as pandas tables (``results.md``).

Every figure is read by lesson title and key, both declared in :mod:`instructor.metrics` (never by lesson
number, so renumbering a lesson changes nothing). Reading an undeclared figure is an error, and
:func:`report_gaps` lists the figures the report could not find for a lesson that ran; a figure of a lesson that
did not run shows as "—".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pandas as pd

from utils.runtime import atomic_write

from . import COURSE_TITLE
from . import metrics as lesson_metrics
from .metrics import to_jsonable

#: Headline figures of the classic course this one re-creates: the "Deep Features for Image Classification" and
#: "... for Image Retrieval" notebooks of the University of Washington's Machine Learning Foundations course
#: (GraphLab Create, 4-class CIFAR-10 subset: 2,005 training / 4,000 test images). Quoted from that course, not
#: measured here; defined only here, and shown beside this run's figures.
CLASSIC_RESULTS: Final[Mapping[str, Any]] = {
    "raw_pixel_accuracy": (0.47, 0.48),  # logistic regression on raw pixels
    "deep_feature_accuracy": 0.788,  # logistic regression on ImageNet deep features
    "dog_1nn_correct": 678,  # test dogs whose 1-NN (over all train classes) is a dog ...
    "dog_test_count": 1000,  # ... out of the 1,000 test dogs
}

#: Run parameters echoed by every notebook's metrics (the "Run" table).
RUN_KEYS: Final = ("backbone", "image_size", "n_train", "n_test", "seed")
MISSING: Final = "—"


def _fmt(value: Any, spec: str = "") -> str:
    if value is None or value == "" or isinstance(value, (dict, list)):
        return MISSING
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except ValueError:  # e.g. "d" for a float that holds a count
            pass
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _mapping(value: Any) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


class _Reader:
    """Reads declared figures from a run's results and remembers those it could not find in a lesson that ran."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.by_lesson = {m.get("lesson"): m for m in _mapping(results.get("metrics")).values()
                          if isinstance(m, Mapping)}
        self.gaps: list[str] = []

    def __call__(self, lesson: str, key: str) -> Any:
        lesson_metrics.metric(lesson, key)  # an undeclared figure is a bug in this report
        found = self.by_lesson.get(lesson)
        if found is None:
            return None
        if found.get(key) is None:
            self.gaps.append(f"{lesson}: {key}")
        return found.get(key)

    def text(self, lesson: str, key: str) -> str:
        """The figure formatted as its declaration says."""
        return _fmt(self(lesson, key), lesson_metrics.metric(lesson, key).format)

    def run_info(self, key: str) -> Any:
        """A run parameter (backbone, seed, ...) as the first lesson that echoed it recorded it."""
        return next((m[key] for m in self.by_lesson.values() if m.get(key) is not None), None)


def _count(correct: Any, total: Any) -> str:
    return f"{correct}/{total}" if correct is not None else MISSING


def _pair(a: Any, b: Any) -> str:
    return MISSING if a is None and b is None else f"{_fmt(a)} / {_fmt(b)}"


def _ratio(a: Any, b: Any) -> float | None:
    try:
        return float(a) / float(b)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _at(values: Any, index: int) -> Any:
    return values[index] if isinstance(values, list) and index < len(values) else None


RAW, DEEP, RETRIEVAL, DISTANCES, FEW_SHOT, KERAS, FINE_TUNING, LARGE_SEARCH = (
    "Raw-pixel classifier", "Deep-features classifier", "Image retrieval", "Per-class distances",
    "Few-shot recognizer", "Keras classifier", "Fine-tuning", "Search a large collection")


def _size(get: "_Reader", lesson: str) -> str:
    size = get.by_lesson[lesson].get("image_size")  # the lesson's own, maybe not lesson 3's
    return f", {size} px" if size is not None else ""


def _trained_rows(get: "_Reader") -> list[list[str]]:
    """Lesson 7's classifiers on the frozen features and lesson 8's fine-tuned network, each where it ran."""
    rows = []
    if KERAS in get.by_lesson:
        at = _size(get, KERAS)
        rows += [[f"Logistic regression on the frozen features{at}",
                  get.text(KERAS, "logistic_validation_accuracy"), get.text(KERAS, "logistic_test_accuracy")],
                 [f"Keras softmax head on the frozen features, early stopping{at}",
                  get.text(KERAS, "head_validation_accuracy"), get.text(KERAS, "head_test_accuracy")]]
    if FINE_TUNING in get.by_lesson:
        at = _size(get, FINE_TUNING)
        epochs = get(FINE_TUNING, "fine_tune_epochs_run")
        rows += [[f"Linear probe (frozen network + Keras head{at})", get.text(FINE_TUNING, "probe_validation_accuracy"),
                  get.text(FINE_TUNING, "probe_accuracy")],
                 [f"Fine-tuned (from block {get.text(FINE_TUNING, 'top_blocks_from')}{at}"
                  + (f", {epochs} epochs" if epochs is not None else "") + "): the image model, pixels in",
                  get.text(FINE_TUNING, "fine_tuned_validation_accuracy"),
                  get.text(FINE_TUNING, "fine_tuned_accuracy")],
                 ["Fine-tuned, on the cached activations", MISSING, get.text(FINE_TUNING, "activation_model_accuracy")]]
    return rows


def results_tables(results: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The report as ``{heading: table}`` (cells already formatted; a missing figure is "—")."""
    return _tables(results, _Reader(results))


def report_gaps(results: Mapping[str, Any]) -> list[str]:
    """``"lesson: key"`` for every figure the report shows that a lesson which ran left empty (should be none)."""
    reader = _Reader(results)
    _tables(results, reader)
    return sorted(set(reader.gaps))


def _tables(results: Mapping[str, Any], get: _Reader) -> dict[str, pd.DataFrame]:
    classic = _mapping(results.get("classic")) or dict(CLASSIC_RESULTS)
    raw_classic = classic.get("raw_pixel_accuracy")
    if isinstance(raw_classic, (list, tuple)):
        raw_classic = "–".join(f"{v:.2f}" for v in raw_classic)
    dog_correct, dog_count = get(DISTANCES, "dog_1nn_correct"), get(DISTANCES, "dog_test_count")
    classic_dog = (classic.get("dog_1nn_correct"), classic.get("dog_test_count"))
    knn_metric = get(DISTANCES, "knn_metric")
    tables = {"Headline results": pd.DataFrame([
        ["Raw-pixel classifier accuracy", get.text(RAW, "raw_pixel_accuracy"), _fmt(raw_classic)],
        ["Deep-feature classifier accuracy", get.text(DEEP, "deep_feature_accuracy"),
         _fmt(classic.get("deep_feature_accuracy"))],
        ["Dog test images whose 1-NN is a dog (Euclidean)", _count(dog_correct, dog_count),
         "{}/{}".format(*classic_dog)],
        ["Dog 1-NN accuracy", get.text(DISTANCES, "dog_1nn_accuracy"), _fmt(_ratio(*classic_dog))],
        ["Dog test images whose 1-NN is a dog, cosine distance",
         _count(get(DISTANCES, "dog_1nn_correct_cosine"), dog_count), MISSING],
        [f"Dog test images whose 1-NN is a dog, distance chosen by cross-validation on the training images "
         f"({knn_metric or '?'})", _count(get(DISTANCES, "dog_1nn_correct_chosen"), dog_count), MISSING],
        ["Retrieval precision@5, Euclidean / cosine", _pair(get(RETRIEVAL, "precision_at_5_euclidean"),
                                                             get(RETRIEVAL, "precision_at_5_cosine")), MISSING],
        ["Retrieval mean average precision, Euclidean / cosine",
         _pair(get(RETRIEVAL, "map_euclidean"), get(RETRIEVAL, "map_cosine")), MISSING],
        ["Deep feature dimension", get.text(DEEP, "feature_dim"), MISSING],
        [f"Few-shot test accuracy, 1 / 5 images per class ({get(FEW_SHOT, 'few_shot_classifier') or '?'}, "
         "chosen on validation)",
         _pair(get(FEW_SHOT, "one_shot_accuracy"), get(FEW_SHOT, "five_shot_accuracy")), MISSING],
        ["Search a large collection: HNSW recall@10 against exact search",
         get.text(LARGE_SEARCH, "recall_at_10_hnsw"), MISSING],
    ], columns=["Measure", "This run", "Classic course"])}

    trained = _trained_rows(get)
    if trained:
        tables["Keras classifier and fine-tuning"] = pd.DataFrame(
            trained, columns=["Model", "Validation accuracy (chooses)", "Test accuracy (scored once)"])

    raw, deep = _mapping(get(RAW, "per_class_accuracy")), _mapping(get(DEEP, "per_class_accuracy"))
    nn = _mapping(get(DISTANCES, "per_class_1nn_accuracy"))
    classes = list(dict.fromkeys([*raw, *deep, *nn]))
    if classes:
        tables["Per-class accuracy"] = pd.DataFrame(
            [[c, _fmt(raw.get(c)), _fmt(deep.get(c)), _fmt(nn.get(c))] for c in classes],
            columns=["Class", "Raw pixels", "Deep features", f"1-NN ({knn_metric or 'Euclidean'})"])

    few = _mapping(get(FEW_SHOT, "few_shot"))
    shots = few.get("shots")
    if isinstance(shots, list) and shots:
        chosen = few.get("classifier")
        curves = {"Raw pixels": few.get("raw_pixel_accuracy"),
                  "Deep features" + (f" ({chosen})" if chosen else ""): few.get("deep_feature_accuracy")}
        curves.update({f"Deep, {name}": values for name, values in _mapping(few.get("by_classifier")).items()
                       if name != chosen})
        tables["Few-shot curve"] = pd.DataFrame(
            [[_fmt(s), *(_fmt(_at(values, i)) for values in curves.values())] for i, s in enumerate(shots)],
            columns=["Shots per class", *curves])
    validation = _mapping(get(FEW_SHOT, "few_shot_mean_validation"))
    if validation:
        tables["Few-shot classifier, chosen on the training images outside the shots"] = pd.DataFrame(
            [[str(name), _fmt(value)] for name, value in validation.items()],
            columns=["Classifier", "Mean validation accuracy over the shot counts"])

    sizes = _mapping(get(DEEP, "image_size_cv_accuracy"))
    if sizes:
        tables["Input size (main backbone), chosen on the training images"] = pd.DataFrame(
            [[str(k), _fmt(v)] for k, v in sizes.items()],
            columns=["Image size (px)", "Mean cross-validation accuracy on the training images"])

    run = _mapping(results.get("run"))
    info = [[key.replace("_", " "), _fmt(get.run_info(key))] for key in RUN_KEYS]
    total = run.get("total_seconds")
    info += [["total seconds", f"{total:.1f}" if isinstance(total, (int, float)) else MISSING],
             ["date", _fmt(run.get("date"))], ["status", _fmt(run.get("status"))],
             ["platform", _fmt(run.get("platform"))]]
    info += [[name, _fmt(version)] for name, version in _mapping(run.get("versions")).items()]
    tables["Run"] = pd.DataFrame(info, columns=["Item", "Value"])

    seconds = _mapping(run.get("notebook_seconds"))
    names = [str(l.get("name")) for l in results.get("lessons") or [] if isinstance(l, Mapping)]
    if names:
        tables["Notebooks"] = pd.DataFrame(
            [[n, f"{seconds[n]:.1f}" if isinstance(seconds.get(n), (int, float)) else MISSING] for n in names],
            columns=["Notebook", "Seconds"])
    return tables


def tables_markdown(tables: Mapping[str, pd.DataFrame], level: int = 2) -> str:
    """The tables as GitHub-flavoured markdown, each under a heading."""
    return "\n".join(f"{'#' * level} {heading}\n\n{table.to_markdown(index=False, disable_numparse=True)}\n"
                     for heading, table in tables.items())


def report_markdown(results: Mapping[str, Any], level: int = 2) -> str:
    """The report's body: a failure note (if the run failed) and the tables."""
    run = _mapping(results.get("run"))
    status = f"**Run failed:** {run.get('error')}\n\n" if run.get("status") == "failed" else ""
    return (f"{status}The classic course's figures are quoted from the original course "
            "(`CLASSIC_RESULTS` in `instructor/report.py`), not measured here.\n\n"
            + tables_markdown(results_tables(results), level))


def write_results(build_dir: str | os.PathLike[str], results: Mapping[str, Any]) -> None:
    """Write ``results.json`` and ``results.md`` into the build folder."""
    build = Path(build_dir)
    atomic_write(build / "results.json", json.dumps(to_jsonable(results), indent=2, ensure_ascii=False) + "\n")
    title = results.get("course") or COURSE_TITLE
    atomic_write(build / "results.md", f"# {title} — results\n\n{report_markdown(results)}")
