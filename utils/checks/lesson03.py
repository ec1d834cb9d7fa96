"""The exercise checks of Lesson 3: deep features."""

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._common import _accuracy, _right_only_by
from . import exercise


@exercise("3.1", "compare f_train with 0: the mean of the True/False array is the fraction",
                 tolerance=1e-4)
def _(f_train):
    return float((np.asarray(f_train) == 0).mean())


@exercise("3.2", "an image counts when the deep-feature prediction is right and the raw-pixel one "
                 "is wrong: combine the two with &", tolerance=0)
def _(deep_predicted, raw_predicted, y_test):
    return _right_only_by(deep_predicted, raw_predicted, y_test)


@exercise("3.3", "per class: the fraction of its test images predicted right, deep minus raw")
def _(deep_predicted, raw_predicted, y_test, class_names):
    y = np.asarray(y_test)
    right = (np.asarray(deep_predicted) == y).astype(int) - (np.asarray(raw_predicted) == y)
    return class_names[int(np.argmax([right[y == c].sum() for c in range(len(class_names))]))]


@exercise("3.4", "train_test_split(..., test_size=0.2, random_state=seed, stratify=labels), fit a "
                 "clone of the model on the 80%, score it on the 20%", tolerance=1e-3)
def _(model, X_train, y_train, seed):
    fit_x, val_x, fit_y, val_y = train_test_split(X_train, y_train, test_size=0.2,
                                                  random_state=seed, stratify=y_train)
    return _accuracy(clone(model).fit(fit_x, fit_y), val_x, val_y)


@exercise("3.5", "keras.Model(model.input, "
                 "GlobalAveragePooling2D()(model.get_layer(name).output)); predict on the images "
                 "resized to the model's input size; fit StandardScaler + LogisticRegression on "
                 "the training probe", tolerance=1e-3)
def _(model, layer, C, X_train, y_train, X_test, y_test):
    import keras  # here, not at the top: importing the checks must not start TensorFlow
    pixels = model.inputs[0]  # a keras.applications model built on input_tensor lists its inputs
    cut = keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(model.get_layer(layer).output))
    resize = keras.layers.Resizing(*pixels.shape[1:3], interpolation="bilinear")
    images = np.concatenate([X_train, X_test]).astype("float32")  # one predict call: one trace
    features = cut.predict(keras.ops.convert_to_numpy(resize(images)), verbose=0)
    f_train, f_test = np.split(features, [len(X_train)])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    return _accuracy(probe.fit(f_train, y_train), f_test, y_test)


@exercise("3.6", "GridSearchCV(deep_model, {'features__backbone': candidates, 'features__weights': "
                 "['imagenet']}, cv=cv_folds), fitted on the training images; its best_score_",
                 tolerance=1e-3)
def _(model, backbones, cv_folds, X_train, y_train):
    candidates = [clone(model).set_params(features__backbone=name, features__weights="imagenet")
                  for name in backbones]
    return float(max(cross_val_score(m, X_train, y_train, cv=cv_folds).mean() for m in candidates))
