"""Search a large collection: a faiss index at 10^4 and 10^5 images, and featurization on Dask.

    python benchmarks/index.py [--data-dir DIR] [--sizes 10000 100000] [--image-size 96] [--json out.json]
    python benchmarks/index.py --tiny          # seconds, on tests/data/cifar10-4class-small

The collection is made of real photos: every course image of the data folder (``--data-dir``, else
``$DEEP_FEATURES_DATA``, else the repository's ``data/cifar10``) and augmented variants of it (a horizontal flip,
random crops resized back, flipped crops), shuffled with a fixed seed. ``--queries`` of these variants are held
out as queries (so a query's own flip or crop may be in the collection, as in a real photo library). Features are
EfficientNet-Lite0 features at ``--image-size`` px (96 by default, not the native 224, so that 10^5 images are
affordable on 2 shared cores), computed with ``utils.features.featurize_images`` in cached blocks.

For each size and each index kind (``exact``: faiss ``IndexFlatIP``; ``hnsw``: ``IndexHNSWFlat``; ``ivfpq``:
``IndexIVFPQ``, for the comparison), it reports the build seconds (CPU and wall, one thread), recall@10 against exact search
(the share of the exact 10 nearest found), query latency p50 / p95 over one query at a time on one thread
(``faiss.omp_set_num_threads(1)``; wall time, and the thread's CPU time, which a busy machine does not inflate),
and the index's memory per vector (its serialized size / count).

Re-indexing: a folder indexed with ``deep_features.index.build_index`` into an empty feature cache, then 1 % more files
and the update timed against the first indexing.

Featurization throughput: the same folder of JPEG files featurized (feature cache off, so every run computes)
by the single-process path (``featurize_files``), then on a Dask ``LocalCluster`` with 1 and 2 workers
(``deep_features.dask_features``), each run after a warm-up, in the same process; features compared bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from utils import data, features  # noqa: E402

TINY_DATA = REPO / "tests" / "data" / "cifar10-4class-small"
BLOCK = 4096  # images per cached featurize_images call: a kill loses at most one block
BUILD_THREADS = 1
PQ_TRAIN_MAX = 50_000  # IVF-PQ trains on at most this many vectors (faiss wants >= 39 per list)


def data_dir(arg: str | None) -> Path:
    for candidate in (arg, os.environ.get("DEEP_FEATURES_DATA"), REPO / "data" / "cifar10"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise SystemExit("no data folder: pass --data-dir DIR or set DEEP_FEATURES_DATA")


def load_photos(folder: Path) -> np.ndarray:
    """Every image file under ``folder`` as 32x32 RGB (the course images' size)."""
    return np.stack([data.load_image(p, size=32) for p in data.list_images(folder)])


def variant(image: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """Variant ``kind`` of a 32x32 photo: 0 itself, 1 its mirror, 2-3 a random crop (of 22-28 px) resized back,
    4 a mirrored crop."""
    if kind == 0:
        return image
    if kind == 1:
        return image[:, ::-1]
    side = int(rng.integers(22, 29))
    top, left = (int(v) for v in rng.integers(0, 32 - side + 1, size=2))
    crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    out = np.asarray(crop.resize((32, 32), Image.Resampling.BILINEAR))
    return out[:, ::-1] if kind == 4 else out


def collection(photos: np.ndarray, total: int, seed: int = 0) -> np.ndarray:
    """``total`` distinct (photo, variant) pairs in a seeded random order, as pixels (total, 32, 32, 3)."""
    pairs = len(photos) * 5
    if total > pairs:
        raise SystemExit(f"{len(photos)} photos give {pairs} variants, fewer than {total}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(pairs)[:total]
    return np.stack([variant(photos[c // 5], int(c % 5), rng) for c in chosen])


def featurize(images: np.ndarray, image_size: int, log) -> np.ndarray:
    """Features of ``images`` in cached blocks of :data:`BLOCK` (a rerun reads them back)."""
    out = np.empty((len(images), 1280), np.float32)
    start = time.perf_counter()
    for s in range(0, len(images), BLOCK):
        out[s:s + BLOCK] = features.featurize_images(images[s:s + BLOCK], image_size=image_size, progress=False)
        log(f"  featurized {min(s + BLOCK, len(images))}/{len(images)} ({time.perf_counter() - start:.0f} s)")
    return out


def _ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 3)


def measure_index(name: str, build, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                  latency_queries: int, settings: dict) -> tuple[object, dict]:
    """Build one index on ``base`` (normalized rows), then its recall@10 and one-thread latency."""
    import faiss

    # One thread for builds too: on a shared machine OpenMP threads that wait for each other spin (an IVF-PQ
    # training took 188 s of wall time for 9 s of CPU with 2 threads at load 30).
    faiss.omp_set_num_threads(BUILD_THREADS)
    start, start_cpu = time.perf_counter(), time.process_time()
    index = build()
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return index, {"kind": name, "images": len(base), "build_s": round(build_s, 2), "build_cpu_s": round(build_cpu, 2),
                   "bytes_per_vector": round(faiss.serialize_index(index).nbytes / len(base), 1),
                   **search_figures(index, queries, truth, latency_queries), **settings}


def search_figures(index, queries: np.ndarray, truth: np.ndarray, latency_queries: int) -> dict:
    """recall@10 against ``truth`` over all queries, and p50 / p95 of one query at a time on one thread."""
    import faiss

    faiss.omp_set_num_threads(1)
    _, found = index.search(queries, 10)
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    seconds, cpu = [], []
    for q in queries[:latency_queries]:
        start, start_cpu = time.perf_counter(), time.thread_time()
        index.search(q[None], 10)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    faiss.omp_set_num_threads(BUILD_THREADS)
    # Wall time is what a user waits for; on a shared machine it includes waiting for a core, the thread's
    # CPU time does not (one thread: the search runs in this thread).
    return {"recall_at_10": round(recall, 4), "query_p50_ms": _ms(seconds, 50), "query_p95_ms": _ms(seconds, 95),
            "query_cpu_p50_ms": _ms(cpu, 50), "query_cpu_p95_ms": _ms(cpu, 95)}


def index_section(feats: np.ndarray, sizes: list[int], n_queries: int, latency_queries: int, log) -> list[dict]:
    import faiss

    from deep_features import index as search_index

    rows = []
    queries = search_index.normalized(feats[-n_queries:])
    for n in sizes:
        base = search_index.normalized(feats[:n])
        exact = search_index.new_faiss_index("exact", base.shape[1])
        exact.add(base)
        _, truth = exact.search(queries, 10)
        log(f"{n} images, {len(queries)} queries")

        def flat():
            index = search_index.new_faiss_index("exact", base.shape[1])
            index.add(base)
            return index

        def hnsw():
            index = search_index.new_faiss_index("hnsw", base.shape[1])
            index.add(base)
            return index

        nlist = max(4, int(4 * np.sqrt(n)))  # faiss's rule of thumb: 4-16 sqrt(n) lists

        def ivfpq():
            quantizer = faiss.IndexFlatIP(base.shape[1])
            index = faiss.IndexIVFPQ(quantizer, base.shape[1], nlist, 64, 8, faiss.METRIC_INNER_PRODUCT)
            index.train(base[np.random.default_rng(0).permutation(len(base))[:PQ_TRAIN_MAX]])
            index.add(base)
            return index

        for name, build, settings in (
                ("exact", flat, {}),
                ("hnsw", hnsw, {"M": search_index.HNSW_M, "ef_construction": search_index.HNSW_EF_CONSTRUCTION,
                                "ef_search": search_index.HNSW_EF_SEARCH}),
                ("ivfpq", ivfpq, {"nlist": nlist, "pq_bytes": 64, "nprobe": 32})):
            if name == "ivfpq" and n < 256 * 4:
                settings["note"] = "too few vectors to train 256 PQ centroids well"
            index, row = measure_index(name, build, base, queries, truth, latency_queries, settings)
            if name == "ivfpq":
                index.nprobe = 32
                row.update(search_figures(index, queries, truth, latency_queries))
            rows.append(row)
            log("  " + json.dumps(row))
            # The knob that trades recall for query time, at the same build.
            knob, values = {"hnsw": ("ef_search", (16, 32, 128, 256)), "ivfpq": ("nprobe", (8, 128))}.get(
                name, (None, ()))
            for v in values:
                if knob == "ef_search":
                    index.hnsw.efSearch = v
                else:
                    index.nprobe = v
                extra = {**row, knob: v, **search_figures(index, queries, truth, latency_queries), "variant": True}
                rows.append(extra)
                log("    " + json.dumps({k: extra[k] for k in (knob, "recall_at_10", "query_p50_ms",
                                                                "query_p95_ms", "query_cpu_p50_ms")}))
            del index
    return rows


def featurize_section(files: list[Path], image_size: int, rounds: int, log) -> list[dict]:
    """Single process vs Dask LocalCluster of 1 and 2 workers on the same files, cache off, interleaved rounds."""
    from deep_features.dask_features import close_client, featurize_files_on_dask, open_client

    reference = features.featurize_files(files, image_size=image_size, use_cache=False, progress=False)  # warm-up
    clients = {}
    for workers in (1, 2):
        start = time.perf_counter()
        clients[workers] = open_client(workers=workers)
        featurize_files_on_dask(files[:8], image_size=image_size, client=clients[workers], use_cache=False,
                                chunk_files=4, progress=False)  # every worker loads the model
        log(f"  LocalCluster({workers} workers) started and warmed up in {time.perf_counter() - start:.1f} s")
    runs: dict[str, list[float]] = {"single process": [], "dask --workers 1": [], "dask --workers 2": []}
    identical = {name: True for name in runs}
    try:
        for r in range(rounds):
            for name in runs:
                start = time.perf_counter()
                if name == "single process":
                    result = features.featurize_files(files, image_size=image_size, use_cache=False, progress=False)
                else:
                    result = featurize_files_on_dask(files, image_size=image_size, client=clients[int(name[-1])],
                                                     use_cache=False, progress=False)
                runs[name].append(time.perf_counter() - start)
                identical[name] &= bool(np.array_equal(result.features, reference.features)
                                        and result.paths == reference.paths)
                log(f"  round {r + 1} {name}: {len(files) / runs[name][-1]:.1f} images/s")
    finally:
        for client in clients.values():
            close_client(client)
    single = len(files) / min(runs["single process"])
    out = []
    for name, seconds in runs.items():
        best = len(files) / min(seconds)
        out.append({"path": name, "files": len(files), "image_size": image_size,
                    "images_per_s_best": round(best, 1),
                    "images_per_s_median": round(len(files) / float(np.median(seconds)), 1),
                    "x_single_best": round(best / single, 3), "identical": identical[name],
                    "seconds": [round(s, 2) for s in seconds]})
    return out


def reindex_section(files: list[Path], image_size: int, log) -> dict:
    """First indexing of a folder (empty feature cache), then the same folder with 1 % more files."""
    from deep_features.index import build_index

    # the course's cache folder, as utils finds it
    old_cache = Path(os.environ.get("DEEP_FEATURES_CACHE") or Path.home() / ".cache" / "deep-features")
    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        for sub in ("weights", "tflite"):  # the converted model, not the features
            if (old_cache / sub).is_dir():
                import shutil

                shutil.copytree(old_cache / sub, cache / sub)
        os.environ["DEEP_FEATURES_CACHE"] = str(cache)
        try:
            folder = tmp / "photos"
            folder.mkdir()
            extra = max(1, len(files) // 101)
            for i, f in enumerate(files[: len(files) - extra]):
                (folder / f"{i:06d}{f.suffix}").symlink_to(f.resolve())
            start, start_cpu = time.perf_counter(), time.process_time()
            first = build_index(folder, tmp / "ix", image_size=image_size, progress=False)
            first_s, first_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            for i, f in enumerate(files[len(files) - extra:], start=len(files) - extra):
                (folder / f"{i:06d}{f.suffix}").symlink_to(f.resolve())
            start, start_cpu = time.perf_counter(), time.process_time()
            second = build_index(folder, tmp / "ix", image_size=image_size, progress=False)
            second_s, second_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        finally:
            os.environ["DEEP_FEATURES_CACHE"] = str(old_cache)
    row = {"files_first": len(first.index), "files_added": second.added, "first_s": round(first_s, 2),
           "update_s": round(second_s, 2), "update_share": round(second_s / first_s, 4),
           "first_cpu_s": round(first_cpu, 2), "update_cpu_s": round(second_cpu, 2),
           "update_share_cpu": round(second_cpu / first_cpu, 4),
           "featurized_on_update": second.added, "rebuilt": second.rebuilt}
    log("  " + json.dumps(row))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--featurize-files", type=int, default=2048)
    parser.add_argument("--reindex-files", type=int, default=2020)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["index", "featurize", "reindex"])
    parser.add_argument("--tiny", action="store_true", help="seconds, on tests/data/cifar10-4class-small")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        folder = TINY_DATA
        args.sizes, args.queries, args.latency_queries = [400], 40, 40
        args.image_size, args.featurize_files, args.reindex_files, args.rounds = 64, 32, 40, 1
    else:
        folder = data_dir(args.data_dir)

    def log(message: str) -> None:
        print(message, flush=True)

    import faiss

    report = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                          "python": platform.python_version(), "faiss_threads_build_and_query": BUILD_THREADS,
                          "faiss": faiss.__version__, "platform": platform.platform()},
              "data": str(folder.name), "image_size": args.image_size, "sizes": args.sizes,
              "queries": args.queries}
    if "index" not in args.skip:
        start = time.perf_counter()
        photos = load_photos(folder)
        pixels = collection(photos, max(args.sizes) + args.queries)
        log(f"{len(photos)} photos -> {len(pixels)} photos and variants ({time.perf_counter() - start:.0f} s)")
        feats = featurize(pixels, args.image_size, log)
        del pixels
        report["index"] = index_section(feats, args.sizes, args.queries, args.latency_queries, log)
        del feats
    files = data.list_images(folder)
    if "featurize" not in args.skip:
        log(f"featurization of {args.featurize_files} files at {args.image_size} px")
        report["featurize"] = featurize_section(files[:args.featurize_files], args.image_size, args.rounds, log)
        for run in report["featurize"]:
            log("  " + json.dumps(run))
    if "reindex" not in args.skip:
        log(f"re-index: {args.reindex_files} files, 1 % of them new on the update")
        report["reindex"] = reindex_section(files[-args.reindex_files:], args.image_size, log)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
