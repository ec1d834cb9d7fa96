"""The exercise checks of Lesson 4: retrieval."""

import numpy as np

from ._common import _nearest
from . import exercise


@exercise("4.1", "NearestNeighbors(metric='cosine'); kneighbors returns the distances first, "
                 "nearest first", tolerance=1e-4)
def _(query, collection):
    return float(_nearest(query, collection, 1, metric="cosine")[0][0, 0])


@exercise("4.2", "kneighbors(..., n_neighbors=5), then compare the neighbours' labels",
                 tolerance=0)
def _(query, query_label, collection, collection_labels):
    _, idx = _nearest(query, collection, 5)
    return int((np.asarray(collection_labels)[idx[0]] == query_label).sum())


@exercise("4.3", "precision@10: the fraction of the 10 nearest with the query's class, averaged "
                 "over all queries; use metric='cosine'", tolerance=1e-3)
def _(queries, query_labels, collection, collection_labels):
    _, idx = _nearest(queries, collection, 10, metric="cosine")
    return float((np.asarray(collection_labels)[idx] == np.asarray(query_labels)[:, None]).mean())


@exercise("4.5", "np.ascontiguousarray(images[:, :, ::-1]) mirrors them; featurize them with "
                 "features.featurize_images(..., backbone, image_size), 5 nearest (Euclidean), "
                 "then the fraction with the query's class", tolerance=1e-3)
def _(images, labels, collection, collection_labels, backbone, image_size):
    from ..features import featurize_images  # here: importing the checks starts no featurizer
    mirrored = np.ascontiguousarray(np.asarray(images)[:, :, ::-1])  # columns reversed
    _, idx = _nearest(featurize_images(mirrored, backbone, image_size), collection, 5)
    return float((np.asarray(collection_labels)[idx] == np.asarray(labels)[:, None]).mean())
