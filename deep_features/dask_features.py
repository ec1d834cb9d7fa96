"""Featurize files on a Dask cluster: one task per chunk of :data:`CHUNK_FILES` files, through
:func:`utils.features.featurize_files` (same chunks, same cache, same features). Every worker needs
this package, the weights, a shared feature cache (``$DEEP_FEATURES_CACHE``) and the image files
under the client's paths. Faults end in one :class:`DaskClusterError` saying what to check, never
a hang.
"""

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

from utils.backbones import load_backbone
from utils.fast_inference import resolve_precision
from utils.features import FileFeatures, featurize_files

from . import DEFAULT_BACKBONE

CONNECT_TIMEOUT = 10.0  # s to reach a scheduler (distributed's default, 30 s, is long for a typo)
NO_WORKERS_TIMEOUT = 30.0  # s with no worker before giving up (a restarting worker needs a few)
WORKER_CHECK_INTERVAL = 1.0  # s between two counts of the workers while no chunk finishes
# featurize_files' own chunk size (tests/test_layout.py checks): both paths share the chunk cache
CHUNK_FILES = 256
NO_SUCH_FILE = "no such file"  # utils.data's reason for a missing file (tests/test_layout.py)


class DaskClusterError(RuntimeError):
    """The Dask cluster cannot do the work; the message says what to check."""


def featurize(paths: Sequence[str | Path], backbone: str = DEFAULT_BACKBONE,
              image_size: int | None = None, precision: str | None = None, *,
              workers: int | None = None, scheduler: str | None = None,
              progress: bool | None = None, report: bool = False) -> FileFeatures:
    """On Dask with ``workers`` or ``scheduler``, else in this process: the same features."""
    if workers or scheduler:
        result = featurize_files_on_dask(paths, backbone, image_size, precision, workers=workers,
                                         scheduler=scheduler, progress=progress)
    else:
        result = featurize_files(paths, backbone, image_size, progress=progress,
                                 precision=precision)
    if report:
        report_skipped(result.skipped)
    return result


def report_skipped(skipped: Sequence[tuple[Path, str]], file: TextIO | None = None) -> None:
    """Print every skipped file with its reason, then the count (on stderr by default)."""
    if not skipped:
        return
    out = file or sys.stderr
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=out)
    print(f"{len(skipped)} file(s) skipped", file=out, flush=True)


def _featurize_chunk(paths: list[str], backbone: str, image_size: int, precision: str,
                     use_cache: bool, chunk_files: int) -> FileFeatures:
    return featurize_files(paths, backbone, image_size, use_cache=use_cache, progress=False,
                           precision=precision, chunk_files=chunk_files)


def open_client(workers: int | None = None, scheduler: str | None = None,
                timeout: float = CONNECT_TIMEOUT):
    """A ``Client`` of ``scheduler``'s cluster, else of a ``LocalCluster`` of one-thread workers."""
    from dask.distributed import Client, LocalCluster
    if scheduler:
        try:
            return Client(scheduler, timeout=timeout)
        except Exception as exc:  # OSError (refused, timed out), ValueError (a bad address), ...
            reason = (str(exc).splitlines() or [""])[0]
            detail = "" if reason.startswith("Timed out") else f" ({type(exc).__name__}: {reason})"
            raise DaskClusterError(f"could not reach the Dask scheduler at {scheduler} within "
                                   f"{timeout:g} s: is `dask scheduler` running there?{detail}"
                                   ) from exc
    # No dashboard; the scheduler's HTTP endpoints on a free port (8787 may be another cluster's).
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                           silence_logs=logging.ERROR)
    return Client(cluster)


def close_client(client) -> None:
    """Close ``client`` and its ``LocalCluster``, if any, without their shutdown log lines."""
    from distributed.utils import silence_logging_cmgr
    cluster = client.cluster
    with silence_logging_cmgr(logging.ERROR):
        client.close()
        if cluster is not None:
            cluster.close()


def featurize_files_on_dask(paths: Sequence[str | Path], backbone: str = DEFAULT_BACKBONE,
                            image_size: int | None = None, precision: str | None = None, *,
                            client=None, workers: int | None = None, scheduler: str | None = None,
                            use_cache: bool = True, progress: bool | None = None,
                            chunk_files: int = CHUNK_FILES,
                            no_workers_timeout: float = NO_WORKERS_TIMEOUT) -> FileFeatures:
    """:func:`~utils.features.featurize_files` with its chunks run as Dask tasks on ``client``
    (else one :func:`open_client` opens and closes): the same result."""
    from tqdm import tqdm
    paths = [Path(p) for p in paths]
    spec = load_backbone(backbone).spec
    size = int(image_size or spec.input_size)
    precision = resolve_precision(precision)
    sent = [str(p.absolute()) for p in paths]  # relative: a worker would resolve it in its folder
    own_client = client is None
    client = client or open_client(workers, scheduler)
    try:
        starts = list(range(0, len(paths), chunk_files))
        futures = {client.submit(_featurize_chunk, sent[s:s + chunk_files], spec.name, size,
                                 precision, use_cache, chunk_files, pure=False): i
                   for i, s in enumerate(starts)}
        show = progress if progress is not None else len(starts) >= 4
        with tqdm(total=len(starts), desc=f"{spec.name} {size}px on Dask", unit="chunk",
                  disable=not show, file=sys.stderr) as bar:
            try:
                parts = _gather(client, futures, bar, no_workers_timeout)
            except BaseException:
                with contextlib.suppress(Exception):  # the scheduler may be gone: nothing to cancel
                    client.cancel(list(futures))
                raise
    finally:
        if own_client:
            close_client(client)
    caller = dict(zip(sent, paths))  # back to the caller's spelling of each path
    kept = [caller[str(p)] for part in parts for p in part.paths]
    skipped = [(caller[str(p)], r) for part in parts for p, r in part.skipped]
    if paths and not kept and all(r == NO_SUCH_FILE for _, r in skipped):
        here = [p for p in paths[:20] if p.exists()]
        if here:
            raise DaskClusterError(
                f"the Dask workers found none of the {len(paths)} files, which exist here (e.g. "
                f"{here[0].absolute()}): every worker needs the image files under the same paths "
                "as this client (a shared file system)")
    out = [np.empty((0, spec.feature_dim), np.float32), *(part.features for part in parts)]
    return FileFeatures(np.concatenate(out).astype(np.float32, copy=False), kept, skipped)


def _address(client) -> str:
    return str(getattr(client.scheduler, "address", None) or "the scheduler")


def _worker_count(client) -> int:
    try:
        return len(client.nthreads())
    except Exception as exc:  # OSError, TimeoutError, CommClosedError: the scheduler went away
        raise DaskClusterError(f"lost the Dask scheduler at {_address(client)} "
                               f"({type(exc).__name__}: {exc})") from exc


def _gather(client, futures: dict, bar, no_workers_timeout: float) -> list[FileFeatures]:
    """The futures' results in order; :class:`DaskClusterError` on a failure or no workers."""
    from dask.distributed import as_completed
    parts: list[FileFeatures] = [None] * len(futures)  # type: ignore[list-item]
    pending = as_completed(futures)
    no_workers_since: float | None = None
    next_check = time.monotonic()  # count the workers at once: there may be none from the start
    warned = seen = False
    while not pending.is_empty():
        batch = pending.next_batch(block=False)
        for future in batch:
            parts[futures[future]] = _result(future)
            future.release()
            bar.update(1)
        now = time.monotonic()
        if batch:
            no_workers_since = None
            continue
        if now >= next_check:
            next_check = now + WORKER_CHECK_INTERVAL
            if _worker_count(client):
                no_workers_since, seen = None, True
            else:
                if no_workers_since is None:
                    no_workers_since = now
                if not warned and no_workers_timeout >= 5:
                    print(f"\nno Dask worker on the cluster at {_address(client)}: waiting up to "
                          f"{no_workers_timeout:g} s for one", file=sys.stderr, flush=True)
                    warned = True
                if now - no_workers_since >= no_workers_timeout:
                    done = sum(part is not None for part in parts)
                    left = "left " if seen or done else ""
                    raise DaskClusterError(
                        f"no Dask worker {left}on the cluster at {_address(client)} for "
                        f"{no_workers_timeout:g} s ({done} of {len(parts)} chunks done): start "
                        f"workers with `dask worker {_address(client)}`, or see why they stopped "
                        "(their logs)")
        time.sleep(0.05)
    return parts


def _result(future) -> FileFeatures:
    if future.status == "error":
        exc = future.exception()
        reason = (str(exc).splitlines() or [""])[0]
        if type(exc).__name__ == "KilledWorker":
            raise DaskClusterError(f"every Dask worker that ran a chunk died ({reason}); out of "
                                   "memory? see the workers' logs") from exc
        raise DaskClusterError(f"a chunk failed on a Dask worker: {type(exc).__name__}: {reason} "
                               "(is this package installed there, at the client's version?)"
                               ) from exc
    if future.status == "cancelled":
        raise DaskClusterError("the Dask scheduler cancelled the tasks: was it stopped or "
                               "restarted?")
    return future.result()
