"""The exercise checks of Lesson 5: per-class distances."""

import numpy as np

from ._common import _nearest
from . import exercise


@exercise("5.1", "for every cat test image, compare the cat-dog column with the cat-cat column "
                 "(the distances to the nearest training dog and cat) and count", tolerance=0)
def _(f_test, y_test, f_train, y_train, class_names):
    cat, dog = list(class_names).index("cat"), list(class_names).index("dog")
    y_train = np.asarray(y_train)
    queries = f_test[np.asarray(y_test) == cat]
    to_cat = _nearest(queries, f_train[y_train == cat], 1)[0][:, 0]
    to_dog = _nearest(queries, f_train[y_train == dog], 1)[0][:, 0]
    return int((to_dog < to_cat).sum())


@exercise("5.2", "the distance of each dog test image to its nearest training cat, averaged",
                 tolerance=1e-3)
def _(dog_queries, cat_collection):
    return float(_nearest(dog_queries, cat_collection, 1)[0][:, 0].mean())


@exercise("5.3", "kneighbors(n_neighbors=5) on each class's model; average each row's 5 distances",
                 tolerance=0)
def _(dog_queries, f_train, y_train, class_names):
    y_train = np.asarray(y_train)
    means = np.stack([_nearest(dog_queries, f_train[y_train == c], 5)[0].mean(axis=1)
                      for c in range(len(class_names))], axis=1)
    return int((means.argmin(axis=1) == list(class_names).index("dog")).sum())
