"""The exercise checks of Lesson 8: fine-tuning."""

from ..fine_tuning import activations, block_count
from ._common import _right_only_by
from .lesson07 import _head_accuracy, _takes
from . import exercise


@exercise("8.1", "count the validation images where fine_tuned_val_predicted == y_val and "
                 "probe_val_predicted != y_val", tolerance=0)
def _(fine_tuned_predicted, frozen_predicted, labels):
    return _right_only_by(fine_tuned_predicted, frozen_predicted, labels)


@exercise("8.2", "count images where fine_tuned_predicted == y_test and probe_predicted != y_test",
                 tolerance=0)
def _(fine_tuned_predicted, probe_predicted, labels):
    return _right_only_by(fine_tuned_predicted, probe_predicted, labels)


@exercise("8.3", "last_bottom, last_top = cut(net.feature_model, n_blocks - 1); their activations; "
                 "step 2 for 1 epoch; answer: the validation accuracy, as computed (not rounded)",
                 tolerance=1e-5)
def _(bottom, model, network, images, labels):
    # right only for a bottom cut just before the network's last block, and a top that takes it
    right_cut = bottom is not None and block_count(bottom) == block_count(network) - 1
    if not right_cut or _takes(model) != tuple(bottom.output.shape[1:]):
        return None
    return _head_accuracy(model, activations(bottom, images), labels)
