"""utils.fine_tuning (block counts, cached activations, Dense tops, batches) and lesson 8 at a small size."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from utils import backbones, checks, data, fine_tuning
from _numerics import assert_close

SIZE = 64  # small images: the split is about layers, not accuracy


@pytest.fixture(scope="module")
def net() -> backbones._Backbone:
    return backbones.load_backbone("efficientnet_lite0", SIZE)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def cut(network, block):
    """(bottom, top) of a copy of ``network``, cut where block ``block`` starts: lesson 8's cell."""
    import keras

    copy = keras.models.clone_model(network)
    copy.set_weights(network.get_weights())
    names = [layer.name for layer in copy.layers]
    first = next(i for i, n in enumerate(names) if n.startswith(f"blocks_{block}_"))
    activations = copy.layers[first - 1].output
    return keras.Model(copy.input, activations), keras.Model(activations, copy.output)


def test_block_count(net) -> None:
    assert fine_tuning.block_count(net.feature_model) == 16
    assert fine_tuning.block_count(cut(net.feature_model, 11)[0]) == 11


def test_cached_activations_reload_identical_and_match_keras(net, images, feature_cache) -> None:
    bottom, _ = cut(net.feature_model, 11)
    first = fine_tuning.activations(bottom, images)
    assert first.shape == (len(images), *bottom.output.shape[1:]) and first.dtype == np.float32
    files = set((feature_cache / "activations").glob("*.npy"))
    assert files
    np.testing.assert_array_equal(fine_tuning.activations(bottom, images), first)  # from the disk cache
    resized = np.asarray(net.feature_model.input.shape[1:3])
    import tensorflow as tf

    reference = np.asarray(bottom(tf.image.resize(images.astype("float32"), tuple(resized))))
    np.testing.assert_allclose(first, reference, atol=0.02 * np.abs(reference).max())  # float16 storage, TFLite
    flipped = fine_tuning.activations(bottom, images[:, :, ::-1].copy())  # other images: other activations
    assert not np.array_equal(flipped, first)
    assert len(set((feature_cache / "activations").glob("*.npy")) - files) == 1


def test_predict_images_is_the_image_models_predict(net, images) -> None:
    """Lesson 8 scores its assembled image model (any input size, resizing inside) through TFLite."""
    import keras

    pixels = keras.Input((None, None, 3))
    x = keras.layers.Resizing(SIZE, SIZE, interpolation="bilinear")(pixels)
    head = keras.layers.Dense(4, activation="softmax")
    model = keras.Model(pixels, head(net.feature_model(x)))
    expected = model.predict(images, verbose=0)
    got = fine_tuning.predict_images(model, images, batch_size=4)  # two batches, the last short
    assert got.shape == expected.shape == (len(images), 4)
    assert_close(got, expected)
    wide = np.concatenate([images, images], axis=2)  # 32 x 64: not square, Keras resizes it
    assert_close(fine_tuning.predict_images(model, wide), model.predict(wide, verbose=0))
    with pytest.raises(ValueError, match="uint8 images"):
        fine_tuning.predict_images(model, images.astype(np.float32))


def test_activations_are_cached_by_content(net, images, feature_cache) -> None:
    import keras

    bottom, _ = cut(net.feature_model, 15)
    before = set((feature_cache / "activations").glob("*.npy"))
    first = fine_tuning.activations(bottom, images)
    files = set((feature_cache / "activations").glob("*.npy"))
    (written,) = files - before
    # another model with the same weights and shapes (lesson 8 cuts its own copy) reads the same file
    copy = keras.models.clone_model(bottom)
    copy.set_weights(bottom.get_weights())
    np.testing.assert_array_equal(fine_tuning.activations(copy, images), first)
    assert set((feature_cache / "activations").glob("*.npy")) == files
    # other weights never read those activations
    copy.set_weights([w * 1.01 for w in bottom.get_weights()])
    changed = fine_tuning.activations(copy, images)
    assert not np.allclose(changed, first)
    assert len(set((feature_cache / "activations").glob("*.npy")) - files) == 1
    written.write_bytes(b"not an array")
    with pytest.warns(UserWarning, match="unreadable"):
        np.testing.assert_array_equal(fine_tuning.activations(bottom, images), first)
    np.testing.assert_array_equal(np.load(written).astype(np.float32), first)  # rewritten whole
    with pytest.raises(ValueError, match="uint8"):
        fine_tuning.activations(bottom, images.astype("float32"))
    with pytest.raises(ValueError, match="feature map"):
        fine_tuning.activations(net.feature_model, images)


def test_pointwise_as_dense_computes_the_same_top(net) -> None:
    import keras

    _, top = cut(net.feature_model, 11)
    dense = fine_tuning.pointwise_as_dense(top)
    pointwise = [layer.name for layer in top.layers
                 if type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)]
    assert len(pointwise) == 11  # expand + project of blocks 11-14, project of block 15, conv_head
    assert [layer.name for layer in dense.layers if isinstance(layer, keras.layers.Dense)] == pointwise
    assert len([layer for layer in dense.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]) == 5
    assert dense.count_params() == top.count_params()
    x = np.random.default_rng(2).normal(size=(3, *top.input.shape[1:])).astype("float32")
    assert_close(np.asarray(dense(x)), np.asarray(top(x)))  # a matmul sums in another order than a 1x1 conv
    assert_close(np.asarray(dense(x, training=True)), np.asarray(top(x, training=True)))
    assert all(w is not v for w, v in zip(dense.weights, top.weights))  # a copy: training one leaves the other


def test_batches_shuffle_every_epoch_and_cover_every_row() -> None:
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10) % 2
    dataset = fine_tuning.batches(x, y, batch_size=4, seed=0)
    assert len(dataset) == 3
    epochs = [np.concatenate([np.asarray(b[0])[:, 0] for b in dataset]) for _ in range(2)]
    for order in epochs:
        assert sorted(order) == list(range(10))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    again = np.concatenate([np.asarray(b[0])[:, 0] for b in fine_tuning.batches(x, y, batch_size=4, seed=0)])
    np.testing.assert_array_equal(again, epochs[0])  # seeded
    ordered = fine_tuning.batches(x, y, batch_size=4, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([np.asarray(b[1]) for b in ordered]), y)
    assert not ordered.options().autotune.enabled
    inputs_only = fine_tuning.batches(x, batch_size=4, shuffle=False)  # for predict
    np.testing.assert_array_equal(np.concatenate([np.asarray(b)[:, 0] for b in inputs_only]), x[:, 0])
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        fine_tuning.batches(x, y[:5])
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        fine_tuning.batches(x[:0], y[:0])
    with pytest.raises(ValueError, match="at least one row"):
        fine_tuning.batches(x[:0])


def test_precise_batchnorm_averages_the_batches() -> None:
    """The "precise BatchNorm" of benchmarks/fine_tuning.py (a cell of the fine-tuning lesson until issue 25) relies
    on Keras reading a BatchNorm layer's ``momentum`` at call time: with momentum k / (k + 1) for the k-th batch,
    the running statistics become the mean over the batches."""
    import keras

    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Sequential([keras.Input((3, 3, 2)), bn])
    model.trainable = True
    rng = np.random.default_rng(0)
    parts = np.array_split(rng.normal(2.0, 3.0, size=(20, 3, 3, 2)).astype("float32"), 4)
    for k, batch in enumerate(parts):  # the benchmark's loop
        bn.momentum = k / (k + 1)
        model(batch, training=True)
    bn.momentum = 0.99
    means = [p.mean(axis=(0, 1, 2)) for p in parts]
    variances = [p.var(axis=(0, 1, 2)) for p in parts]
    assert_close(np.asarray(bn.moving_mean), np.mean(means, axis=0))
    assert_close(np.asarray(bn.moving_variance), np.mean(variances, axis=0))
    assert not np.allclose(np.mean(means, axis=0), 0)  # the statistics moved from their initial values


def test_cpu_flags_reads_this_machine() -> None:
    from utils.runtime import _cpu_flags  # benchmarks/precision.py records them

    flags = _cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").is_file():  # Linux: x86 lists e.g. sse2, ARM lists e.g. fp / asimd
        assert flags & {"sse2", "fp", "asimd"}


def test_lesson_8_checks(net, images, capsys) -> None:
    labels = np.array([0, 1, 2, 3])
    assert checks._expected_answer("8.1", fine_tuned_predicted=np.array([0, 1, 2, 0]),
                                  frozen_predicted=np.array([0, 0, 2, 0]), labels=labels) == 1
    assert checks._expected_answer("8.2", fine_tuned_predicted=np.array([0, 1, 2, 0]),
                                  probe_predicted=np.array([0, 0, 0, 0]), labels=labels) == 2
    import keras

    last_bottom, _ = cut(net.feature_model, 15)
    model = keras.Sequential([keras.Input(last_bottom.output.shape[1:]), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4, activation="softmax")])
    labels = np.arange(len(images)) % 4
    predicted = model.predict(fine_tuning.activations(last_bottom, images), verbose=0).argmax(axis=1)
    objects = dict(model=model, network=net.feature_model, images=images, labels=labels)
    expected = checks._expected_answer("8.3", bottom=last_bottom, **objects)
    assert expected == pytest.approx((predicted == labels).mean())
    assert checks.check("8.3", expected, bottom=last_bottom, **objects)
    # cut elsewhere than before the last block: no answer is right
    other_bottom, _ = cut(net.feature_model, 11)
    assert checks._expected_answer("8.3", bottom=other_bottom, **objects) is None
    assert checks.check("8.3", expected, bottom=other_bottom, **objects) is False
    assert str(round(expected, 3)) not in capsys.readouterr().out  # the check never shows the answer


def test_report_names_the_fine_tuning_settings() -> None:
    from instructor import report

    lesson_3 = {"lesson": "Deep-features classifier", "deep_feature_accuracy": 0.82, "image_size": 224}
    lesson_7 = {"lesson": "Keras classifier", "logistic_validation_accuracy": 0.78, "logistic_test_accuracy": 0.8,
                "head_validation_accuracy": 0.79, "head_test_accuracy": 0.81, "image_size": 160}
    lesson_8 = {"lesson": "Fine-tuning", "probe_accuracy": 0.81, "fine_tuned_accuracy": 0.86,
                "fine_tuned_validation_accuracy": 0.87, "activation_model_accuracy": 0.861, "top_blocks_from": 11,
                "image_size": 160, "fine_tune_epochs_run": 4}
    table = report.results_tables({"metrics": {"03_deep": lesson_3, "07_keras": lesson_7, "08_tune": lesson_8}})[
        "Keras classifier and fine-tuning"]
    assert table["Model"].tolist() == [
        "Logistic regression on the frozen features, 160 px",
        "Keras softmax head on the frozen features, early stopping, 160 px",
        "Linear probe (frozen network + Keras head, 160 px)",
        "Fine-tuned (from block 11, 160 px, 4 epochs): the image model, pixels in",
        "Fine-tuned, on the cached activations"]
    assert table["Validation accuracy (chooses)"].tolist() == ["0.780", "0.790", "—", "0.870", "—"]
    assert table["Test accuracy (scored once)"].tolist() == ["0.800", "0.810", "0.810", "0.860", "0.861"]


@pytest.mark.slow
def test_notebook_fine_tunes_and_assembles_an_image_model(tmp_path, course_data_dir) -> None:
    from instructor import NOTEBOOK_DIR
    from instructor.run import run_course

    model_path = tmp_path / "model.keras"
    results = run_course(tmp_path / "build", dict(SMALL_RUN, data_dir=str(course_data_dir),
                                                  model_path=str(model_path)),
                         notebooks=[NOTEBOOK_DIR / "08_fine_tuning.ipynb"], log=lambda _: None)
    m = results["metrics"]["08_fine_tuning"]
    assert m["chain_difference"] < 1e-3  # the cells' bottom + top is the whole feature model
    assert m["top_difference"] < 0.05  # the frozen top's output is the featurizer's cached features
    # before training, the unfrozen model is the frozen network + head (Keras top vs TFLite features: a
    # borderline image may flip)
    assert abs(m["before_fine_tuning_validation_accuracy"] - m["probe_validation_accuracy"]) \
        <= 2 / m["n_validation"] + 1e-9
    loss = m["fine_tune_curves"]["loss"]
    assert loss[-1] < loss[0]  # fine-tuning trains: its training loss falls
    # at 48 validation images one image is 0.021: fine-tuning must not fall more than two images below the frozen
    # head (the full-size margin is in build/results.md)
    assert m["fine_tuned_validation_accuracy"] >= m["probe_validation_accuracy"] - 2 / m["n_validation"] - 1e-9
    assert m["fine_tuned_validation_accuracy"] == pytest.approx(m["fine_tune_curves"]["val_accuracy"][-1], abs=1e-6)
    assert len(m["fine_tune_curves"]["val_accuracy"]) == len(loss) == m["fine_tune_epochs"] == m["fine_tune_epochs_run"]
    assert m["train_validation_gap"] == pytest.approx(
        m["fine_tune_curves"]["accuracy"][-1] - m["fine_tune_curves"]["val_accuracy"][-1], abs=1e-9)
    assert m["batchnorm_moving_mean_change"] > 0  # fit updated the BatchNorm running averages
    assert len(m["head_curves"]["val_accuracy"]) == m["head_epochs_run"]
    assert m["top_blocks_from"] == SMALL_RUN["first_top_block"]
    # the assembled image model: pixels in, the activation model's predictions (its bottom in float32, not stored
    # in float16), the same after saving and reloading, and it classifies a photo file of another size
    assert m["image_activation_difference"] < 0.05
    assert m["image_activation_agreement"] >= 1 - 1 / m["n_test"] - 1e-9
    assert abs(m["fine_tuned_accuracy"] - m["activation_model_accuracy"]) <= 1 / m["n_test"] + 1e-9
    assert m["reload_difference"] < 1e-5 and model_path.is_file() and m["model_megabytes"] > 1
    assert m["scored_difference"] < 1e-3  # the test set's scoring is Keras' predict, computed through TFLite
    assert m["photo"] == "chelsea.png" and m["photo_shape"] == [300, 451, 3]
    probabilities = m["photo_probabilities"]
    assert set(probabilities) == {"automobile", "bird", "cat", "dog"}
    assert sum(probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert max(probabilities, key=probabilities.get) in {"cat", "dog"}  # a tabby cat: an animal, at least
    import keras
    import skimage.data

    reloaded = keras.models.load_model(model_path)  # the saved file alone, in another process
    photo = data.load_image(Path(skimage.data.__file__).parent / "chelsea.png")
    again = reloaded.predict(photo[None], verbose=0)[0]
    assert_close(again, [probabilities[c] for c in ("automobile", "bird", "cat", "dog")])  # another process
    assert 0.25 < m["fine_tuned_accuracy"] <= 1 and 0.25 < m["probe_accuracy"] <= 1
    assert m["n_test"] == 4 * SMALL_RUN["n_test_per_class"]
    for name in ("linear probe", "fine-tuned"):
        assert set(m["per_class_accuracy"][name]) == {"automobile", "bird", "cat", "dog"}
    matrix = np.array(m["fine_tuned_confusion_matrix"])
    assert np.trace(matrix) / matrix.sum() == pytest.approx(m["fine_tuned_accuracy"])
    nb = nbformat.read(tmp_path / "build" / "notebooks" / "08_fine_tuning.ipynb", as_version=4)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) == 3
    for cell in solutions:
        assert "correct" in "".join(o.get("text", "") for o in cell.outputs)


# 60 images per class at 128 px: a validation split of 48 images (one image is 2%). At this size fine-tuning and
# the frozen head (trained on the cached features) score within a few validation images of each other: the test
# checks that fine-tuning trains without losing more than two, not a margin. The notebook's learning rate (1e-3,
# chosen on the full-size validation split) overfits 192 fit images in a few steps, hence 1e-4 over 8 epochs.
SMALL_RUN = {"n_train_per_class": 60, "n_test_per_class": 12, "image_size": 128, "first_top_block": 11,
             "fine_tune_learning_rate": 1e-4, "fine_tune_epochs": 8}
