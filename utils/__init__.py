"""deep-features: pretrained deep features for image recognition and retrieval (course toolkit)."""

from .runtime import _quiet_tensorflow

_quiet_tensorflow()  # before any lesson imports keras: TensorFlow's start-up log confuses students
