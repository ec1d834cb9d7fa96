"""The fine-tuning lesson's training step (lesson 8; lesson 7 before issue 25), timed: the top's 1x1 convolutions
as ``Conv2D`` or ``Dense`` layers, ``fit`` on NumPy arrays or on ``fine_tuning.batches``, and (``--onednn``)
TensorFlow's oneDNN kernels off and on.

Four in-process settings -- Conv2D or Dense top (``fine_tuning.pointwise_as_dense``: same weights, same outputs) x
``fit(arrays)`` or ``fit(fine_tuning.batches(...))`` (tf.data autotuning off) -- are timed one epoch at a time,
in rotating order, ``--repeats`` times each in one process, so that the machine's load hits all alike. Besides the
median, it counts the **slow fits** (over 1.5x the setting's fastest): on a 2-core CPU, ``fit`` on NumPy arrays
sometimes leaves a core idle (tf.data's autotuner) and runs at half speed. TensorFlow reads
``TF_ENABLE_ONEDNN_OPTS`` once, at start-up, so ``--onednn`` runs the worker again in fresh processes, alternating
off and on (TensorFlow's Linux wheels enable oneDNN only on CPUs with AVX-512 VNNI/BF16 or AMX). The step is the
lesson's as it was measured, before issue 25 dropped the shifts, the head's Dropout and label smoothing (the
constants below): EfficientNet-Lite0 cut before ``--first-top-block``,
``RandomTranslation`` + the top + Dropout + a softmax Dense head, Adam, label smoothing, on the activations of the
course's training images (not random ones: the values matter to the kernels). A forward pass (``predict``) is timed
too.

    python benchmarks/training_step.py                        # 160 px, from block 11, 6 repeats
    python benchmarks/training_step.py --onednn --rounds 3    # also oneDNN on vs off, fresh processes
    python benchmarks/training_step.py --tiny                 # seconds: checks that it runs
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, add_common_arguments, data_dir, load_average, log, table

#: The step as it was measured (the lesson's recipe before issue 25): shifts, label smoothing, the seed.
SHIFT, LABEL_SMOOTHING, SEED = 0.1, 0.1, 0

SETTINGS = {"oneDNN off": "0", "oneDNN on": "1"}
VARIANTS = ["Conv2D top, fit(arrays)", "Conv2D top, fit(batches)", "Dense top, fit(arrays)", "Dense top, fit(batches)"]


def cut(network, block: int):
    """(bottom, top) of a copy of ``network``, cut where block ``block`` starts: lesson 8's ``cut``."""
    import keras

    copy = keras.models.clone_model(network)
    copy.set_weights(network.get_weights())
    names = [layer.name for layer in copy.layers]
    first = next(i for i, n in enumerate(names) if n.startswith(f"blocks_{block}_"))
    activations = copy.layers[first - 1].output  # what enters block ``block``
    return keras.Model(copy.input, activations, name="bottom"), keras.Model(activations, copy.output, name="top")


def worker(data_dir: Path, image_size: int, first_top_block: int, steps: int, batch_size: int, repeats: int) -> dict:
    """ms per image of one training epoch for each of VARIANTS, in this process's TensorFlow setting."""
    from utils import backbones, data, fine_tuning
    import keras

    bottom, top = cut(backbones.load_backbone("efficientnet_lite0", image_size).feature_model, first_top_block)
    n = steps * batch_size
    train, _ = data.load_course_data(data_dir, n_train_per_class=-(-n // 4), n_test_per_class=1)
    a = fine_tuning.activations(bottom, train.images[:n])  # cached on disk after the first process
    y = keras.utils.to_categorical(train.labels[:n], len(train.class_names))
    tops = {"Conv2D": top, "Dense": fine_tuning.pointwise_as_dense(top)}
    models = {}
    for name, top in tops.items():
        inputs = keras.Input(a.shape[1:])
        x = keras.layers.RandomTranslation(SHIFT, SHIFT, fill_mode="nearest", seed=SEED)(inputs)
        x = keras.layers.Dropout(0.2)(top(x))
        model = keras.Model(inputs, keras.layers.Dense(y.shape[1], activation="softmax")(x))
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING))
        models[name] = model

    def fit(variant: str) -> None:
        model = models[variant.split()[0]]
        if variant.endswith("fit(arrays)"):
            model.fit(a, y, batch_size=batch_size, epochs=1, verbose=0)
        else:
            model.fit(fine_tuning.batches(a, y, batch_size, seed=SEED), epochs=1, verbose=0, shuffle=False)

    for variant in VARIANTS:  # traces, thread pools
        fit(variant)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(repeats):
        for variant in VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]:
            wall, cpu = time.perf_counter(), time.process_time()
            fit(variant)
            times[variant].append(1000 * (time.perf_counter() - wall) / n)
            cpu_times[variant].append(1000 * (time.process_time() - cpu) / n)
    wall = time.perf_counter()
    models["Dense"].predict(a, batch_size=batch_size, verbose=0)
    return {"ms/image": times, "CPU ms/image": cpu_times,
            "Dense top predict ms/image": 1000 * (time.perf_counter() - wall) / n,
            "activation shape": list(a.shape[1:])}


def summary(ms: list[float]) -> dict:
    fastest = min(ms)
    return {"median ms/image": round(statistics.median(ms), 2), "fastest": round(fastest, 2),
            "slow fits": sum(t > 1.5 * fastest for t in ms), "fits": len(ms)}


def run_worker(setting: str | None, args: argparse.Namespace) -> dict:
    """The worker in a fresh process; ``setting``: TF_ENABLE_ONEDNN_OPTS, or None for TensorFlow's default."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    cmd = [sys.executable, __file__, "--worker", "--data-dir", str(data_dir(args)), "--image-size",
           str(args.image_size), "--first-top-block", str(args.first_top_block), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the worker failed (TF_ENABLE_ONEDNN_OPTS={setting}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--first-top-block", type=int, default=11)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed fit")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6, help="timed fits of each variant per process")
    parser.add_argument("--onednn", action="store_true", help="also compare oneDNN off/on in fresh processes")
    parser.add_argument("--rounds", type=int, default=2, help="with --onednn: off/on process pairs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(data_dir(args), args.image_size, args.first_top_block, args.steps, args.batch_size,
                                args.repeats)))
        return 0
    if args.tiny:
        args.image_size, args.steps, args.repeats, args.rounds = 64, 2, 1, 1
    load_before = load_average()
    runs: list[tuple[str, dict]] = []
    if args.onednn:
        for r in range(args.rounds):
            for name in (list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]):
                runs.append((name, run_worker(SETTINGS[name], args)))
                log(f"round {r + 1}, {name}: done")
    else:
        runs.append(("TensorFlow's default", run_worker(None, args)))
    settings = list(dict.fromkeys(name for name, _ in runs))

    def pool(key: str) -> dict[tuple[str, str], list[float]]:  # every run's fits of a setting, per variant
        return {(s, v): [t for name, run in runs if name == s for t in run[key][v]] for s in settings for v in VARIANTS}

    pooled, pooled_cpu = pool("ms/image"), pool("CPU ms/image")
    rows = [{"setting": s, "variant": v, **summary(pooled[s, v]),
             "median CPU ms/image": round(statistics.median(pooled_cpu[s, v]), 2)} for s in settings for v in VARIANTS]
    result = {"image_size": args.image_size, "first_top_block": args.first_top_block, "batch_size": args.batch_size,
              "steps": args.steps, "repeats": args.repeats, "cpus": os.cpu_count(),
              "load average": [round(load_before, 2), round(load_average(), 2)], "rows": rows, "runs": runs}
    table(f"Fine-tuning training step, EfficientNet-Lite0 {args.image_size} px from block {args.first_top_block}, "
          f"batch {args.batch_size}, {args.steps} steps per fit",
          ["setting", "variant", "median ms/image", "fastest", "slow fits", "median CPU ms/image"],
          [[r["setting"], r["variant"], r["median ms/image"], r["fastest"], f"{r['slow fits']} of {r['fits']}",
            r["median CPU ms/image"]] for r in rows])
    for s in settings:
        base, best = pooled[s, VARIANTS[0]], pooled[s, VARIANTS[-1]]
        log(f"{s}: {VARIANTS[-1]} vs {VARIANTS[0]}: {statistics.median(base) / statistics.median(best):.2f}x "
            "faster (medians)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
