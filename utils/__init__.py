"""deep-features: pretrained deep features for image recognition and retrieval (course toolkit)."""

from .runtime import quiet_tensorflow as _quiet_tensorflow

# TensorFlow's C++ start-up lines (CUDA probing, CPU flags) confuse students: ``import keras`` or
# ``import tensorflow`` after ``import utils`` leaves them out; TensorFlow's errors and Python
# warnings still show.
_quiet_tensorflow()
