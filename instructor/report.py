"""The course report: this run's figures beside the classic course's, as pandas tables (``results.md``).

Metrics are found by NAME in the lessons' metrics files (the first lesson, in course order, that wrote the key),
never by lesson number, so renumbering or adding a lesson never blanks the report. A missing figure shows as "—".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pandas as pd

from utils.notebook import to_jsonable
from utils.runtime import atomic_write

from . import COURSE_TITLE

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


def _fmt(value: Any) -> str:
    if value is None or value == "" or isinstance(value, (dict, list)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _mapping(value: Any) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


def _lesson_metrics(results: Mapping[str, Any]) -> list[dict]:
    """The lessons' metrics dicts in course order (files that are missing or odd are skipped)."""
    return [m for m in _mapping(results.get("metrics")).values() if isinstance(m, Mapping)]


def metric(results: Mapping[str, Any], key: str, beside: str | None = None, without: str | None = None) -> Any:
    """The first value of ``key`` in the lessons' metrics, optionally only from a lesson that also wrote
    ``beside`` and did not write ``without`` (e.g. the per-class accuracy of the lesson whose headline is
    ``raw_pixel_accuracy``)."""
    for found in _lesson_metrics(results):
        if beside is not None and found.get(beside) is None or without is not None and without in found:
            continue
        if found.get(key) is not None:
            return found[key]
    return None


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


def results_tables(results: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The report as ``{heading: table}`` (cells already formatted; a missing figure is "—")."""
    classic = _mapping(results.get("classic")) or dict(CLASSIC_RESULTS)
    raw_classic = classic.get("raw_pixel_accuracy")
    if isinstance(raw_classic, (list, tuple)):
        raw_classic = "–".join(f"{v:.2f}" for v in raw_classic)
    dog_correct, dog_count = metric(results, "dog_1nn_correct"), metric(results, "dog_test_count")
    classic_dog = (classic.get("dog_1nn_correct"), classic.get("dog_test_count"))
    tables = {"Headline results": pd.DataFrame([
        ["Raw-pixel classifier accuracy", _fmt(metric(results, "raw_pixel_accuracy")), _fmt(raw_classic)],
        ["Deep-feature classifier accuracy", _fmt(metric(results, "deep_feature_accuracy")),
         _fmt(classic.get("deep_feature_accuracy"))],
        ["Dog test images whose 1-NN is a dog (Euclidean)", _count(dog_correct, dog_count),
         "{}/{}".format(*classic_dog)],
        ["Dog 1-NN accuracy", _fmt(metric(results, "dog_1nn_accuracy") or _ratio(dog_correct, dog_count)),
         _fmt(_ratio(*classic_dog))],
        ["Dog test images whose 1-NN is a dog, cosine distance", _count(metric(results, "dog_1nn_correct_cosine"),
                                                                     dog_count), MISSING],
        [f"Dog test images whose 1-NN is a dog, distance chosen by cross-validation on the training images "
         f"({metric(results, 'knn_metric') or '?'})",
         _count(metric(results, "dog_1nn_correct_chosen"), dog_count), MISSING],
        ["Retrieval precision@5, Euclidean / cosine", _pair(metric(results, "precision_at_5_euclidean"),
                                                             metric(results, "precision_at_5_cosine")), MISSING],
        ["Retrieval mean average precision, Euclidean / cosine",
         _pair(metric(results, "map_euclidean"), metric(results, "map_cosine")), MISSING],
        ["Deep feature dimension", _fmt(metric(results, "feature_dim")), MISSING],
    ], columns=["Measure", "This run", "Classic course"])}

    probe, tuned = metric(results, "linear_probe_accuracy"), metric(results, "fine_tuned_accuracy")
    if probe is not None or tuned is not None:  # the fine-tuning lesson ran
        size = metric(results, "image_size", beside="fine_tuned_accuracy")  # lesson 7's, maybe not lesson 3's
        at = f", {size} px" if size is not None else ""
        epochs = metric(results, "fine_tune_epochs_run")
        tables["Linear probe vs fine-tuned"] = pd.DataFrame(
            [[f"Linear probe (frozen backbone{at})", _fmt(metric(results, "probe_validation_accuracy")),
              _fmt(probe)],
             ["Frozen backbone, Keras head", _fmt(metric(results, "frozen_head_validation_accuracy")), MISSING],
             [f"Fine-tuned (from block {_fmt(metric(results, 'top_blocks_from'))}{at}"
              + (f", {epochs} epochs)" if epochs is not None else ")"),
              _fmt(metric(results, "fine_tuned_validation_accuracy")), _fmt(tuned)]],
            columns=["Model", "Validation accuracy (chooses)", "Test accuracy (scored once)"])

    raw = _mapping(metric(results, "raw_pixel_per_class_accuracy")
                   or metric(results, "per_class_accuracy", beside="raw_pixel_accuracy",
                             without="deep_feature_accuracy"))
    deep = _mapping(metric(results, "deep_feature_per_class_accuracy")
                    or metric(results, "per_class_accuracy", beside="deep_feature_accuracy"))
    nn = _mapping(metric(results, "per_class_1nn_accuracy"))
    classes = list(dict.fromkeys([*raw, *deep, *nn]))
    if classes:
        tables["Per-class accuracy"] = pd.DataFrame(
            [[c, _fmt(raw.get(c)), _fmt(deep.get(c)), _fmt(nn.get(c))] for c in classes],
            columns=["Class", "Raw pixels", "Deep features", f"1-NN ({metric(results, 'knn_metric') or 'Euclidean'})"])

    few = _mapping(metric(results, "few_shot"))
    shots = few.get("shots")
    if isinstance(shots, list) and shots:
        raw_curve, deep_curve = few.get("raw_pixel_accuracy"), few.get("deep_feature_accuracy")
        tables["Few-shot curve"] = pd.DataFrame(
            [[_fmt(s), _fmt(_at(raw_curve, i)), _fmt(_at(deep_curve, i))] for i, s in enumerate(shots)],
            columns=["Shots per class", "Raw pixels", "Deep features"])

    for key, heading, column, value in (
            ("backbone_comparison", "Backbone comparison", "Backbone", "Deep-feature test accuracy"),
            ("image_size_cv_accuracy", "Input size (main backbone), chosen on the training images",
             "Image size (px)", "Mean cross-validation accuracy on the training images")):
        found = _mapping(metric(results, key))
        if found:
            tables[heading] = pd.DataFrame([[str(k), _fmt(v)] for k, v in found.items()], columns=[column, value])

    run = _mapping(results.get("run"))
    info = [[key.replace("_", " "), _fmt(metric(results, key))] for key in RUN_KEYS]
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
