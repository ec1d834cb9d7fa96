"""deep-features, the tool: search and sort your own photo collection with pretrained deep features.

The ``deep-features`` command (:mod:`~deep_features.__main__`) and the Python API behind it: a faiss
index of a folder (:mod:`~deep_features.index`), a folder or index search
(:mod:`~deep_features.retrieval`), featurization on Dask (:mod:`~deep_features.dask_features`) and
a recognizer trained on a few photos per class (:mod:`~deep_features.recognizer`). It imports the
lesson library :mod:`utils`, never the reverse, and keeps its own copies of the few settings it
shares with it (checked by ``tests/test_layout.py``).
"""

DEFAULT_BACKBONE = "efficientnet_lite0"  # the lessons' default too
