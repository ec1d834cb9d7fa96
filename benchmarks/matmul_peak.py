"""Measured single-precision matmul peak of this machine (numpy float32 sgemm), as a roofline for the featurizer.

Run by ``benchmarks/featurize.py`` in a subprocess whose environment lacks ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` (they can force a slower OpenBLAS kernel), so the peak is the BLAS's best on this CPU.
Prints one JSON object: ``{"gflops": best, "sizes": {n: gflops}, "blas": threadpoolctl info or null}``.

    python benchmarks/matmul_peak.py [--sizes 2048 3072 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


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
    args = parser.parse_args()
    sizes = {n: sgemm_gflops(n, args.repeats) for n in args.sizes}
    print(json.dumps({"gflops": max(sizes.values()), "sizes": sizes, "blas": blas_info()}))


if __name__ == "__main__":
    main()
