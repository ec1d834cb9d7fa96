"""The exercise checks of Lesson 1: the data."""

import numpy as np

from . import exercise


@exercise("1.1", "select the bird images with train.labels, average them over axes (1, 2), then "
                 "count the rows whose blue (column 2) is above their red (column 0)", tolerance=0)
def _(train):
    bird = train.class_names.index("bird")
    rgb = train.images[train.labels == bird].mean(axis=(1, 2))  # one (red, green, blue) per image
    return int((rgb[:, 2] > rgb[:, 0]).sum())


@exercise("1.2", "compare test.images with 255: the mean of the True/False array is the fraction",
                 tolerance=1e-5)
def _(test):
    return float((test.images == 255).mean())


@exercise("1.3", "average the pixels of each class's images; answer with a class name")
def _(train):
    means = [train.images[train.labels == i].mean() for i in range(len(train.class_names))]
    return train.class_names[int(np.argmax(means))]


@exercise("1.4", "gray = train.images.mean(axis=3); contrast = gray.std(axis=(1, 2)); average it "
                 "per class; answer with a class name")
def _(train):
    contrast = train.images.mean(axis=3).std(axis=(1, 2))
    means = [contrast[train.labels == i].mean() for i in range(len(train.class_names))]
    return train.class_names[int(np.argmax(means))]
