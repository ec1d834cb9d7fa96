"""The declared metrics of every lesson: what ``lesson.finish(...)`` must write and the course report reads.

Each lesson is named by its title, the name given to :func:`utils.notebook.setup` without its number
(``"02 Raw-pixel classifier"`` -> ``"Raw-pixel classifier"``), so renumbering a lesson changes nothing.
:meth:`utils.notebook.LessonRun.finish` refuses an undeclared key and a missing declared one, and the report
(``instructor/report.py``) reads only declared metrics, by lesson and key: a renamed or misspelled key fails the
course run instead of showing as "—".

Adding a metric is one line in :data:`DECLARED`: ``"key": Metric("what it means", "format")``. The format is a
``format()`` spec for one value (``".3f"``, ``"d"``); ``""`` is a structure (dict, list) or free text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Metric:
    """One declared metric of a lesson."""

    meaning: str
    format: str = ""


#: Written by every lesson.
EVERY_LESSON: Final[Mapping[str, Metric]] = {
    "n_train": Metric("training images used", "d"),
    "n_test": Metric("test images used", "d"),
}

#: lesson title -> {metric key -> declaration}.
DECLARED: Final[Mapping[str, Mapping[str, Metric]]] = {
    "Explore the data": {
        "train_counts": Metric("training images per class"),
        "test_counts": Metric("test images per class"),
        "least_common_class": Metric("the class with the fewest training images"),
        "image_shape": Metric("height, width, channels of one image"),
    },
    "Raw-pixel classifier": {
        "raw_pixel_accuracy": Metric("test accuracy of logistic regression on raw pixels", ".3f"),
        "raw_pixel_train_accuracy": Metric("its training accuracy", ".3f"),
        "per_class_accuracy": Metric("its test accuracy per class"),
        "confusion_matrix": Metric("its test confusion matrix (rows: true class)"),
        "classes": Metric("class names, in label order"),
        "train_seconds": Metric("seconds to fit the pipeline", ".1f"),
    },
    "Deep-features classifier": {
        "deep_feature_accuracy": Metric("test accuracy of logistic regression on deep features", ".3f"),
        "raw_pixel_accuracy": Metric("the same classifier on raw pixels, same split", ".3f"),
        "per_class_accuracy": Metric("deep-feature test accuracy per class"),
        "confusion_matrix": Metric("deep-feature test confusion matrix (rows: true class)"),
        "classes": Metric("class names, in label order"),
        "feature_dim": Metric("deep feature dimension", "d"),
        "fit_seconds": Metric("seconds to fit the deep-feature pipeline", ".1f"),
        "keras_vs_featurizer_max_abs_diff": Metric("largest |feature_model.predict - cached featurizer|", ".1e"),
        "keras_vs_featurizer_relative_diff": Metric("that difference relative to the largest feature", ".1e"),
        "head": Metric("the layer the network is cut at (its input is the feature vector)"),
        "constructor": Metric("the constructor that built the network (keras.applications.X or backbones.X)"),
        "featurize_seconds": Metric("seconds to featurize n_timed training images, uncached, per input size"),
        "image_size_cv_accuracy": Metric("mean cross-validation accuracy per input size (training images)"),
        "best_image_size": Metric("input size chosen by cross-validation", "d"),
        "best_image_size_test_accuracy": Metric("test accuracy at that size", ".3f"),
        "size_grid": Metric("input sizes tried"),
        "cv_folds": Metric("cross-validation folds", "d"),
    },
    "Image retrieval": {
        "query_results": Metric("labels of the neighbours of the example queries"),
        "outside_query": Metric("file name of the photo from outside the set"),
        "outside_query_neighbor_labels": Metric("labels of its neighbours"),
        "outside_query_domain": Metric("the photo shrunk to 32x32 and at full size: cats among its neighbours, their "
                                       "mean distance, share of test images farther from theirs"),
        "test_query_median_distance": Metric("median over the test images of the mean distance to their neighbours",
                                             ".2f"),
        "retrieval_same_class_rate": Metric("share of the 5 neighbours of the same class (deep, Euclidean)", ".3f"),
        "raw_pixel_same_class_rate": Metric("the same on raw pixels", ".3f"),
        "precision_at_1_euclidean": Metric("precision@1, deep features, Euclidean", ".3f"),
        "precision_at_5_euclidean": Metric("precision@5, deep features, Euclidean", ".3f"),
        "map_euclidean": Metric("mean average precision, deep features, Euclidean", ".3f"),
        "precision_at_1_cosine": Metric("precision@1, deep features, cosine", ".3f"),
        "precision_at_5_cosine": Metric("precision@5, deep features, cosine", ".3f"),
        "map_cosine": Metric("mean average precision, deep features, cosine", ".3f"),
        "precision_at_5_raw_pixels": Metric("precision@5, raw pixels, Euclidean", ".3f"),
        "map_raw_pixels": Metric("mean average precision, raw pixels, Euclidean", ".3f"),
        "cosine_equals_normalized_euclidean": Metric("cosine ranks like Euclidean on unit vectors"),
        "best_metric": Metric("the distance with the higher mean average precision"),
        "tsne_sample": Metric("test images on the t-SNE map", "d"),
        "tsne_iterations": Metric("t-SNE steps", "d"),
        "tsne_seconds": Metric("t-SNE wall seconds", ".1f"),
        "tsne_cpu_seconds": Metric("t-SNE CPU seconds", ".1f"),
        "tsne_purity_raw_pixels": Metric("neighbourhood purity of the raw-pixel map", ".3f"),
        "tsne_purity_deep": Metric("neighbourhood purity of the deep-feature map", ".3f"),
    },
    "Per-class distances": {
        "example_image": Metric("the worked example: the first dog test image (index, class, the closer of cat and "
                                "dog)"),
        "example_nearest_distance": Metric("its distance to the nearest training cat and the nearest training dog"),
        "dog_1nn_correct": Metric("test dogs whose nearest training image is a dog (Euclidean)", "d"),
        "dog_1nn_correct_cosine": Metric("the same with cosine distance", "d"),
        "dog_test_count": Metric("test dogs", "d"),
        "dog_1nn_accuracy": Metric("share of test dogs whose 1-NN is a dog (Euclidean)", ".3f"),
        "dog_1nn_accuracy_cosine": Metric("the same with cosine distance", ".3f"),
        "knn_cv_accuracy": Metric("1-NN cross-validation accuracy per distance (training images)"),
        "knn_metric": Metric("the distance chosen by that cross-validation"),
        "dog_1nn_correct_chosen": Metric("test dogs whose 1-NN is a dog, chosen distance", "d"),
        "one_nn_accuracy": Metric("1-NN test accuracy over all classes, chosen distance", ".3f"),
        "per_class_1nn_accuracy": Metric("1-NN test accuracy per class, chosen distance"),
        "one_nn_confusion_matrix": Metric("1-NN test confusion matrix (rows: true class)"),
        "classes": Metric("class names, in label order"),
    },
    "Few-shot recognizer": {
        "few_shot": Metric("test accuracy vs training images per class: raw pixels, each classifier, the chosen "
                           "one; the fewest shots from which L2 + LR stays ahead of L2 + nearest centroid"),
        "few_shot_std": Metric("standard deviation of those accuracies over the random draws, per classifier"),
        "few_shot_validation": Metric("validation accuracy per classifier and shot count (training images "
                                      "outside the shots)"),
        "few_shot_mean_validation": Metric("mean of that validation accuracy over the shot counts, per classifier"),
        "few_shot_classifier": Metric("the few-shot classifier chosen on that validation"),
        "one_shot_accuracy": Metric("test accuracy of the chosen classifier from 1 image per class", ".3f"),
        "five_shot_accuracy": Metric("test accuracy of the chosen classifier from 5 images per class", ".3f"),
        "recognizer": Metric("the recognizer: source folder, classes, steps, test accuracy, predictions (with "
                             "the photos' true classes) and how many are right, leave-one-out accuracy and "
                             "predictions (cross_val_predict); the same folder through train_recognizer: its "
                             "leave-one-out accuracy and unknown threshold"),
    },
    "Keras classifier": {
        "logistic_validation_accuracy": Metric("validation accuracy of lesson 3's logistic regression (fit images)",
                                               ".3f"),
        "logistic_test_accuracy": Metric("its test accuracy", ".3f"),
        "head_validation_accuracy": Metric("validation accuracy of the Keras softmax head, early-stopped", ".3f"),
        "head_test_accuracy": Metric("its test accuracy", ".3f"),
        "head_val_predicted": Metric("its predicted class of every validation image"),
        "validation_images": Metric("indices of the validation images in the training set"),
        "long_curves": Metric("loss and accuracy per epoch of the fit without early stopping"),
        "early_stopping_curves": Metric("loss and accuracy per epoch of the early-stopped fit"),
        "best_epoch": Metric("epoch of the lowest validation loss without early stopping", "d"),
        "epochs_run": Metric("epochs the early-stopped fit ran", "d"),
        "restored_epoch": Metric("epoch whose weights EarlyStopping restored", "d"),
        "train_validation_gap": Metric("training minus validation accuracy at the last epoch, no early stopping",
                                       ".3f"),
        "head_parameters": Metric("parameters of the softmax head", "d"),
        "n_validation": Metric("training images held out for validation", "d"),
    },
    "Fine-tuning": {
        "probe_validation_accuracy": Metric("validation accuracy of the linear probe: the frozen network + lesson "
                                            "7's head", ".3f"),
        "probe_accuracy": Metric("its test accuracy", ".3f"),
        "before_fine_tuning_validation_accuracy": Metric("validation accuracy of the unfrozen model before "
                                                         "fine-tuning (evaluate)", ".3f"),
        "fine_tuned_validation_accuracy": Metric("validation accuracy of the fine-tuned network", ".3f"),
        "fine_tuned_accuracy": Metric("test accuracy of the assembled image model (pixels in, Keras): the "
                                      "lesson's test score", ".3f"),
        "activation_model_accuracy": Metric("test accuracy of the fine-tuned model on the cached activations",
                                            ".3f"),
        "image_activation_agreement": Metric("share of test images the image model and the activation model "
                                             "give the same class", ".4f"),
        "image_activation_difference": Metric("largest |image model - activation model| test probability", ".1e"),
        "chain_difference": Metric("largest |top(bottom(x)) - whole network(x)| on a few images", ".1e"),
        "top_difference": Metric("largest |frozen top(activations) - cached features| on 64 validation images", ".1e"),
        "batchnorm_moving_mean_change": Metric("largest change of the first fine-tuned BatchNorm layer's moving "
                                               "mean during fit", ".3f"),
        "train_validation_gap": Metric("training minus validation accuracy at the last fine-tuning epoch", ".3f"),
        "per_class_accuracy": Metric("test accuracy per class of each model"),
        "fine_tuned_confusion_matrix": Metric("image model's test confusion matrix (rows: true class)"),
        "top_blocks_from": Metric("first fine-tuned block", "d"),
        "head_epochs_run": Metric("epochs of the head on the frozen network", "d"),
        "fine_tune_epochs_run": Metric("fine-tuning epochs", "d"),
        "head_curves": Metric("the head's loss and accuracy per epoch"),
        "fine_tune_curves": Metric("fine-tuning loss and accuracy per epoch"),
        "photo": Metric("file name of the photo the image model classified"),
        "photo_shape": Metric("its height, width, channels"),
        "photo_probabilities": Metric("the reloaded image model's class probabilities for it"),
        "reload_difference": Metric("largest prediction difference after saving and reloading the image model", ".1e"),
        "model_megabytes": Metric("size of the saved .keras file, MB", ".1f"),
        "activation_shape": Metric("shape of the cached activations of one image"),
        "activation_seconds": Metric("seconds to compute (or read) the activations", ".1f"),
        "fine_tune_seconds": Metric("fine-tuning wall seconds", ".1f"),
        "fine_tune_cpu_seconds": Metric("fine-tuning CPU seconds", ".1f"),
        "image_model_test_seconds": Metric("wall seconds of the image model on the test images (Keras)", ".1f"),
        "cpu_seconds": Metric("CPU seconds of the whole notebook", ".1f"),
        "n_validation": Metric("training images held out for validation", "d"),
    },
    "Search a large collection": {
        "n_collection": Metric("images in the indexed collection", "d"),
        "n_queries": Metric("query images", "d"),
        "same_neighbors_flat_vs_sklearn": Metric("share of neighbours IndexFlatIP and NearestNeighbors agree on", ".3f"),
        "recall_at_10_hnsw": Metric("recall@10 of the HNSW index against exact search", ".3f"),
        "hnsw_m": Metric("HNSW links per node (M)", "d"),
        "ef_search": Metric("HNSW efSearch", "d"),
        "hnsw_build_seconds": Metric("seconds to build the HNSW index", ".2f"),
        "ms_per_query": Metric("milliseconds per query, per search method"),
        "bytes_per_image": Metric("index memory per image, per search method"),
        "synthetic_dim": Metric("numbers per random unit vector of the growing collection", "d"),
        "synthetic_growth": Metric("per size of the growing random collection: build seconds, microseconds per "
                                   "query, vectors compared per query and bytes per vector (exact and HNSW), "
                                   "HNSW recall@10"),
        "outside_query": Metric("file name of the photo from outside the set"),
        "outside_query_neighbor_labels": Metric("labels of its neighbours in the index"),
        "dask_workers": Metric("Dask workers of the LocalCluster", "d"),
        "dask_tasks": Metric("Dask tasks (chunks of files)", "d"),
        "dask_identical": Metric("Dask features equal the single-process ones"),
        "index_first_added": Metric("files featurized by the first indexing", "d"),
        "index_update_added": Metric("files featurized by the update", "d"),
        "index_update_kept": Metric("files the update kept from the index", "d"),
        "index_photo_first": Metric("first hit of the photo's query after the update"),
    },
}


class MetricsContractError(ValueError):
    """A lesson wrote metrics that differ from its declaration in :data:`DECLARED`."""


def lesson_title(name: str) -> str:
    """The lesson's title without its number: ``"03 Deep-features classifier"`` -> ``"Deep-features classifier"``."""
    return re.sub(r"^\s*\d+\s*[-_.·:]?\s*", "", name).strip()


def declared(lesson: str) -> dict[str, Metric]:
    """The metrics a lesson (its title, or its setup name) must write; an unknown lesson is an error."""
    title = lesson_title(lesson)
    if title not in DECLARED:
        raise MetricsContractError(f"lesson {title!r} declares no metrics: add it to DECLARED in "
                                   f"utils/lesson_metrics.py (declared: {', '.join(DECLARED)})")
    return {**EVERY_LESSON, **DECLARED[title]}


def check_written(lesson: str, keys: Iterable[str]) -> None:
    """Raise :class:`MetricsContractError` naming every undeclared key and every declared key not written."""
    expected, written = declared(lesson), set(keys)
    unknown, missing = sorted(written - set(expected)), sorted(set(expected) - written)
    problems = ([f"undeclared: {', '.join(unknown)}"] if unknown else []) + (
        [f"declared but not written: {', '.join(missing)}"] if missing else [])
    if problems:
        raise MetricsContractError(f"lesson {lesson_title(lesson)!r} metrics differ from utils/lesson_metrics.py "
                                   f"({'; '.join(problems)}): declare new keys there, one line each")


def metric(lesson: str, key: str) -> Metric:
    """The declaration of ``key`` in ``lesson``; an undeclared pair is an error (a typo in the report fails)."""
    found = declared(lesson).get(key)
    if found is None:
        raise MetricsContractError(f"lesson {lesson_title(lesson)!r} declares no metric {key!r}")
    return found
