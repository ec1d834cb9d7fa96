"""Measured matmul peak of this machine, as a roofline for the featurizer: float32 (numpy sgemm) or bfloat16.

Run by ``benchmarks/featurize.py`` in a subprocess whose environment lacks ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` (they can force a slower OpenBLAS kernel), so the peak is the BLAS's best on this CPU.
Prints one JSON object: ``{"gflops": best, "sizes": {n: gflops}, "blas": threadpoolctl info or null}``.

``--dtype bfloat16``: numpy has no bfloat16 BLAS, so both dtypes are timed with TensorFlow's ``tf.matmul`` (oneDNN,
which uses AVX512-BF16 / AMX where the CPU has them) in the same run: ``{"gflops": bf16 best, "float32_gflops":
TensorFlow's float32 best, "ratio": ...}``.

    python benchmarks/matmul_peak.py [--sizes 2048 3072 4096] [--repeats 5] [--dtype float32|bfloat16] [--tiny]

``--tiny``: 64 and 128 square, one repeat (checks the script runs; the figure means nothing).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _common import add_common_arguments


def sgemm_gflops(n: int, repeats: int) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n float32 matmul (2 n^3 flops), after one warm-up."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: page in, spin up the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def tf_gflops(n: int, repeats: int, dtype: str) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n ``tf.matmul`` in ``dtype`` (inputs made outside the timing)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    b = tf.constant(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    tf.matmul(a, b).numpy()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def blas_info() -> list[dict] | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("internal_api", "architecture", "num_threads", "version", "threading_layer")
    return [{k: i.get(k) for k in keys} for i in threadpool_info() if i.get("user_api") == "blas"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 3072, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    add_common_arguments(parser)  # --data-dir is accepted like every benchmark's, and unused: no images here
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.repeats = [64, 128], 1
    if args.dtype == "bfloat16":
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        bf16, f32 = {}, {}
        for n in args.sizes:  # interleaved: background load hits both alike
            f32[n] = tf_gflops(n, args.repeats, "float32")
            bf16[n] = tf_gflops(n, args.repeats, "bfloat16")
        print(json.dumps({"gflops": max(bf16.values()), "sizes": bf16, "float32_gflops": max(f32.values()),
                          "float32_sizes": f32, "ratio": max(bf16.values()) / max(f32.values())}))
        return
    sizes = {n: sgemm_gflops(n, args.repeats) for n in args.sizes}
    print(json.dumps({"gflops": max(sizes.values()), "sizes": sizes, "blas": blas_info()}))


if __name__ == "__main__":
    main()
