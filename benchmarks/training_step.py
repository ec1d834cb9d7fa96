"""Lesson 7's training step with TensorFlow's oneDNN kernels off and on, as a ratio measured in the same run.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it starts, so each setting runs in a fresh process; the
settings alternate (off, on, on, off, ...) for ``--rounds`` rounds so that the machine's background load hits both
alike, and the ratio is taken within each round. TensorFlow's Linux wheels turn oneDNN on by default only on CPUs
with AVX-512 VNNI/BF16 or AMX; this measures whether turning it on elsewhere (e.g. AVX2) would pay. The step is
lesson 7's (the constants of ``fine_tuning.py``): EfficientNet-Lite0 cut before ``--first-top-block``,
``RandomTranslation`` + the top (BatchNorm in inference mode) + Dropout + a softmax Dense head, Adam, label
smoothing, on the activations of the course's training images (not random ones: on random activations both
settings ran at the same, intermediate speed -- the values matter to the kernels). Forward passes (``predict``)
are timed too.

    python benchmarks/training_step.py                        # 160 px, from block 11, 5 rounds
    python benchmarks/training_step.py --image-size 224 --rounds 3
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
from fine_tuning import LABEL_SMOOTHING, SEED, SHIFT  # lesson 7's recipe, declared once for the benchmarks

SETTINGS = {"oneDNN off": "0", "oneDNN on": "1"}


def worker(data_dir: Path, image_size: int, first_top_block: int, steps: int, batch_size: int) -> dict:
    """ms per image of one training step and of one forward pass, in this process's TensorFlow setting."""
    from utils import backbones, data, fine_tuning
    from utils.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    split = fine_tuning.split_backbone(backbones.load_backbone("efficientnet_lite0", image_size),
                                       first_top_block)
    n = steps * batch_size
    train, _ = data.load_course_data(data_dir, n_train_per_class=-(-n // 4), n_test_per_class=1)
    a = split.activations(train.images[:n])  # cached on disk after the first process
    y = keras.utils.to_categorical(train.labels[:n], len(train.class_names))
    inputs = keras.Input(split.activation_shape)
    x = keras.layers.RandomTranslation(SHIFT, SHIFT, fill_mode="nearest", seed=SEED)(inputs)
    x = keras.layers.Dropout(0.2)(split.top(x, training=False))
    model = keras.Model(inputs, keras.layers.Dense(y.shape[1], activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING))
    model.fit(a[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size, verbose=0)  # traces, thread pools
    model.predict(a[:batch_size], batch_size=batch_size, verbose=0)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(a, y, batch_size=batch_size, epochs=1, verbose=0)
    fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall = time.perf_counter()
    model.predict(a, batch_size=batch_size, verbose=0)
    return {"fit ms/image": 1000 * fit_wall / n, "fit CPU ms/image": 1000 * fit_cpu / n,
            "predict ms/image": 1000 * (time.perf_counter() - wall) / n,
            "activation shape": list(split.activation_shape)}


def run_worker(setting: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--worker", "--data-dir", str(data_dir(args)), "--image-size",
           str(args.image_size), "--first-top-block", str(args.first_top_block), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the worker failed (TF_ENABLE_ONEDNN_OPTS={setting}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--first-top-block", type=int, default=11)
    parser.add_argument("--steps", type=int, default=25, help="timed training steps per process")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(data_dir(args), args.image_size, args.first_top_block, args.steps, args.batch_size)))
        return 0
    if args.tiny:
        args.image_size, args.steps, args.rounds = 64, 2, 1
    load_before = load_average()
    rounds = []
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]
        row = {name: run_worker(SETTINGS[name], args) for name in order}
        rounds.append(row)
        log(f"round {r + 1}: " + ", ".join(f"{k} {v['fit ms/image']:.2f} ms/image" for k, v in row.items()))
    fit_ratio = [row["oneDNN off"]["fit ms/image"] / row["oneDNN on"]["fit ms/image"] for row in rounds]
    predict_ratio = [row["oneDNN off"]["predict ms/image"] / row["oneDNN on"]["predict ms/image"] for row in rounds]
    result = {"image_size": args.image_size, "first_top_block": args.first_top_block, "batch_size": args.batch_size,
              "steps": args.steps, "cpus": os.cpu_count(), "load average": [round(load_before, 2),
                                                                           round(load_average(), 2)],
              "rounds": rounds, "fit speed-up (median of rounds)": round(statistics.median(fit_ratio), 3),
              "predict speed-up (median of rounds)": round(statistics.median(predict_ratio), 3)}
    table(f"Lesson 7 training step, EfficientNet-Lite0 {args.image_size} px from block {args.first_top_block}, "
          f"batch {args.batch_size}, {args.rounds} rounds",
          ["setting", "fit ms/image (median)", "fit CPU ms/image", "predict ms/image"],
          [[name, statistics.median(r[name]["fit ms/image"] for r in rounds),
            statistics.median(r[name]["fit CPU ms/image"] for r in rounds),
            statistics.median(r[name]["predict ms/image"] for r in rounds)] for name in SETTINGS])
    log(f"oneDNN on vs off, same rounds: training step {result['fit speed-up (median of rounds)']:.2f}x faster, "
        f"forward {result['predict speed-up (median of rounds)']:.2f}x (per-round ratios "
        f"{[round(x, 2) for x in fit_ratio]})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
