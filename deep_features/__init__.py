"""deep-features, the tool: search and sort your own photo collection with pretrained deep features.

For people with folders of their own photos: the ``deep-features`` command (``python -m
deep_features``, :mod:`~deep_features.__main__`) and the Python API behind it: a faiss index of a
folder (:mod:`~deep_features.index`), a folder or index search (:mod:`~deep_features.retrieval`),
featurization on a Dask cluster (:mod:`~deep_features.dask_features`) and a recognizer trained on a
few photos per class (:mod:`~deep_features.recognizer`).

It is built on the lesson library :mod:`utils` (the backbones, the cached featurizer) and imports
it, never the reverse: ``utils`` works without the tool (``tests/test_layout.py``), while lessons 6
and 9 import the parts of the tool they teach. The tool keeps its own copies of the few settings
it shares with ``utils`` (the default backbone here; image sizes, precisions, the chunk size in its
modules); ``tests/test_layout.py`` checks that they agree.
"""

DEFAULT_BACKBONE = "efficientnet_lite0"  # the lessons' default too

