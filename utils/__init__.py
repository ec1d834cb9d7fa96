"""The lesson library of the deep-features course, for students: what the lessons in ``notebooks/``
call (data, offline weights, the feature cache, fast inference, plots, setup, exercise checks).

The ``deep-features`` tool for people's own photos is the package ``deep_features``, built on this
one; the instructor tooling is ``instructor``. ``import utils`` loads neither TensorFlow nor faiss.
"""

from .runtime import _quiet_tensorflow

_quiet_tensorflow()  # before any lesson imports keras: TensorFlow's start-up log confuses students
