"""The course report's contract: which figures each lesson's run yields, what they mean, where they are read.

The lessons do not write these figures: the course runner (:mod:`instructor.run`) appends one cell to the copy of
each notebook it executes, which calls :func:`write_lesson_metrics`; it evaluates each declared metric's *source*
(an expression over the notebook's variables, by default the metric's own name) in the kernel and writes the
values as JSON. The site hides that cell, the student copies never have it. The report
(:mod:`instructor.report`) reads only declared metrics, by lesson title and key: a renamed or misspelled key, or a
lesson variable that no longer exists, fails the course run instead of showing as "—".

A lesson is named by its title (:data:`NOTEBOOKS` maps the notebook's file name, without its number, to it), so
renumbering a lesson changes nothing. Adding a metric is one line in :data:`DECLARED`:
``"key": Metric("what it means", "format", "source")``. The format is a ``format()`` spec for one value
(``".3f"``, ``"d"``); ``""`` is a structure (dict, list) or free text.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from utils.runtime import atomic_write


@dataclass(frozen=True)
class Metric:
    """One declared metric of a lesson: its meaning, its format and the expression it is read from."""

    meaning: str
    format: str = ""
    source: str = ""  # an expression over the notebook's variables; "" means the metric's own name


#: Written by every lesson.
EVERY_LESSON: Final[Mapping[str, Metric]] = {
    "n_train": Metric("training images used", "d", "len(train)"),
    "n_test": Metric("test images used", "d", "len(test)"),
}

#: lesson title -> {metric key -> declaration}.
DECLARED: Final[Mapping[str, Mapping[str, Metric]]] = {
    "Explore the data": {
        "train_counts": Metric("training images per class"),
        "test_counts": Metric("test images per class"),
        "least_common_class": Metric("the class with the fewest training images", "", "least_common"),
        "image_shape": Metric("height, width, channels of one image", "", "list(image.shape)"),
    },
    "Raw-pixel classifier": {
        "raw_pixel_accuracy": Metric("test accuracy of logistic regression on raw pixels", ".3f", "test_accuracy"),
        "raw_pixel_train_accuracy": Metric("its training accuracy", ".3f", "train_accuracy"),
        "per_class_accuracy": Metric("its test accuracy per class", "", "per_class"),
        "confusion_matrix": Metric("its test confusion matrix (rows: true class)", "", "matrix"),
        "classes": Metric("class names, in label order", "", "class_names"),
        "train_seconds": Metric("seconds to fit the pipeline", ".1f"),
    },
    "Deep-features classifier": {
        "deep_feature_accuracy": Metric(
            "test accuracy of logistic regression on deep features",
            ".3f",
            "deep_accuracy",
        ),
        "raw_pixel_accuracy": Metric("the same classifier on raw pixels, same split", ".3f", "raw_accuracy"),
        "per_class_accuracy": Metric(
            "deep-feature test accuracy per class",
            "",
            "dict(zip(class_names, deep_matrix.diagonal() / deep_matrix.sum(axis=1)))",
        ),
        "confusion_matrix": Metric("deep-feature test confusion matrix (rows: true class)", "", "deep_matrix"),
        "classes": Metric("class names, in label order", "", "class_names"),
        "feature_dim": Metric("deep feature dimension", "d", "int(feature_model.output.shape[-1])"),
        "fit_seconds": Metric("seconds to fit the deep-feature pipeline", ".1f"),
        "keras_vs_featurizer_max_abs_diff": Metric(
            "largest |feature_model.predict - cached featurizer|",
            ".1e",
            "max_abs_diff",
        ),
        "keras_vs_featurizer_relative_diff": Metric(
            "that difference relative to the largest feature",
            ".1e",
            "relative_diff",
        ),
        "head": Metric("the layer the network is cut at (its input is the feature vector)", "", "spec.head"),
        "constructor": Metric("the constructor that built the network (keras.applications.X or backbones.X)"),
        "featurize_seconds": Metric("seconds to featurize n_timed training images, uncached, per input size"),
        "image_size_cv_accuracy": Metric(
            "mean cross-validation accuracy per input size (training images)",
            "",
            "cv_table['mean CV accuracy'].to_dict()",
        ),
        "best_image_size": Metric("input size chosen by cross-validation", "d", "best_size"),
        "best_image_size_test_accuracy": Metric("test accuracy at that size", ".3f", "best_size_test_accuracy"),
        "size_grid": Metric("input sizes tried"),
        "cv_folds": Metric("cross-validation folds", "d"),
    },
    "Image retrieval": {
        "query_results": Metric("labels of the neighbours of the example queries"),
        "outside_query": Metric("file name of the photo from outside the set", "", "Path(query_image).name"),
        "outside_query_neighbor_labels": Metric("labels of its neighbours", "", "photo_labels"),
        "outside_query_domain": Metric(
            ("the photo shrunk to 32x32 and at full size: cats among its neighbours, their mean "
             "distance, share of test images farther from theirs"),
            "",
            "domain",
        ),
        "test_query_median_distance": Metric(
            "median over the test images of the mean distance to their neighbours",
            ".2f",
            "float(np.median(test_mean))",
        ),
        "retrieval_same_class_rate": Metric(
            "share of the 5 neighbours of the same class (deep, Euclidean)",
            ".3f",
            "scores.loc['deep features, Euclidean', 'P@5']",
        ),
        "raw_pixel_same_class_rate": Metric(
            "the same on raw pixels",
            ".3f",
            "scores.loc['raw pixels, Euclidean', 'P@5']",
        ),
        "precision_at_1_euclidean": Metric(
            "precision@1, deep features, Euclidean",
            ".3f",
            "scores.loc['deep features, Euclidean', 'P@1']",
        ),
        "precision_at_5_euclidean": Metric(
            "precision@5, deep features, Euclidean",
            ".3f",
            "scores.loc['deep features, Euclidean', 'P@5']",
        ),
        "map_euclidean": Metric(
            "mean average precision, deep features, Euclidean",
            ".3f",
            "scores.loc['deep features, Euclidean', 'mAP']",
        ),
        "precision_at_1_cosine": Metric(
            "precision@1, deep features, cosine",
            ".3f",
            "scores.loc['deep features, cosine', 'P@1']",
        ),
        "precision_at_5_cosine": Metric(
            "precision@5, deep features, cosine",
            ".3f",
            "scores.loc['deep features, cosine', 'P@5']",
        ),
        "map_cosine": Metric(
            "mean average precision, deep features, cosine",
            ".3f",
            "scores.loc['deep features, cosine', 'mAP']",
        ),
        "precision_at_5_raw_pixels": Metric(
            "precision@5, raw pixels, Euclidean",
            ".3f",
            "scores.loc['raw pixels, Euclidean', 'P@5']",
        ),
        "map_raw_pixels": Metric(
            "mean average precision, raw pixels, Euclidean",
            ".3f",
            "scores.loc['raw pixels, Euclidean', 'mAP']",
        ),
        "cosine_equals_normalized_euclidean": Metric(
            "cosine ranks like Euclidean on unit vectors",
            "",
            "same_ranking",
        ),
        "best_metric": Metric("the distance with the higher mean average precision"),
        "tsne_sample": Metric("test images on the t-SNE map", "d", "len(sample)"),
        "tsne_iterations": Metric("t-SNE steps", "d"),
        "tsne_seconds": Metric("t-SNE wall seconds", ".1f"),
        "tsne_cpu_seconds": Metric("t-SNE CPU seconds", ".1f"),
        "tsne_purity_raw_pixels": Metric(
            "neighbourhood purity of the raw-pixel map",
            ".3f",
            "purity['raw pixels']",
        ),
        "tsne_purity_deep": Metric(
            "neighbourhood purity of the deep-feature map",
            ".3f",
            "purity[f'deep features ({backbone})']",
        ),
    },
    "Per-class distances": {
        "example_image": Metric(
            "the worked example: the first dog test image (index, class, the closer of cat and dog)",
            "",
            "{'index': first_dog, 'class': example_label, 'closer_to': closer}",
        ),
        "example_nearest_distance": Metric(
            "its distance to the nearest training cat and the nearest training dog",
            "",
            "example_distance",
        ),
        "dog_1nn_correct": Metric(
            "test dogs whose nearest training image is a dog (Euclidean)",
            "d",
            "dog_correct",
        ),
        "dog_1nn_correct_cosine": Metric("the same with cosine distance", "d", "dog_correct_cosine"),
        "dog_test_count": Metric("test dogs", "d", "len(dog_test)"),
        "dog_1nn_accuracy": Metric(
            "share of test dogs whose 1-NN is a dog (Euclidean)",
            ".3f",
            "dog_correct / len(dog_test)",
        ),
        "dog_1nn_accuracy_cosine": Metric(
            "the same with cosine distance",
            ".3f",
            "dog_correct_cosine / len(dog_test)",
        ),
        "knn_cv_accuracy": Metric(
            "1-NN cross-validation accuracy per distance (training images)",
            "",
            "cv_accuracy",
        ),
        "knn_metric": Metric("the distance chosen by that cross-validation", "", "chosen"),
        "dog_1nn_correct_chosen": Metric(
            "test dogs whose 1-NN is a dog, chosen distance",
            "d",
            "dog_correct_chosen",
        ),
        "one_nn_accuracy": Metric("1-NN test accuracy over all classes, chosen distance", ".3f"),
        "per_class_1nn_accuracy": Metric("1-NN test accuracy per class, chosen distance", "", "per_class_1nn"),
        "one_nn_confusion_matrix": Metric("1-NN test confusion matrix (rows: true class)", "", "one_nn_matrix"),
        "classes": Metric("class names, in label order", "", "class_names"),
    },
    "Few-shot recognizer": {
        "few_shot": Metric(
            ("test accuracy vs training images per class: raw pixels, each classifier, the chosen one; "
             "the fewest shots from which L2 + LR stays ahead of L2 + nearest centroid by more than "
             "two standard errors of its lead over the draws"),
            "",
            ("{'shots': curve.index.tolist(), 'classifier': chosen, 'raw_pixel_accuracy': "
             "raw_curve.tolist(), 'by_classifier': {name: curve[name].fillna(0).tolist() for name in "
             "classifiers}, 'deep_feature_accuracy': deep_curve.tolist(), "
             "'logistic_overtakes_centroid': crossover}"),
        ),
        "few_shot_std": Metric(
            "standard deviation of those accuracies over the random draws, per classifier",
            "",
            "{name: spread[name].fillna(0).tolist() for name in classifiers}",
        ),
        "few_shot_validation": Metric(
            "validation accuracy per classifier and shot count (training images outside the shots)",
            "",
            "{name: validation[name].fillna(0).tolist() for name in classifiers}",
        ),
        "few_shot_mean_validation": Metric(
            "mean of that validation accuracy over the shot counts, per classifier",
            "",
            "mean_validation.to_dict()",
        ),
        "few_shot_classifier": Metric("the few-shot classifier chosen on that validation", "", "chosen"),
        "one_shot_accuracy": Metric(
            "test accuracy of the chosen classifier from 1 image per class",
            ".3f",
            "deep_curve.get(1)",
        ),
        "five_shot_accuracy": Metric(
            "test accuracy of the chosen classifier from 5 images per class",
            ".3f",
            "deep_curve.get(5)",
        ),
        "recognizer": Metric(
            ("the recognizer: source folder, classes, steps, test accuracy, predictions (with the "
             "photos' true classes) and how many are right, leave-one-out accuracy and predictions "
             "(cross_val_predict); the same folder through train_recognizer: its leave-one-out accuracy "
             "and unknown threshold"),
            "",
            ("{'source': folder_source, 'classes': folder.class_names, 'images': len(folder.paths), "
             "'steps': list(recognizer.named_steps), 'skipped': len(folder.skipped), 'test_accuracy': "
             "recognizer_accuracy, 'predictions': predictions.to_dict(orient='records'), "
             "'new_photos_right': n_right, 'loo_accuracy': loo_accuracy, 'loo_predicted': "
             "loo_predicted, 'command_loo_accuracy': my_recognizer.loo_accuracy, 'unknown_threshold': "
             "my_recognizer.threshold}"),
        ),
    },
    "Keras classifier": {
        "logistic_validation_accuracy": Metric(
            "validation accuracy of lesson 3's logistic regression (fit images)",
            ".3f",
        ),
        "logistic_test_accuracy": Metric("its test accuracy", ".3f"),
        "head_validation_accuracy": Metric("validation accuracy of the Keras softmax head, early-stopped", ".3f"),
        "head_test_accuracy": Metric("its test accuracy", ".3f"),
        "head_val_predicted": Metric("its predicted class of every validation image"),
        "validation_images": Metric("indices of the validation images in the training set", "", "val_idx"),
        "long_curves": Metric("loss and accuracy per epoch of the fit without early stopping", "", "curves"),
        "early_stopping_curves": Metric(
            "loss and accuracy per epoch of the early-stopped fit",
            "",
            "stopped.history",
        ),
        "best_epoch": Metric("epoch of the lowest validation loss without early stopping", "d"),
        "epochs_run": Metric("epochs the early-stopped fit ran", "d"),
        "restored_epoch": Metric("epoch whose weights EarlyStopping restored", "d"),
        "train_validation_gap": Metric(
            "training minus validation accuracy at the last epoch, no early stopping",
            ".3f",
        ),
        "head_parameters": Metric("parameters of the softmax head", "d", "head.count_params()"),
        "n_validation": Metric("training images held out for validation", "d", "len(val_idx)"),
    },
    "Fine-tuning": {
        "probe_validation_accuracy": Metric(
            "validation accuracy of the linear probe: the frozen network + lesson 7's head",
            ".3f",
        ),
        "probe_accuracy": Metric("its test accuracy", ".3f"),
        "before_fine_tuning_validation_accuracy": Metric(
            "validation accuracy of the unfrozen model before fine-tuning (evaluate)",
            ".3f",
        ),
        "fine_tuned_validation_accuracy": Metric("validation accuracy of the fine-tuned network", ".3f"),
        "fine_tuned_accuracy": Metric(
            "test accuracy of the assembled image model (pixels in, Keras): the lesson's test score",
            ".3f",
        ),
        "activation_model_accuracy": Metric(
            "test accuracy of the fine-tuned model on the cached activations",
            ".3f",
        ),
        "image_activation_agreement": Metric(
            "share of test images the image model and the activation model give the same class",
            ".4f",
        ),
        "image_activation_difference": Metric("largest |image model - activation model| test probability", ".1e"),
        "chain_difference": Metric("largest |top(bottom(x)) - whole network(x)| on a few images", ".1e"),
        "top_difference": Metric(
            "largest |frozen top(activations) - cached features| on 64 validation images",
            ".1e",
        ),
        "batchnorm_moving_mean_change": Metric(
            "largest change of the first fine-tuned BatchNorm layer's moving mean during fit",
            ".3f",
        ),
        "train_validation_gap": Metric("training minus validation accuracy at the last fine-tuning epoch", ".3f"),
        "per_class_accuracy": Metric("test accuracy per class of each model", "", "per_class.to_dict()"),
        "fine_tuned_confusion_matrix": Metric(
            "image model's test confusion matrix (rows: true class)",
            "",
            "fine_tuned_matrix",
        ),
        "top_blocks_from": Metric("first fine-tuned block", "d", "first_top_block"),
        "head_epochs_run": Metric(
            "epochs of the head on the frozen network",
            "d",
            "len(head_history.history['loss'])",
        ),
        "fine_tune_epochs_run": Metric("fine-tuning epochs", "d", "len(history.history['loss'])"),
        "head_curves": Metric("the head's loss and accuracy per epoch", "", "head_history.history"),
        "fine_tune_curves": Metric("fine-tuning loss and accuracy per epoch", "", "history.history"),
        "photo": Metric("file name of the photo the image model classified", "", "photo_file.name"),
        "photo_shape": Metric("its height, width, channels", "", "photo.shape"),
        "photo_probabilities": Metric(
            "the reloaded image model's class probabilities for it",
            "",
            "dict(zip(classes, photo_probabilities))",
        ),
        "reload_difference": Metric(
            "largest prediction difference after saving and reloading the image model",
            ".1e",
        ),
        "scored_difference": Metric(
            "largest difference between Keras' predict and the test scoring (predict_images), 64 images",
            ".1e",
        ),
        "model_megabytes": Metric("size of the saved .keras file, MB", ".1f"),
        "activation_shape": Metric("shape of the cached activations of one image", "", "a_fit.shape[1:]"),
        "activation_seconds": Metric("seconds to compute (or read) the activations", ".1f"),
        "fine_tune_seconds": Metric("fine-tuning wall seconds", ".1f"),
        "fine_tune_cpu_seconds": Metric("fine-tuning CPU seconds", ".1f"),
        "image_model_test_seconds": Metric("wall seconds of the image model on the test images (TFLite, converted)", ".1f"),
        "cpu_seconds": Metric("CPU seconds of the whole notebook", ".1f", "time.process_time() - cpu_start"),
        "n_validation": Metric("training images held out for validation", "d", "len(val_idx)"),
    },
    "Search a large collection": {
        "n_collection": Metric("images in the indexed collection", "d", "len(f_collection)"),
        "n_queries": Metric("query images", "d", "len(f_test)"),
        "same_neighbors_flat_vs_sklearn": Metric(
            "share of neighbours IndexFlatIP and NearestNeighbors agree on",
            ".3f",
            "same",
        ),
        "recall_at_10_hnsw": Metric("recall@10 of the HNSW index against exact search", ".3f", "recall"),
        "hnsw_m": Metric("HNSW links per node (M)", "d"),
        "ef_search": Metric("HNSW efSearch", "d"),
        "hnsw_build_seconds": Metric("seconds to build the HNSW index", ".2f", "hnsw_build_s"),
        "ms_per_query": Metric(
            "milliseconds per query, per search method",
            "",
            "comparison['ms per query'].to_dict()",
        ),
        "bytes_per_image": Metric(
            "index memory per image, per search method",
            "",
            "comparison['bytes per image'].to_dict()",
        ),
        "synthetic_dim": Metric("numbers per random unit vector of the growing collection", "d"),
        "synthetic_growth": Metric(
            ("per size of the growing random collection: build seconds, microseconds per query, vectors "
             "compared per query and bytes per vector (exact and HNSW), HNSW recall@10"),
            "",
            "{n: {' '.join(k): v for k, v in row.items()} for n, row in rows.items()}",
        ),
        "outside_query": Metric("file name of the photo from outside the set", "", "Path(query_image).name"),
        "outside_query_neighbor_labels": Metric("labels of its neighbours in the index", "", "photo_labels"),
        "dask_workers": Metric("Dask workers of the LocalCluster", "d", "workers"),
        "dask_tasks": Metric("Dask tasks (chunks of files)", "d", "len(futures)"),
        "dask_identical": Metric("Dask features equal the single-process ones"),
        "index_first_added": Metric("files featurized by the first indexing", "d", "first.added"),
        "index_update_added": Metric("files featurized by the update", "d", "update.added"),
        "index_update_kept": Metric("files the update kept from the index", "d", "update.kept"),
        "index_photo_first": Metric(
            "first hit of the photo's query after the update",
            "",
            "saved.paths[saved_rows[0][0]].name",
        ),
    },
}


#: notebook file name without its number -> lesson title (the key of :data:`DECLARED`).
NOTEBOOKS: Final[Mapping[str, str]] = {
    "explore_data": "Explore the data",
    "raw_pixel_classifier": "Raw-pixel classifier",
    "deep_features_classifier": "Deep-features classifier",
    "image_retrieval": "Image retrieval",
    "per_class_distances": "Per-class distances",
    "few_shot_recognizer": "Few-shot recognizer",
    "keras_classifier": "Keras classifier",
    "fine_tuning": "Fine-tuning",
    "search_a_large_collection": "Search a large collection",
}


class MetricsContractError(ValueError):
    """A lesson's run does not yield the metrics :data:`DECLARED` names."""


def lesson_title(name: str) -> str:
    """The lesson's title without its number: ``"03 Deep-features classifier"`` -> ``"Deep-features classifier"``."""
    return re.sub(r"^\s*\d+\s*[-_.·:]?\s*", "", name).strip()


def declared(lesson: str) -> dict[str, Metric]:
    """The metrics a lesson (its title) yields; an unknown lesson is an error."""
    title = lesson_title(lesson)
    if title not in DECLARED:
        raise MetricsContractError(f"lesson {title!r} declares no metrics: add it to DECLARED in "
                                   f"instructor/metrics.py (declared: {', '.join(DECLARED)})")
    return {**EVERY_LESSON, **DECLARED[title]}


def notebook_lesson(stem: str) -> str | None:
    """The title of the lesson in notebook ``NN_name`` (its number ignored), or ``None`` for an undeclared one."""
    return NOTEBOOKS.get(re.sub(r"^\d+_", "", stem))


def metric(lesson: str, key: str) -> Metric:
    """The declaration of ``key`` in ``lesson``; an undeclared pair is an error (a typo in the report fails)."""
    found = declared(lesson).get(key)
    if found is None:
        raise MetricsContractError(f"lesson {lesson_title(lesson)!r} declares no metric {key!r}")
    return found


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and sets to plain JSON values.

    Non-finite floats become ``None`` so the file stays strict JSON.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item") and callable(value.item):
        return to_jsonable(value.item())
    return str(value)


def save_metrics(path: str | os.PathLike[str] | None, metrics: Mapping[str, Any]) -> dict:
    """Write metrics as JSON (atomically) and return the JSON-safe dict; only clean it when ``path`` is empty."""
    clean = to_jsonable(dict(metrics))
    if path:
        text = json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        atomic_write(path, text)
    return clean


def sources(lesson: str) -> dict[str, str]:
    """Each declared metric of a lesson and the expression it is read from."""
    return {key: declaration.source or key for key, declaration in declared(lesson).items()}


def notebook_contract(stem: str) -> tuple[str, dict[str, str]] | None:
    """The lesson title and metric sources of notebook ``NN_name``; ``None`` for a notebook of no lesson."""
    title = notebook_lesson(stem)
    return None if title is None else (title, sources(title))


def collect(sources: Mapping[str, str], namespace: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Evaluate each metric's source in ``namespace``: the values, and one line per failure."""
    values: dict[str, Any] = {}
    failures: list[str] = []
    scope = dict(namespace)
    for key, source in sources.items():
        try:
            values[key] = eval(source, scope)  # noqa: S307 -- the contract's own expressions
        except Exception as exc:  # a renamed variable, a changed table: name it, keep the others
            failures.append(f"{key} = {source}: {type(exc).__name__}: {exc}")
    return values, failures


def write_lesson_metrics(path: str | os.PathLike[str], lesson: str, sources: Mapping[str, str],
                         parameters: Iterable[str], namespace: Mapping[str, Any]) -> dict:
    """Write a lesson's metrics (each source evaluated in ``namespace``), its title and its ``parameters``.

    Called by the cell the course runner appends to a notebook. The file is written even when a source fails
    (nothing is lost); then :class:`MetricsContractError` names each failure, and the course run stops there.
    """
    values, failures = collect(sources, namespace)
    # a parameter of the same name as a metric (lesson 5's knn_metric: "auto") never hides the metric
    values.update({name: namespace[name] for name in parameters if name in namespace and name not in values})
    values["lesson"] = lesson
    saved = save_metrics(path, values)
    if failures:
        raise MetricsContractError(f"lesson {lesson!r}: metrics declared in instructor/metrics.py could not be "
                                   "read from the notebook's variables:\n  " + "\n  ".join(failures))
    return saved


def collect_cell_source(path: str | os.PathLike[str], lesson: str, sources: Mapping[str, str],
                        parameters: Iterable[str]) -> str:
    """The code of the cell the runner appends to a lesson: it writes the lesson's metrics to ``path``."""
    table = "".join(f"    {key!r}: {source!r},\n" for key, source in sources.items())
    return ("# Added by the course runner (instructor/run.py), not part of the lesson: the report's figures,\n"
            "# read from this notebook's variables as instructor/metrics.py declares them.\n"
            "from instructor.metrics import write_lesson_metrics\n\n"
            f"write_lesson_metrics({os.fspath(path)!r}, {lesson!r}, {{\n{table}}}, "
            f"{sorted(parameters)!r}, globals());")
