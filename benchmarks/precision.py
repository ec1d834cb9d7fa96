"""Reduced precision and float32 peers on IDENTICAL weights: speed, feature difference and linear-probe accuracy.

    python benchmarks/precision.py [--repeats 3] [--images 512] [--threads 2] [--json out.json] [--data-dir DIR]
    python benchmarks/precision.py --tiny   # 64 px model, 16 images, tflite-f32 and tflite-int8 only: checks it runs

Every variant runs the same EfficientNet-Lite0 network (uint8 32x32 course images in, cast and bilinear resize to
224 px inside the model, 1280 features out):

- ``tflite-f32``: our float32 path (``utils.fast_inference``: the Keras model converted to TFLite, run by XNNPACK);
- ``tflite-int8``: TFLite post-training int8 quantization (weights and activations; calibrated on the 64 fixed
  sample-photo crops that ``utils.fast_inference`` ships, or with ``--calibration course`` on 256 course training
  images), run by XNNPACK (its int8 kernels use AVX512-VNNI where the CPU has it);
- ``tflite-f16w``: TFLite with float16 weights (XNNPACK widens them to float32 unless forced to fp16);
- ``ov-f32`` / ``ov-bf16``: OpenVINO reading the SAME float32 flatbuffer, compiled with
  ``INFERENCE_PRECISION_HINT`` f32 or bf16 (bf16 only where ``OPTIMIZATION_CAPABILITIES`` lists BF16);
- ``ov-int8``: OpenVINO reading the int8 flatbuffer;
- ``ort-f32``: ONNX Runtime on the float32 flatbuffer converted by tf2onnx.

Speed: each variant featurizes the same ``--images`` images per pass; variants are timed round-robin
(``--repeats`` rounds), so background load hits them alike; best and median images/s and the process CPU
seconds per 1000 images are reported, with the ratio to tflite-f32's best. Accuracy: every variant featurizes the
course split (2005 train / 4000 test; ``--data-dir``, else ``$DEEP_FEATURES_DATA``, else ``data/cifar10/``); a
StandardScaler + LogisticRegression(C=0.01) probe as in lesson 3. Variants whose package is absent are reported as
skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from _common import add_common_arguments, course_split


def chunked(run: Callable[[np.ndarray], np.ndarray], batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """A fixed-batch runner -> any N (the last chunk padded with copies of its last image)."""
    def call(images: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(images), batch):
            x = images[s : s + batch]
            n = len(x)
            if n < batch:
                x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])
            out.append(run(x)[:n])
        return np.concatenate(out)
    return call


def openvino_runner(model_path: Path, precision: str, threads: int, batch: int,
                    input_hw: tuple[int, int]) -> Callable | str:
    try:
        import openvino as ov
    except ImportError:
        return "openvino not installed (pip install 'deep-features[bench]')"
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if precision == "bf16" and "BF16" not in caps:
        return f"CPU lacks BF16 (OPTIMIZATION_CAPABILITIES: {caps})"
    model = core.read_model(str(model_path))
    model.reshape({model.inputs[0].get_any_name(): [batch, *input_hw, 3]})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                 "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return chunked(lambda x: np.array(request.infer({0: x})[compiled.outputs[0]]), batch)


def onnxruntime_runner(model_path: Path, threads: int, batch: int) -> Callable | str:
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError:
        return "onnxruntime/tf2onnx not installed (pip install 'deep-features[bench]')"
    onnx_path = model_path.with_suffix(".onnx")
    tf2onnx.convert.from_tflite(str(model_path), opset=17, output_path=str(onnx_path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return chunked(lambda x: session.run(None, {name: x})[0], batch)


def probe_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray) -> float:
    """Lesson 3's classifier on these features: test accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000)).fit(f_train, y_train)
    return float((probe.predict(f_test) == y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="images per call for OpenVINO / ONNX Runtime")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--calibration", choices=("shipped", "course"), default="shipped",
                        help="int8 calibration images: the shipped sample-photo crops, or 256 course training images")
    parser.add_argument("--json", type=Path, default=None)
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.tiny:
        args.repeats, args.images, args.only = 1, 16, ["tflite-f32", "tflite-int8"]

    from utils.backbones import load_backbone
    from utils.fast_inference import _TFLiteRunner, _calibration_images, _convert_to_tflite
    from utils.runtime import _cpu_flags

    train, test = course_split(args)
    images = np.concatenate([train.images, test.images])
    input_hw = (int(images.shape[1]), int(images.shape[2]))
    backbone = load_backbone("efficientnet_lite0", 64 if args.tiny else None)
    work = Path(tempfile.mkdtemp(prefix="precision-"))
    paths = {}
    if args.calibration == "course":
        count = min(256, len(train.images))
        calib = train.images[np.random.default_rng(0).choice(len(train.images), count, replace=False)]
    else:  # what utils.fast_inference ships: fixed crops of scikit-image's sample photos
        calib = _calibration_images(input_hw, count=8 if args.tiny else 64)
    wanted = {"none"} | ({"int8"} if not args.only or {"tflite-int8", "ov-int8"} & set(args.only) else set()) | (
        {"float16"} if not args.only or "tflite-f16w" in args.only else set())
    for q in sorted(wanted):
        t = time.perf_counter()
        paths[q] = work / f"lite0-{q}.tflite"
        paths[q].write_bytes(_convert_to_tflite(backbone.feature_model, backbone.input_size, input_hw, q,
                                                calibration=calib))
        print(f"converted {q} in {time.perf_counter() - t:.1f} s ({paths[q].stat().st_size / 1e6:.1f} MB)",
              file=sys.stderr, flush=True)
    thr = args.threads
    makers: dict[str, Callable[[], Callable | str]] = {
        "tflite-f32": lambda: _TFLiteRunner(paths["none"].read_bytes(), num_threads=thr),
        "tflite-int8": lambda: _TFLiteRunner(paths["int8"].read_bytes(), num_threads=thr),
        "tflite-f16w": lambda: _TFLiteRunner(paths["float16"].read_bytes(), num_threads=thr),
        "ov-f32": lambda: openvino_runner(paths["none"], "f32", thr, args.batch, input_hw),
        "ov-bf16": lambda: openvino_runner(paths["none"], "bf16", thr, args.batch, input_hw),
        "ov-int8": lambda: openvino_runner(paths["int8"], "f32", thr, args.batch, input_hw),
        "ort-f32": lambda: onnxruntime_runner(paths["none"], thr, args.batch),
    }
    runners: dict[str, Callable] = {}
    skipped: dict[str, str] = {}
    for name, make in makers.items():
        if args.only and name not in args.only and name != "tflite-f32":
            continue
        try:
            made = make()
        except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, not fatal
            made = f"{type(exc).__name__}: {exc}"
        if isinstance(made, str):
            skipped[name] = made
            print(f"skipped {name}: {made}", file=sys.stderr, flush=True)
        else:
            runners[name] = made
    sample = images[: args.images]
    for run in runners.values():
        run(sample[:32])  # warm-up
    times: dict[str, list[float]] = {n: [] for n in runners}
    cpu: dict[str, list[float]] = {n: [] for n in runners}
    for r in range(args.repeats):
        for name, run in runners.items():
            c, t = time.process_time(), time.perf_counter()
            run(sample)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {len(sample) / min(v):.0f}/s"
                                                             for n, v in times.items()), file=sys.stderr, flush=True)
    base = len(sample) / min(times["tflite-f32"])
    rows = {}
    reference = runners["tflite-f32"](images) if not args.no_accuracy else None
    for name, run in runners.items():
        best = len(sample) / min(times[name])
        row = {"images_per_s": best, "median_images_per_s": len(sample) / float(np.median(times[name])),
               "ratio_to_tflite_f32": best / base,
               # the same ratio round by round (each round times every variant back to back), then the median:
               # less sensitive to other processes' load than the ratio of the best passes
               "median_round_ratio": float(np.median(np.asarray(times["tflite-f32"]) / np.asarray(times[name]))),
               "cpu_ratio": min(cpu["tflite-f32"]) / min(cpu[name]),
               "cpu_s_per_1000": 1000 * min(cpu[name]) / len(sample)}
        if reference is not None:
            feats = reference if name == "tflite-f32" else run(images)
            diff = np.abs(feats - reference)
            row["max_abs_diff"] = float(diff.max())
            row["rel_diff"] = float(np.linalg.norm(feats - reference) / np.linalg.norm(reference))
            n = len(train.images)
            row["accuracy"] = probe_accuracy(feats[:n], train.labels, feats[n:], test.labels)
        rows[name] = row
        print(name, json.dumps(row), file=sys.stderr, flush=True)
    if "accuracy" in rows.get("tflite-f32", {}):
        for row in rows.values():
            row["accuracy_change_points"] = 100 * (row["accuracy"] - rows["tflite-f32"]["accuracy"])
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except ImportError:
        caps = None
    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "avx512_fp16")
             if f in _cpu_flags()]
    doc = {"threads": thr, "calibration": args.calibration, "images_per_pass": len(sample), "repeats": args.repeats,
           "batch": args.batch, "tiny": args.tiny, "cpu_flags": flags, "openvino_capabilities": caps,
           "variants": rows, "skipped": skipped, "load_average": os.getloadavg()[0]}
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
