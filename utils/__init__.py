"""deep-features: pretrained deep features for image recognition and retrieval (course toolkit)."""

from .runtime import _quiet_tensorflow

# TensorFlow's C++ start-up log (CPU flags, oneDNN) confuses students: quiet before any lesson
# imports keras; TensorFlow's errors and Python warnings still show.
_quiet_tensorflow()
