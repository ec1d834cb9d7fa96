"""deep-features, the tool: search and sort your own photo collection with pretrained deep features.

The ``deep-features`` command (:mod:`~deep_features.__main__`) and its Python API: an index, a
search, Dask featurization, a recognizer. It imports the lesson library :mod:`utils`, never the
reverse, and keeps its own copies of the few settings they share (``tests/test_layout.py`` checks).
"""

DEFAULT_BACKBONE = "efficientnet_lite0"  # the lessons' default too
