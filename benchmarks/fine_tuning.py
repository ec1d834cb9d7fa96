"""Lesson 8's fine-tuning recipe under several settings, timed and scored on the VALIDATION split.

The recipe is the lesson's (notebooks/08_fine_tuning.ipynb): cut EfficientNet-Lite before a block, cache the
frozen bottom's activations, train lesson 7's head (a Dense softmax layer, Adam, early stopping) on the frozen top's
features of the fit images, then unfreeze the top (its 1x1 convolutions as Dense layers:
``fine_tuning.pointwise_as_dense``) and fine-tune it with the head (Adam, cosine decay to 0, batches from
``fine_tuning.batches``). Inside ``fit`` Keras 3 runs the top's BatchNorm layers in training mode (batch
statistics), whatever ``training=`` the top was called with; ``batchnorm_frozen`` keeps them in inference mode.

Until issue 25 the lesson also had four devices its objectives did not name; each is a setting here, so that
what dropping it costs is measured: ``flips`` (the mirror images of the fit images as more training images),
``shift`` (``RandomTranslation`` of the activations by that fraction), ``label_smoothing`` (of the loss, both
steps) and ``head_dropout`` (a Dropout layer before the head's Dense layer), and ``precise_bn`` (after ``fit``,
the BatchNorm running statistics recomputed on 512 training activations; "validation, running BN averages" scores
the same model before that). Rows measured before a setting existed ran with its value of ``BEFORE_ISSUE_25``.
Rows without "1x1 as Dense" were measured with the Conv2D top and ``fit`` on NumPy arrays (same arithmetic,
slower: ``benchmarks/training_step.py``). The variants change what their columns say. All run in this one
process, one after the other, so they share the machine's load: compare their CPU seconds. The test set is
scored only with ``--score-test`` (for the chosen default, once).

    python benchmarks/fine_tuning.py                          # every variant (60-500 CPU s each)
    python benchmarks/fine_tuning.py --variants default --score-test   # the lesson's default, with the test set
    python benchmarks/fine_tuning.py --tiny                   # seconds, on tests/data/cifar10-4class-small

Data: ``--data-dir``, else ``$DEEP_FEATURES_DATA``, else the course default (``utils.data.load_course_data``).
Writes ``benchmarks/results/fine_tuning.json`` (``--tiny``: nothing unless ``--json`` is given) and prints the
Markdown table that benchmarks/README.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from utils import backbones, data, fine_tuning
from utils.runtime import cpu_flags, import_tensorflow_quietly

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "fine_tuning.json"
TINY_DATA = HERE.parent / "tests" / "data" / "cifar10-4class-small"

#: The lesson's default; every variant changes some of these.
DEFAULT = {"image_size": 160, "first_top_block": 11, "epochs": 3, "flips": False, "shift": 0.0,
           "label_smoothing": 0.0, "head_dropout": 0.0, "learning_rate": 1e-3, "batchnorm_frozen": False,
           "precise_bn": False, "seed": 0}
#: The lesson's recipe until issue 25 (then lesson 7): mirror images, shifts, label smoothing, a Dropout head
#: and precise BatchNorm, none of them named in the lesson's objectives.
BEFORE_ISSUE_25 = {"flips": True, "shift": 0.1, "label_smoothing": 0.1, "head_dropout": 0.2, "precise_bn": True}


def _before(**changes) -> dict:
    return {**BEFORE_ISSUE_25, "epochs": 2, **changes}


VARIANTS: dict[str, dict] = {
    "default": {},
    "default, 2 epochs": {"epochs": 2},
    "default, 4 epochs": {"epochs": 4},
    "default, seed 1": {"seed": 1},
    "default, seed 2": {"seed": 2},
    "default, learning rate 5e-4": {"learning_rate": 5e-4},
    "default, learning rate 3e-4": {"learning_rate": 3e-4},
    "default, learning rate 3e-4, 4 epochs": {"learning_rate": 3e-4, "epochs": 4},
    "default + precise BatchNorm": {"precise_bn": True},
    "default + mirror images, 2 epochs": {"flips": True, "epochs": 2},
    "before issue 25": _before(),
    "before issue 25, seed 1": _before(seed=1),
    "before issue 25, seed 2": _before(seed=2),
    "before issue 25, no mirror images": _before(flips=False),
    "before issue 25, no shifts": _before(shift=0.0),
    "before issue 25, no label smoothing": _before(label_smoothing=0.0),
    "before issue 25, no head dropout": _before(head_dropout=0.0),
    "before issue 25, no precise BatchNorm": _before(precise_bn=False),
    # the rows below ran with the recipe before issue 25 (most before precise BatchNorm existed)
    "3 epochs": _before(epochs=3),
    "3 epochs (earlier run)": _before(epochs=3),  # kept apart: its row ran with the Conv2D top
    "224 px, last block only, 6 epochs": _before(image_size=224, first_top_block=15, epochs=6),
    "4 epochs (the default until 2026-11-30)": _before(epochs=4),
    "2 epochs": _before(epochs=2),
    "2 epochs, BatchNorm frozen": _before(epochs=2, batchnorm_frozen=True),
    "from block 12, 2 epochs": _before(first_top_block=12, epochs=2),
    "last block only, 6 epochs": _before(first_top_block=15, epochs=6),
    "128 px, 4 epochs": _before(image_size=128, epochs=4),
    "no flips, 4 epochs": _before(flips=False, epochs=4),
    "no flips, 6 epochs": _before(flips=False, epochs=6),
    "224 px": _before(image_size=224),
    "224 px, 6 epochs (the earlier default)": _before(image_size=224, epochs=6),
}
#: What rows measured before a setting existed ran with (their JSON lacks the key).
MEASURED_BEFORE = {"precise_bn": False, "shift": BEFORE_ISSUE_25["shift"],
                   "label_smoothing": BEFORE_ISSUE_25["label_smoothing"],
                   "head_dropout": BEFORE_ISSUE_25["head_dropout"]}
TINY = {"n_train_per_class": 24, "n_test_per_class": 12, "image_size": 64, "epochs": 1}
VALIDATION_FRACTION, BATCH_SIZE, SEED = 0.2, 32, 0
#: The shift and label smoothing ``training_step.py`` times (the step as it was measured, before issue 25).
SHIFT, LABEL_SMOOTHING = BEFORE_ISSUE_25["shift"], BEFORE_ISSUE_25["label_smoothing"]


def recompute_batchnorm(top, a_fit: np.ndarray, seed: int, n_images: int = 512, n_batches: int = 4) -> None:
    """"Precise BatchNorm" (lesson 7's until issue 25): the running statistics of ``top``'s BatchNorm layers
    replaced by their mean over ``n_batches`` batches of ``n_images`` training activations (forward passes in
    training mode)."""
    import keras

    bn_layers = [layer for layer in top.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momentum = bn_layers[0].momentum
    sample = np.random.default_rng(seed).permutation(len(a_fit))[:n_images]
    for k, batch in enumerate(np.array_split(a_fit[sample], n_batches)):
        for layer in bn_layers:
            layer.momentum = k / (k + 1)
        top(batch, training=True)
    for layer in bn_layers:
        layer.momentum = momentum


def recipe(split, a_fit, y_fit, a_val, y_val, a_val_flipped, n_classes: int, epochs: int,
           learning_rate: float, batchnorm_frozen: bool = False, head_rows: int | None = None,
           precise_bn: bool = False, seed: int = SEED, shift: float = 0.0, label_smoothing: float = 0.0,
           head_dropout: float = 0.0) -> dict:
    """The lesson's two steps: head on the frozen top (the first ``head_rows`` of ``a_fit``), then fine-tune top +
    head (``precise_bn``: then recompute the BatchNorm statistics); validation figures."""
    import keras

    keras.utils.set_random_seed(seed)
    one_hot = lambda y: keras.utils.to_categorical(y, n_classes)  # noqa: E731
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    split.top.trainable = False
    z_fit, z_val = split.top.predict(a_fit[:head_rows], verbose=0), split.top.predict(a_val, verbose=0)
    head = keras.Sequential([keras.Input(z_fit.shape[1:]),
                             *([keras.layers.Dropout(head_dropout)] if head_dropout else []),
                             keras.layers.Dense(n_classes, activation="softmax")])
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    head.fit(z_fit, one_hot(y_fit[:head_rows]), validation_data=(z_val, one_hot(y_val)), epochs=60,
             batch_size=BATCH_SIZE, verbose=0,
             callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
    frozen = float((head.predict(z_val, verbose=0).argmax(1) == y_val).mean())

    top = fine_tuning.pointwise_as_dense(split.top)
    top.trainable = True
    if batchnorm_frozen:  # a frozen BatchNormalization layer also runs in inference mode (Keras)
        for layer in top.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    inputs = keras.Input(a_fit.shape[1:])
    x = inputs
    if shift:
        x = keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed)(x)
    model = keras.Model(inputs, head(top(x)))
    train_batches = fine_tuning.batches(a_fit, one_hot(y_fit), BATCH_SIZE, seed=seed)
    val_batches = fine_tuning.batches(a_val, one_hot(y_val), shuffle=False)
    steps = epochs * len(train_batches)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    wall, cpu = time.perf_counter(), time.process_time()
    optimizer.build(model.trainable_variables)  # as the lesson: fit then traces its step once, not twice
    model.evaluate(val_batches, verbose=0)
    history = model.fit(train_batches, epochs=epochs, verbose=0, shuffle=False, validation_data=val_batches)
    fit_validation = float(history.history["val_accuracy"][-1])
    if precise_bn:
        recompute_batchnorm(top, a_fit, seed)
    predicted = model.predict(a_val, verbose=0)
    both = predicted + model.predict(a_val_flipped, verbose=0)
    return {"model": model, "frozen head validation": round(frozen, 3),
            "validation, running BN averages": round(fit_validation, 3),
            "validation accuracy": round(float((predicted.argmax(1) == y_val).mean()), 3),
            "validation, flip TTA": round(float((both.argmax(1) == y_val).mean()), 3),
            "fine-tune CPU s": round(time.process_time() - cpu, 1),
            "fine-tune wall s": round(time.perf_counter() - wall, 1)}


def run_variant(net, train, fit_idx, val_idx, test, settings: dict, score_test: bool) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    split = fine_tuning.split_backbone(net, settings["first_top_block"])
    a_fit = split.activations(train.images[fit_idx])
    a_val = split.activations(train.images[val_idx])
    y_fit, y_val = train.labels[fit_idx], train.labels[val_idx]
    if settings["flips"]:  # the mirror images of the fit images, as more training images
        a_fit = np.concatenate([a_fit, split.activations(train.images[fit_idx], flip=True)])
        y_fit = np.concatenate([y_fit, y_fit])
    activation_cpu = time.process_time() - cpu
    a_val_flipped = split.activations(train.images[val_idx], flip=True)  # for test-time flips only
    result = recipe(split, a_fit, y_fit, a_val, y_val, a_val_flipped, len(train.class_names),
                    settings["epochs"], settings["learning_rate"], settings["batchnorm_frozen"], len(fit_idx),
                    settings["precise_bn"], settings["seed"], settings["shift"], settings["label_smoothing"],
                    settings["head_dropout"])
    model = result.pop("model")
    row = {**settings, "1x1 as Dense": True, "activation shape": list(split.activation_shape),
           "trainable parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
           "activations CPU s": round(activation_cpu, 1), **result,
           "variant wall s": round(time.perf_counter() - wall, 1),
           "variant CPU s": round(time.process_time() - cpu, 1)}
    if score_test:
        predicted = model.predict(split.activations(test.images), verbose=0).argmax(1)
        row["test accuracy"] = round(float((predicted == test.labels).mean()), 3)
    return row


COLUMNS = ["variant", "image_size", "first_top_block", "epochs", "flips", "shift", "label_smoothing",
           "head_dropout", "learning_rate", "batchnorm_frozen", "1x1 as Dense", "seed", "precise_bn",
           "activations CPU s", "fine-tune CPU s", "fine-tune wall s", "frozen head validation",
           "validation, running BN averages", "validation accuracy", "validation, flip TTA", "test accuracy"]


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        row = {**MEASURED_BEFORE, **row}  # rows measured before a setting existed
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def write(out: Path, rows: list[dict], train, val_idx, test) -> None:
    previous = json.loads(out.read_text())["variants"] if out.exists() else []
    names = {r["variant"] for r in rows}
    keep = [r for r in previous if r["variant"] not in names and r["variant"] in VARIANTS and "flips" in r]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "bf16": bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}),
                    "load average": round(os.getloadavg()[0], 1)},
        "n_train": len(train), "n_validation": len(val_idx), "n_test": len(test),
        "variants": keep + rows}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"default: all of {list(VARIANTS)}")
    parser.add_argument("--data-dir", default=None, help="course images (default: $DEEP_FEATURES_DATA, then "
                                                         "the loader's default)")
    parser.add_argument("--score-test", action="store_true", help="also score the test set (the chosen default)")
    parser.add_argument("--tiny", action="store_true", help="a few images, one epoch: checks that it runs")
    parser.add_argument("--json", type=Path, default=None, help=f"where to write the rows (default: {RESULTS}, "
                                                                "none with --tiny)")
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    if args.tiny:  # a smoke test: the plain Keras path, no TFLite conversion of each bottom
        os.environ.setdefault("DEEP_FEATURES_FAST", "0")
    import_tensorflow_quietly()
    from sklearn.model_selection import train_test_split

    data_dir = args.data_dir or os.environ.get("DEEP_FEATURES_DATA")
    sizes = (TINY["n_train_per_class"], TINY["n_test_per_class"]) if args.tiny else (None, None)
    train, test = data.load_course_data(TINY_DATA if args.tiny else data_dir, *sizes, seed=SEED)
    fit_idx, val_idx = train_test_split(np.arange(len(train)), test_size=VALIDATION_FRACTION, random_state=SEED,
                                        stratify=train.labels)
    names = ["default", "last block only, 6 epochs"] if args.tiny else args.variants
    rows, nets = [], {}
    out = args.json or (None if args.tiny else RESULTS)
    for name in names:
        settings = {**DEFAULT, **VARIANTS[name]}
        if args.tiny:
            settings.update(image_size=TINY["image_size"], epochs=TINY["epochs"])
        size = settings["image_size"]
        if size not in nets:
            nets[size] = backbones.load_backbone("efficientnet_lite0", size)
        row = {"variant": name, **run_variant(nets[size], train, fit_idx, val_idx, test, settings,
                                              args.score_test)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out is not None:  # after every variant: a long run that is stopped keeps what it measured
            write(out, rows, train, val_idx, test)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
