"""Featurization benchmarks: throughput, a PyTorch peer on identical weights, the matmul roofline, end to end.

    python benchmarks/featurize.py            # full run (~10 min on 2 cores)
    python benchmarks/featurize.py --quick    # EfficientNet-Lite0 only, fewer sizes and repeats (~3 min)
    python benchmarks/featurize.py --json     # tables on stderr, one JSON document on stdout
    python benchmarks/featurize.py --sections 6,7,8,9   # precision, bf16 peak, scale, resume (~25 min)
    python benchmarks/featurize.py --tiny --data-dir DIR   # sections 1, 3, 4, 5 on a few images at 64 px, seconds

The course images are found as the course finds them: ``--data-dir``, then ``$DEEP_FEATURES_DATA``, then
``data/cifar10/``.

Sections (see benchmarks/README.md for the rules and the latest figures):

1. throughput (images/s) of ``utils.features``' inference step on real course images (32x32 uint8, resized to
   the model's size like the featurizer does), per backbone, image size and batch size; best of several timed
   passes, after an untimed warm-up pass;
2. the PyTorch peer: ``efficientnet-lite-pytorch`` (the EfficientNet-Lite implementation published next to the
   checkpoint packages) loading the SAME checkpoint file; first the features are compared, then both are timed
   in the same interleaved loop (eager, ``torch.inference_mode()``); skipped with a message when torch is absent;
3. the machine's limit: model FLOPs per image (2 x multiply-accumulates of every Conv2D, DepthwiseConv2D and
   Dense layer, from the Keras model's shapes) x images/s, against a float32 numpy matmul peak measured in a
   subprocess in the same run;
4. end to end: ``featurize_images`` over the 6005-image course split in a fresh process with an empty cache dir:
   cold (includes converting the weights and the TFLite model), warm (served from the feature cache), and
   recomputed with the converted model cached;
5. what else was tried for the Keras path: XLA, batch sizes, thread settings, oneDNN off, resize before the graph;
6. reduced precision and the float32 peers on identical weights (``benchmarks/precision.py``): TFLite int8 and
   float16-weight models with XNNPACK, OpenVINO f32 / bf16 / int8, ONNX Runtime f32; images/s and ratio to our
   float32 TFLite path, CPU time, feature difference and linear-probe accuracy on the course split (optional
   packages: ``pip install -e '.[bench]'``; a variant whose package is absent is listed as skipped);
7. the bfloat16 matmul peak beside the float32 one (``benchmarks/matmul_peak.py --dtype bfloat16``);
8. scale (``benchmarks/scale.py scale``): images/s and peak memory featurizing 1k, 4k and 16k files;
9. resume after a kill (``benchmarks/scale.py resume``): 4000 files plus 3 broken ones, SIGKILLed at 70 %, rerun.

Timings are wall-clock on whatever else the machine is doing: the load average is printed with each section.
Variants compared with each other are timed round-robin in one loop, so background load hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from _common import (REPO, add_common_arguments, course_split, data_dir, interleaved_best, load_average, log,
                     log_to_stderr, table)

TINY_SIZE = 64  # --tiny: every model at this input size, on a few images
GOAL_VS_PEER = 1.3
GOAL_ROOFLINE = 0.60
GOAL_E2E_IMAGES_PER_S = 120.0
GOAL_WARM_SECONDS = 2.0
MAX_ABS_DIFF = 1e-3  # any faster path must give the Keras model's features to this

def course_images(args: argparse.Namespace) -> np.ndarray:
    train, test = course_split(args)
    images = np.concatenate([train.images, test.images])
    return images[:32] if args.tiny else images


# ---------------------------------------------------------------------------------------------------------------
# Our paths
# ---------------------------------------------------------------------------------------------------------------

def _keras_step(backbone, jit_compile: bool = False, resize: bool = True) -> Callable:
    """The tf.function path of utils.features (its fallback): uint8 -> cast -> resize in the graph -> model."""
    import tensorflow as tf

    size, model = backbone.input_size, backbone.feature_model
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8) if resize else tf.TensorSpec([None, size, size, 3],
                                                                                        tf.float32)

    @tf.function(input_signature=[spec], reduce_retracing=True, jit_compile=jit_compile)
    def step(images):
        x = tf.cast(images, tf.float32)
        if resize:
            x = tf.image.resize(x, (size, size), method="bilinear")
        return model(x, training=False)

    return lambda batch: step(batch).numpy()


def resized(images: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf

    return tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear").numpy()


def ours_step(backbone) -> tuple[Callable, float, str]:
    """What utils.features runs (the TFLite fast path when it works, else the Keras step), its set-up time, and
    which path it is."""
    from utils import fast_inference

    start = time.perf_counter()
    fast = fast_inference._tflite_featurizer(backbone)
    step = fast or fast_inference._keras_step(backbone.feature_model, backbone.input_size)
    setup = time.perf_counter() - start
    kind = "tflite-xnnpack" if fast else "keras-tf.function"
    return (lambda batch: np.asarray(step(batch))), setup, kind


# ---------------------------------------------------------------------------------------------------------------
# 1. Throughput
# ---------------------------------------------------------------------------------------------------------------

def section_throughput(images: np.ndarray, quick: bool, tiny: bool = False) -> list[dict]:
    from utils.backbones import REGISTRY, BackboneUnavailableError, load_backbone

    offline = [name for name, spec in REGISTRY.items() if spec.offline]
    backbones = offline[:1] if quick or tiny else offline
    batches = (8,) if tiny else (32,) if quick else (8, 32, 64)
    repeats = 1 if tiny else 2 if quick else 3
    results, rows = [], []
    for name in backbones:
        native = REGISTRY[name].input_size
        sizes = (TINY_SIZE,) if tiny else (native, 96) if quick else (native, 160, 96)
        for size in sizes:
            try:
                bb = load_backbone(name, size)
            except BackboneUnavailableError as exc:
                log(f"skip {name}: {exc}")
                break
            fast, setup, kind = ours_step(bb)
            fns = {f"{kind} bs{b}": fast for b in batches}
            if size == native and not quick:
                fns["keras-tf.function bs32"] = _keras_step(bb)
            bs = {k: int(k.rsplit("bs", 1)[1]) for k in fns}
            n = min(len(images), 128 if size >= 200 else 256)
            speeds = interleaved_best(fns, images[:n], bs, repeats)
            for k, v in speeds.items():
                path, b = k.rsplit(" bs", 1)
                results.append({"backbone": name, "size": size, "path": path, "batch": int(b), "images_per_s": v,
                                "setup_s": setup if path == kind else None})
                rows.append([name, size, path, int(b), v])
    table("1. Throughput on real course images (images/s, best of several, warm-up excluded)",
          ["backbone", "px", "path", "batch", "images/s"], rows)
    return results


# ---------------------------------------------------------------------------------------------------------------
# 2. PyTorch peer on identical weights
# ---------------------------------------------------------------------------------------------------------------

def section_peer(images: np.ndarray, quick: bool) -> dict:
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        log(f"\n## 2. PyTorch peer: SKIPPED ({exc}). Install it with: pip install torch==2.13.0 "
            "efficientnet-lite-pytorch==0.1.0   (or pip install -e '.[bench]')")
        return {"skipped": str(exc)}
    from utils.backbones import _lite_checkpoint_path, load_backbone

    path = _lite_checkpoint_path("efficientnet_lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)  # the very file our Keras model is built from
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights ..."
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
        torch_build = time.perf_counter() - start
        net_cl = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    peer_state = net.state_dict()
    same_tensors = all(torch.equal(peer_state[k], v) for k, v in state.items() if k in peer_state)
    net_cl = net_cl.to(memory_format=torch.channels_last)

    def torch_step(model, channels_last: bool) -> Callable:
        def step(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
                x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
                x = (x - 127.0) / 128.0  # EfficientNet-Lite's preprocessing, as in our Keras model
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                return model.extract_features(x).mean((2, 3)).numpy()
        return step

    bb = load_backbone("efficientnet_lite0", 224)
    ours, _, kind = ours_step(bb)
    keras = _keras_step(bb)
    sample = images[:64]
    x224 = resized(sample, 224)
    with torch.inference_mode():  # model equivalence on identical float inputs
        peer_model_only = net.extract_features(torch.from_numpy((x224 - 127.0) / 128.0).permute(0, 3, 1, 2)
                                               ).mean((2, 3)).numpy()
    keras_model_only = np.asarray(bb.feature_model(x224, training=False))
    scale = float(np.abs(keras_model_only).max())
    diffs = {
        "peer_vs_keras_same_input": float(np.abs(peer_model_only - keras_model_only).max()),
        "peer_pipeline_vs_keras_pipeline": float(np.abs(torch_step(net, False)(sample) - keras(sample)).max()),
        "ours_vs_keras_pipeline": float(np.abs(ours(sample) - keras(sample)).max()),
        "feature_scale": scale,
    }
    ok = all(v <= MAX_ABS_DIFF * scale for k, v in diffs.items() if k != "feature_scale")
    table("2a. Same features? max |difference| over 64 real images, 1280 features each",
          ["comparison", "max abs diff", "relative to max |feature|"],
          [[k, v, v / scale] for k, v in diffs.items() if k != "feature_scale"])
    log(f"checkpoint tensors identical in the peer: {same_tensors}; peer build {torch_build:.2f} s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not ok:
        raise SystemExit("features differ: the comparison below would be meaningless")

    n = 64 if quick else 128
    fns = {f"ours ({kind}) bs32": ours, "keras tf.function bs32": keras,
           "pytorch eager bs32": torch_step(net, False), "pytorch eager channels_last bs32": torch_step(net_cl, True)}
    batches = {k: 32 for k in fns}
    if not quick:
        for b in (8,):
            fns[f"pytorch eager bs{b}"] = torch_step(net, False)
            fns[f"pytorch eager channels_last bs{b}"] = torch_step(net_cl, True)
            fns[f"ours ({kind}) bs{b}"] = ours
            batches.update({f"pytorch eager bs{b}": b, f"pytorch eager channels_last bs{b}": b,
                            f"ours ({kind}) bs{b}": b})
    speeds = interleaved_best(fns, images[:n], batches, 2 if quick else 3)
    best_ours = max(v for k, v in speeds.items() if k.startswith("ours"))
    best_peer = max(v for k, v in speeds.items() if k.startswith("pytorch eager bs"))
    best_peer_any = max(v for k, v in speeds.items() if k.startswith("pytorch"))
    table("2b. EfficientNet-Lite0 224 px, uint8 32x32 in -> 1280 features out (images/s, interleaved)",
          ["implementation", "images/s", "vs default PyTorch"], [[k, v, v / best_peer] for k, v in speeds.items()])
    log(f"ours / PyTorch (default NCHW, as the package runs): {best_ours / best_peer:.2f}x; "
        f"ours / best PyTorch variant: {best_ours / best_peer_any:.2f}x  (goal >= {GOAL_VS_PEER}x)")
    checkpoint = path.relative_to(path.parents[2]).as_posix()  # package/models/file: no machine's folder
    return {"peer": "efficientnet-lite-pytorch 0.1.0", "torch": torch.__version__, "checkpoint": checkpoint,
            "same_tensors": same_tensors, "diffs": diffs, "images_per_s": speeds,
            "ratio_vs_default_peer": best_ours / best_peer, "ratio_vs_best_peer": best_ours / best_peer_any}


# ---------------------------------------------------------------------------------------------------------------
# 3. Roofline
# ---------------------------------------------------------------------------------------------------------------

def model_flops(model) -> int:
    """2 x multiply-accumulates of every Conv2D, DepthwiseConv2D and Dense layer, per image.

    Conv2D: 2*Ho*Wo*kh*kw*Cin*Cout; DepthwiseConv2D: 2*Ho*Wo*kh*kw*C*multiplier; Dense: 2*in*out. Batch norms,
    activations, adds, pooling and the input rescaling are not counted (they are < 2 % of the total here).
    """
    total = 0
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "Conv2D":
            _, ho, wo, cout = layer.output.shape
            kh, kw, cin, _ = layer.kernel.shape
            total += 2 * ho * wo * kh * kw * cin * cout
        elif cls == "DepthwiseConv2D":
            _, ho, wo, _ = layer.output.shape
            kh, kw, c, m = layer.kernel.shape
            total += 2 * ho * wo * kh * kw * c * m
        elif cls == "Dense":
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout
    return int(total)


def matmul_peak(quick: bool, tiny: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}}
    cmd = [sys.executable, str(Path(__file__).with_name("matmul_peak.py")),
           *(["--tiny"] if tiny else ["--repeats", "3" if quick else "7"])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def section_roofline(throughput: list[dict], peer: dict, quick: bool, tiny: bool = False) -> dict:
    from utils.backbones import load_backbone

    peak = matmul_peak(quick, tiny)
    rows, result = [], {"matmul": peak, "models": []}
    for name in sorted({r["backbone"] for r in throughput}):
        sizes = sorted({r["size"] for r in throughput if r["backbone"] == name}, reverse=True)
        for size in sizes:
            flops = model_flops(load_backbone(name, size).feature_model)
            for path in sorted({r["path"] for r in throughput if r["backbone"] == name and r["size"] == size}):
                best = max(r["images_per_s"] for r in throughput
                           if r["backbone"] == name and r["size"] == size and r["path"] == path)
                achieved = flops * best / 1e9
                rows.append([name, size, path, flops / 1e9, best, achieved, 100 * achieved / peak["gflops"]])
                result["models"].append({"backbone": name, "size": size, "path": path, "gflop_per_image": flops / 1e9,
                                         "images_per_s": best, "gflops": achieved,
                                         "percent_of_matmul_peak": 100 * achieved / peak["gflops"]})
    blas = ", ".join(f"{b['internal_api']} {b.get('version')} {b.get('architecture')} kernel, {b['num_threads']} "
                     f"threads" for b in peak["blas"] or []) or "threadpoolctl not installed"
    table(f"3. Roofline: float32 matmul peak {peak['gflops']:.1f} GFLOP/s "
          f"({', '.join(f'{n}: {g:.0f}' for n, g in peak['sizes'].items())}; {blas})",
          ["backbone", "px", "path", "GFLOP/img", "images/s", "GFLOP/s", "% of peak"], rows)
    log("FLOPs = 2 x multiply-accumulates of the Conv2D/DepthwiseConv2D/Dense layers (BN, ReLU6, add, pool not "
        "counted); matmul measured in a subprocess without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    return result


# ---------------------------------------------------------------------------------------------------------------
# 4. End to end, in a fresh process and an empty cache dir
# ---------------------------------------------------------------------------------------------------------------

E2E_CODE = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from utils.data import load_course_data
from utils.backbones import load_backbone
from utils.features import featurize_images
train, test = load_course_data(sys.argv[2], *json.loads(sys.argv[5]))
images = np.concatenate([train.images, test.images])[: int(sys.argv[3])]
size = int(sys.argv[4]) or None
t = time.perf_counter(); load_backbone("efficientnet_lite0", size); build = time.perf_counter() - t
t = time.perf_counter(); a = featurize_images(images, image_size=size, progress=False); cold = time.perf_counter() - t
t = time.perf_counter(); b = featurize_images(images, image_size=size, progress=False); warm = time.perf_counter() - t
t = time.perf_counter(); c = featurize_images(images, image_size=size, use_cache=False, progress=False)
again = time.perf_counter() - t
print(json.dumps({"images": len(images), "build_s": build, "cold_s": cold, "warm_s": warm, "recomputed_s": again,
                  "same": bool(np.array_equal(a, b)), "recomputed_max_diff": float(np.abs(a - c).max())}))
"""


def section_end_to_end(args: argparse.Namespace) -> dict:
    n = 32 if args.tiny else 1024 if args.quick else 6005
    size = TINY_SIZE if args.tiny else 0
    per_class = [8, 4] if args.tiny else [None, None]  # images per class: train, test
    with tempfile.TemporaryDirectory(prefix="deep-features-e2e-") as cache:
        env = dict(os.environ, DEEP_FEATURES_CACHE=cache)
        if args.tiny:  # the converted models copied in: conversions are most of a tiny run's time
            from _common import cache_root

            for kind in ("weights", "tflite"):
                if (cache_root() / kind).is_dir():
                    shutil.copytree(cache_root() / kind, Path(cache) / kind)
        done = subprocess.run([sys.executable, "-c", E2E_CODE, str(REPO), str(data_dir(args)), str(n), str(size),
                               json.dumps(per_class)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"end-to-end subprocess failed: {done.stderr[-2000:]}")
        out = done.stdout
    r = json.loads(out.strip().splitlines()[-1])
    n = r["images"]
    rows = [
        ["build backbone (convert checkpoint -> Keras)", r["build_s"], ""],
        ["1st featurize_images (converts to TFLite, then runs)", r["cold_s"], n / r["cold_s"]],
        ["2nd call (feature cache)", r["warm_s"], ""],
        ["recomputed, use_cache=False (converted model cached)", r["recomputed_s"], n / r["recomputed_s"]],
    ]
    table(f"4. End to end: featurize_images, {n} course images, {size or 224} px, fresh process, empty cache dir",
          ["step", "seconds", "images/s"], rows)
    log(f"cached result identical: {r['same']}; recomputed max diff {r['recomputed_max_diff']:.2g}")
    return r


# ---------------------------------------------------------------------------------------------------------------
# 5. What else was tried (Keras path variants; some need a fresh process)
# ---------------------------------------------------------------------------------------------------------------

WORKER_CODE = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
cfg = json.loads(sys.argv[2])
import tensorflow as tf
if cfg.get("intra"):
    tf.config.threading.set_intra_op_parallelism_threads(cfg["intra"])
if cfg.get("inter"):
    tf.config.threading.set_inter_op_parallelism_threads(cfg["inter"])
sys.path.insert(0, sys.argv[1] + "/benchmarks")
from _common import interleaved_best
from featurize import _keras_step
from utils.backbones import load_backbone
from utils.data import load_course_data
bb = load_backbone("efficientnet_lite0", 224)
train, test = load_course_data(cfg["data_dir"])
images = np.concatenate([train.images, test.images])[: cfg["n"]]
speeds = interleaved_best({"keras": _keras_step(bb)}, images, 32, cfg["repeats"])
print(json.dumps(speeds))
"""


def run_worker(cfg: dict, extra_env: dict | None = None) -> float:
    env = dict(os.environ, **(extra_env or {}))
    out = subprocess.run([sys.executable, "-c", WORKER_CODE, str(REPO), json.dumps(cfg)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["keras"]


def section_variants(images: np.ndarray, args: argparse.Namespace) -> dict:
    import tensorflow as tf

    from utils.backbones import load_backbone
    from utils.fast_inference import _TFLiteRunner, _convert_to_tflite, _load_or_convert

    quick = args.quick or args.tiny
    bb = load_backbone("efficientnet_lite0", TINY_SIZE if args.tiny else 224)
    n, repeats = (16, 1) if args.tiny else (64, 2) if quick else (128, 3)
    sample = images[:n]
    ref = _keras_step(bb)(sample[:32])
    rows, result = [], {}

    # In-process, interleaved: batch sizes, resize before the graph, TFLite chunk sizes and threads.
    keras_graph = _keras_step(bb)
    keras_pre = _keras_step(bb, resize=False)
    flat = _load_or_convert(bb, images.shape[1:3])  # uint8 32x32 in, resize inside
    fns = {f"keras tf.function bs{b}": (keras_graph, b) for b in (8, 32, 64)}
    fns["keras, resize before the graph (resize timed too) bs32"] = (lambda x: keras_pre(resized(x, bb.input_size)), 32)
    for chunk in (1, 4, 8, 16, 32):
        fns[f"tflite xnnpack 2 threads, chunk {chunk} bs32"] = (_TFLiteRunner(flat, chunk_size=chunk), 32)
    fns["tflite xnnpack 1 thread, chunk 8 bs32"] = (_TFLiteRunner(flat, num_threads=1), 32)
    speeds = interleaved_best({k: f for k, (f, _) in fns.items()}, sample, {k: b for k, (_, b) in fns.items()},
                              repeats)
    for k, v in speeds.items():
        rows.append([k, v, ""])
    result["in_process"] = speeds

    tfl = _TFLiteRunner(flat)
    result["tflite_max_diff"] = float(np.abs(tfl(sample[:32]) - ref).max())
    if not args.tiny:  # a conversion is most of a tiny run's time
        start = time.perf_counter()
        _convert_to_tflite(bb.feature_model, bb.input_size, images.shape[1:3])
        result["tflite_conversion_s"] = time.perf_counter() - start
        rows.append(["tflite: one-off conversion seconds (then cached on disk)", result["tflite_conversion_s"],
                     f"max diff {result['tflite_max_diff']:.2g}"])
    start = time.perf_counter()
    resized(sample[:32], bb.input_size)
    result["resize_s_per_32"] = time.perf_counter() - start
    rows.append([f"tf.image.resize 32 images to {bb.input_size} px, seconds", result["resize_s_per_32"], ""])

    if not quick:  # XLA: slow to compile and (here) slow to run; a few images are enough to show it
        xla = _keras_step(bb, jit_compile=True)
        start = time.perf_counter()
        out = xla(sample[:8])
        result["xla_first_call_s"] = time.perf_counter() - start
        result["xla_max_diff"] = float(np.abs(out - ref[:8]).max())
        result["xla_images_per_s"] = interleaved_best({"xla": xla}, sample[:16], 8, 1)["xla"]
        rows.append(["keras jit_compile=True (XLA) bs8", result["xla_images_per_s"],
                     f"first call {result['xla_first_call_s']:.1f} s, max diff {result['xla_max_diff']:.2g}"])
        # Fresh processes: oneDNN off, thread settings (they must be set before TensorFlow starts).
        cfg = {"n": n, "repeats": repeats, "data_dir": str(data_dir(args))}
        for label, extra, env in [
            ("keras bs32, fresh process, defaults", {}, {}),
            ("keras bs32, TF_ENABLE_ONEDNN_OPTS=0", {}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
            ("keras bs32, intra_op=2 inter_op=1", {"intra": 2, "inter": 1}, {}),
            ("keras bs32, intra_op=1 inter_op=2", {"intra": 1, "inter": 2}, {}),
        ]:
            try:
                v = run_worker(dict(cfg, **extra), env)
            except subprocess.CalledProcessError as exc:
                v = float("nan")
                log(f"{label}: failed: {exc.stderr[-500:]}")
            result[label] = v
            rows.append([label, v, "separate process"])
    del tf
    table(f"5. Variants tried (EfficientNet-Lite0 {bb.input_size} px, course images, images/s)",
          ["variant", "value", "note"],
          rows)
    return result


def run_json(script: str, *args: str, timeout: float = 3600, data: Path | None = None) -> dict:
    """Run ``benchmarks/<script> args --json FILE`` (or, for matmul_peak, read its stdout) and return the JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(Path(__file__).with_name(script)), *args]
        if script != "matmul_peak.py":
            cmd += ["--json", str(out)]
        if data is not None:  # an option of the main parser: before a subcommand
            cmd[2:2] = ["--data-dir", str(data)]
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env["PYTHONPATH"] = str(REPO)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{script} failed: {done.stderr[-2000:]}")
        return json.loads(out.read_text() if out.exists() else done.stdout.strip().splitlines()[-1])


def section_precision(quick: bool, data: Path) -> dict:
    doc = run_json("precision.py", "--repeats", "2" if quick else "5", "--images", "256" if quick else "512",
                   *(["--no-accuracy"] if quick else []), data=data)
    rows = [[name, v["images_per_s"], v["ratio_to_tflite_f32"], v["cpu_s_per_1000"], v.get("max_abs_diff", ""),
             v.get("rel_diff", ""), v.get("accuracy", ""), v.get("accuracy_change_points", "")]
            for name, v in doc["variants"].items()]
    rows += [[name, f"skipped: {why}", "", "", "", "", "", ""] for name, why in doc["skipped"].items()]
    table(f"Reduced precision and float32 peers on identical weights ({doc['threads']} threads, best of "
          f"{doc['repeats']} interleaved passes of {doc['images_per_pass']} images)",
          ["variant", "images/s", "x tflite-f32", "CPU s/1000", "max |diff|", "rel diff", "probe acc", "acc change"],
          rows)
    return doc


def section_bf16_peak(quick: bool) -> dict:
    sizes = ["1024", "2048"] if quick else ["1024", "2048", "3072"]
    doc = run_json("matmul_peak.py", "--dtype", "bfloat16", "--sizes", *sizes, "--repeats", "3" if quick else "5")
    numpy_f32 = run_json("matmul_peak.py", "--sizes", *sizes, "--repeats", "3" if quick else "5")
    doc["numpy_float32_gflops"] = numpy_f32["gflops"]
    table("Matmul peak: bfloat16 beside float32 (GFLOP/s)", ["kernel", "GFLOP/s"],
          [["numpy float32 (BLAS)", numpy_f32["gflops"]], ["tf.matmul float32 (oneDNN)", doc["float32_gflops"]],
           ["tf.matmul bfloat16 (oneDNN)", doc["gflops"]], ["bf16 / f32 (tf)", doc["ratio"]]])
    return doc


def section_scale(quick: bool, data: Path) -> dict:
    doc = run_json("scale.py", "scale", "--sizes", *(["500", "2000"] if quick else ["1000", "4000", "16000"]),
                   data=data)
    table("Scale: featurize_files on N course JPEGs, fresh process, empty feature cache",
          ["files", "images/s", "featurize s", "CPU s", "process wall s", "peak RSS MB"],
          [[r["files"], r["images_per_s"], r["seconds"], r["cpu_seconds"], r["wall_seconds"], r["peak_rss_mb"]]
           for r in doc["rows"]])
    if "peak_rss_16k_over_4k" in doc:
        log(f"peak RSS 16k / 4k = {doc['peak_rss_16k_over_4k']:.3f}")
    return doc


def section_resume(quick: bool, data: Path) -> dict:
    doc = run_json("scale.py", "resume", "--files", "1000" if quick else "4000", data=data)
    table("Resume after kill", ["measure", "value"], [
        ["files (incl. 3 broken)", doc["files"]], ["full run, process wall s", doc["full"]["wall_seconds"]],
        ["killed after files", doc["killed"]["killed_at_files"]], ["rerun, process wall s", doc["rerun"]["wall_seconds"]],
        ["rerun / full (wall)", doc["rerun_over_full_wall"]], ["rerun / full (featurize)", doc["rerun_over_full_featurize"]],
        ["identical features", doc["identical_features"]],
        ["skipped files named", "; ".join(f"{Path(p).name}: {r}" for p, r in doc["skipped_named_by_rerun"])]])
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Lite0 only, fewer sizes and repeats")
    parser.add_argument("--json", action="store_true", help="tables on stderr, a JSON document on stdout")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset of 1-9 (default: all; with --tiny: 1,3,4,5, as 6-9 are the "
                             "other scripts, each with its own --tiny)")
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.json:
        log_to_stderr()
    sections = {int(s) for s in (args.sections or ("1,3,4,5" if args.tiny else "1,2,3,4,5,6,7,8,9")).split(",")}
    import platform

    import tensorflow as tf

    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    log(f"# deep-features featurization benchmark{' (quick)' if args.quick else ''}: {cpu}, "
        f"{os.cpu_count()} cores, load average {load_average():.2f}; tensorflow {tf.__version__}, numpy "
        f"{np.__version__}; cache {os.environ.get('DEEP_FEATURES_CACHE', '(default)')}")
    images = course_images(args)
    data = data_dir(args)
    report: dict = {"quick": args.quick, "tiny": args.tiny, "cpus": os.cpu_count(), "tensorflow": tf.__version__,
                    "load_average_start": load_average()}
    throughput: list[dict] = []
    if 1 in sections or 3 in sections:
        throughput = section_throughput(images, args.quick, args.tiny)
        report["throughput"] = throughput
    if 2 in sections:
        report["peer"] = section_peer(images, args.quick)
    if 3 in sections:
        report["roofline"] = section_roofline(throughput, report.get("peer", {}), args.quick, args.tiny)
    if 4 in sections:
        report["end_to_end"] = section_end_to_end(args)
    if 5 in sections:
        report["variants"] = section_variants(images, args)
    if 6 in sections:
        report["precision"] = section_precision(args.quick, data)
    if 7 in sections:
        report["bf16_peak"] = section_bf16_peak(args.quick)
    if 8 in sections:
        report["scale"] = section_scale(args.quick, data)
    if 9 in sections:
        report["resume"] = section_resume(args.quick, data)

    goals = []
    lite0 = [r for r in throughput if r["backbone"] == "efficientnet_lite0" and r["size"] == 224]
    if "peer" in report and "ratio_vs_default_peer" in report["peer"]:
        goals.append(["ours >= 1.3x PyTorch peer (images/s)", f"{report['peer']['ratio_vs_default_peer']:.2f}x",
                      report["peer"]["ratio_vs_default_peer"] >= GOAL_VS_PEER])
    if "roofline" in report:
        best = max((m for m in report["roofline"]["models"]
                    if m["backbone"] == "efficientnet_lite0" and m["size"] == 224),
                   key=lambda m: m["percent_of_matmul_peak"], default=None)
        if best:
            goals.append(["ours >= 60 % of the matmul peak", f"{best['percent_of_matmul_peak']:.0f} %",
                          best["percent_of_matmul_peak"] >= 100 * GOAL_ROOFLINE])
    if "end_to_end" in report:
        e = report["end_to_end"]
        goals.append([f"{e['images']} images >= 120 images/s (recomputed)", f"{e['images'] / e['recomputed_s']:.0f}",
                      e["images"] / e["recomputed_s"] >= GOAL_E2E_IMAGES_PER_S])
        goals.append([f"{e['images']} images >= 120 images/s (first call, incl. conversion)",
                      f"{e['images'] / e['cold_s']:.0f}", e["images"] / e["cold_s"] >= GOAL_E2E_IMAGES_PER_S])
        goals.append(["second (cached) call < 2 s", f"{e['warm_s']:.2f} s", e["warm_s"] < GOAL_WARM_SECONDS])
    if "precision" in report and "tflite-int8" in report["precision"]["variants"]:
        v = report["precision"]["variants"]["tflite-int8"]
        goals.append(["int8 >= 2x float32 (images/s)", f"{v['ratio_to_tflite_f32']:.2f}x", v["ratio_to_tflite_f32"] >= 2])
        if "accuracy_change_points" in v:
            goals.append(["int8 probe accuracy within 0.5 points", f"{v['accuracy_change_points']:+.2f}",
                          abs(v["accuracy_change_points"]) <= 0.5])
    if "scale" in report and "peak_rss_16k_over_4k" in report["scale"]:
        r = report["scale"]["peak_rss_16k_over_4k"]
        goals.append(["peak memory 16k files within 10 % of 4k", f"{r:.3f}", r <= 1.10])
    if "resume" in report:
        r = report["resume"]
        goals.append([f"rerun after kill at 70 % < 60 % of a full run ({r['files']} files)",
                      f"{r['rerun_over_full_wall']:.2f}",
                      r["rerun_over_full_wall"] < 0.6])
        goals.append(["rerun gives the same features", str(r["identical_features"]), r["identical_features"]])
    if lite0:
        report["lite0_224_best_images_per_s"] = max(r["images_per_s"] for r in lite0)
    if goals:
        table("Goals", ["goal", "measured", "met"], goals)
        report["goals"] = [{"goal": g, "measured": m, "met": bool(ok)} for g, m, ok in goals]
    report["load_average_end"] = load_average()
    if args.json:
        print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
