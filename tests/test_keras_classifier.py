"""Lesson 7 (a Keras classifier on deep features): its exercise checks, and the notebook run at a small size."""

from __future__ import annotations


import nbformat
import numpy as np
import pytest

from utils import checks

CLASSES = ["automobile", "bird", "cat", "dog"]


@pytest.fixture(scope="module")
def toy():
    """Separable 6-d 'features' of 4 classes and a softmax head trained on them for a few epochs."""
    import keras

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    feats = (rng.normal(size=(40, 6)) + 3 * np.eye(4, 6)[labels]).astype("float32")
    keras.utils.set_random_seed(0)
    head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="softmax")])
    head.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2), loss="categorical_crossentropy")
    head.fit(feats, keras.utils.to_categorical(labels, 4), epochs=5, verbose=0)
    return feats, labels, head


def test_7_1_is_the_mean_cross_entropy_of_one_class(toy, capsys) -> None:
    feats, labels, head = toy
    p = np.asarray(head.predict(feats, verbose=0), dtype=np.float64)
    cats = labels == 2
    expected = float(-np.log(p[cats, 2]).mean())
    import keras

    keras_loss = float(keras.losses.CategoricalCrossentropy()(keras.utils.to_categorical(labels[cats], 4), p[cats]))
    assert expected == pytest.approx(keras_loss, abs=1e-4)  # the loss by hand is Keras's loss
    objects = dict(model=head, features=feats, labels=labels, class_names=CLASSES, class_name="cat")
    assert checks._expected_answer("7.1", **objects) == pytest.approx(expected, abs=1e-9)
    assert checks.check("7.1", expected, **objects)
    assert checks.check("7.1", float(-np.log(p[np.arange(40), labels]).mean()), **objects) is False  # all classes
    assert f"{expected:.3f}" not in capsys.readouterr().out


def test_7_2_wants_adam_at_the_asked_learning_rate(toy) -> None:
    import keras

    feats, labels, head = toy
    accuracy = float((head.predict(feats, verbose=0).argmax(axis=1) == labels).mean())
    objects = dict(features=feats, labels=labels)
    assert checks._expected_answer("7.2", model=head, learning_rate=1e-2, **objects) == pytest.approx(accuracy)
    assert checks.check("7.2", accuracy, model=head, learning_rate=1e-2, **objects)
    assert checks._expected_answer("7.2", model=head, learning_rate=1e-3, **objects) is None  # another rate
    assert checks.check("7.2", accuracy, model=head, learning_rate=1e-3, **objects) is False
    sgd = keras.models.clone_model(head)
    sgd.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-2), loss="categorical_crossentropy")
    assert checks._expected_answer("7.2", model=sgd, learning_rate=1e-2, **objects) is None  # not Adam
    assert checks._expected_answer("7.2", model=None, learning_rate=1e-2, **objects) is None  # not done yet
    assert checks.check("7.2", 0.5, model=None, learning_rate=1e-2, **objects) is False


def test_7_3_wants_a_hidden_layer(toy) -> None:
    import keras

    feats, labels, head = toy
    objects = dict(features=feats, labels=labels)
    assert checks._expected_answer("7.3", model=head, **objects) is None  # the lesson's head: no hidden layer
    deeper = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.5),
                               keras.layers.Dense(4, activation="softmax")])
    accuracy = float((deeper.predict(feats, verbose=0).argmax(axis=1) == labels).mean())  # untrained is fine here
    assert checks._expected_answer("7.3", model=deeper, **objects) == pytest.approx(accuracy)
    wrong_input = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8), keras.layers.Dense(4)])
    assert checks._expected_answer("7.3", model=wrong_input, **objects) is None


@pytest.mark.slow
def test_notebook_trains_a_keras_head_and_stops_early(tmp_path, small_data_dir) -> None:
    from sklearn.model_selection import train_test_split

    from instructor import NOTEBOOK_DIR
    from instructor.run import SMALL_PARAMETERS, run_course
    from utils import data

    small = {k: SMALL_PARAMETERS[k] for k in ("n_train_per_class", "n_test_per_class", "image_size")}
    results = run_course(tmp_path / "build", dict(small, data_dir=str(small_data_dir)),
                         notebooks=[NOTEBOOK_DIR / "07_keras_classifier.ipynb"], log=lambda _: None)
    m = results["metrics"]["07_keras_classifier"]
    long, stopped = m["long_curves"], m["early_stopping_curves"]
    assert set(long) == set(stopped) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == m["max_epochs"] for values in long.values())  # no callback: every epoch
    assert long["loss"][-1] < long["loss"][0]  # the optimizer lowers the training loss
    assert m["best_epoch"] == int(np.argmin(long["val_loss"])) + 1
    assert m["train_validation_gap"] == pytest.approx(long["accuracy"][-1] - long["val_accuracy"][-1], abs=1e-9)
    # EarlyStopping: it ran until `patience` epochs after its best validation loss (or to the end), and kept that
    # epoch's weights
    assert len(stopped["loss"]) == m["epochs_run"] <= m["max_epochs"]
    assert m["restored_epoch"] == int(np.argmin(stopped["val_loss"])) + 1
    assert m["epochs_run"] == min(m["restored_epoch"] + m["patience"], m["max_epochs"])
    # make_head seeds: the early-stopped fit retraces the long run, so it restores the long run's lowest epoch
    # unless it stopped before reaching it (patience epochs without a new low)
    assert stopped["val_loss"] == pytest.approx(long["val_loss"][:m["epochs_run"]], rel=1e-6)
    assert m["restored_epoch"] == m["best_epoch"] or (
        m["best_epoch"] > m["epochs_run"] and long["val_loss"][m["best_epoch"] - 1] < min(stopped["val_loss"]))
    # the validation accuracy is the one of the saved predictions, on the lesson's validation split
    train, test = data.load_course_data(small_data_dir, small["n_train_per_class"], small["n_test_per_class"], seed=0)
    _, val_idx = train_test_split(np.arange(len(train)), test_size=0.2, random_state=0, stratify=train.labels)
    assert m["validation_images"] == val_idx.tolist() and m["n_validation"] == len(val_idx)
    predicted = np.array(m["head_val_predicted"])
    assert m["head_validation_accuracy"] == pytest.approx((predicted == train.labels[val_idx]).mean(), abs=1e-9)
    # restoring the best weights: the kept head's validation accuracy is that epoch's
    assert m["head_validation_accuracy"] == pytest.approx(stopped["val_accuracy"][m["restored_epoch"] - 1], abs=1e-6)
    assert m["head_parameters"] == 1280 * 4 + 4
    for key in ("logistic_validation_accuracy", "logistic_test_accuracy", "head_test_accuracy"):
        assert 0.25 < m[key] <= 1, key
    assert m["n_test"] == len(test)
    nb = nbformat.read(tmp_path / "build" / "notebooks" / "07_keras_classifier.ipynb", as_version=4)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) == 3
    for cell in solutions:
        assert "correct" in "".join(o.get("text", "") for o in cell.outputs)


def test_tensorflows_retracing_advice_stays_out_of_the_lessons(caplog) -> None:
    """Lessons predict with several small models on a few images: TensorFlow's retracing advice is filtered (by
    ``import utils``), its other log records are not."""
    import logging

    import utils

    utils.runtime._quiet_tensorflow()  # what import utils ran (idempotent)

    logger = logging.getLogger("tensorflow")
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        logger.warning("5 out of the last 5 calls to <function f at 0x1> triggered tf.function retracing. ...")
        logger.warning("an ordinary TensorFlow warning")
    assert [r.getMessage() for r in caplog.records] == ["an ordinary TensorFlow warning"]
