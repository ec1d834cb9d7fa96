"""deep-features: pretrained deep features for image recognition and retrieval (course toolkit)."""

import os as _os

# Hide TensorFlow's C++ start-up chatter (CUDA probing, CPU flags) that confuses students; errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
