"""The exercise checks of Lesson 8: fine-tuning (imported when a check of lesson 8 first runs)."""

from __future__ import annotations

import numpy as np

from ..fine_tuning import activations, block_count

from ._common import _right_only_by
from .lesson07 import _predict
from . import exercise


@exercise("8.1", tolerance=0, hint="count the validation images where fine_tuned_val_predicted "
                                   "== y_val and probe_val_predicted != y_val")
def _(fine_tuned_predicted, frozen_predicted, labels):
    return _right_only_by(fine_tuned_predicted, frozen_predicted, labels)


@exercise("8.2", tolerance=0, hint="count images where fine_tuned_predicted == y_test and "
                                   "probe_predicted != y_test")
def _(fine_tuned_predicted, probe_predicted, labels):
    return _right_only_by(fine_tuned_predicted, probe_predicted, labels)


@exercise("8.3", tolerance=1e-5, hint="last_bottom, last_top = cut(net.feature_model, n_blocks - "
                                      "1); their activations; step 2 for 1 epoch; answer: the "
                                      "validation accuracy, as computed (not rounded)")
def _(bottom, model, network, images, labels):
    # right only for a bottom cut just before the network's last block, and a model that takes its
    # activations
    if bottom is None or model is None or block_count(bottom) != block_count(network) - 1:
        return None
    try:
        takes = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):  # a model never built or called
        return None
    if takes != tuple(bottom.output.shape[1:]):
        return None
    predicted = _predict(model, activations(bottom, images)).argmax(axis=1)
    return float((predicted == np.asarray(labels)).mean())
