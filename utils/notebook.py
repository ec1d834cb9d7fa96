"""The one setup call at the top of every notebook, and the metrics it writes at the end."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .lesson_metrics import check_written, declared, lesson_title
from .runtime import atomic_write


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and sets to plain JSON values.

    Non-finite floats become ``None`` so the file stays strict JSON.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item") and callable(value.item):
        return to_jsonable(value.item())
    return str(value)


def save_metrics(path: str | os.PathLike[str] | None, metrics: Mapping[str, Any]) -> dict:
    """Write a notebook's metrics as JSON (atomically) and return the JSON-safe dict.

    Does nothing but clean the dict when ``path`` is empty or ``None``, so a notebook can
    always call ``save_metrics(metrics_path, {...})``.
    """
    clean = to_jsonable(dict(metrics))
    if path:
        text = json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        atomic_write(path, text)
    return clean


@dataclass
class LessonRun:
    """A lesson being run: its name, parameters and start time, and the metrics it collects."""

    name: str
    parameters: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    metrics: dict[str, Any] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds since :func:`setup`."""
        return time.perf_counter() - self.started

    def finish(self, metrics_path: str | Path | None = None, **metrics: Any) -> dict[str, Any]:
        """Record the lesson's metrics (plus its title, parameters and run time); write them as JSON when
        ``metrics_path`` is set.

        The keys must be exactly those the lesson declares in :mod:`utils.lesson_metrics`: otherwise the file is
        still written (nothing is lost) and :class:`~utils.lesson_metrics.MetricsContractError` names the
        difference.
        """
        self.metrics.update(metrics)
        self.metrics.update({k: v for k, v in self.parameters.items() if k not in {"metrics_path", "data_dir"}})
        self.metrics["seconds"] = round(self.elapsed(), 2)
        self.metrics["lesson"] = lesson_title(self.name)
        saved = save_metrics(metrics_path, self.metrics)
        check_written(self.name, metrics)
        return saved


def setup(name: str, seed: int = 0, *, blas_threads: int | None = None, **parameters: Any) -> LessonRun:
    """Seed numpy's global generator, set readable figure defaults, print the versions used.

    ``name`` is the lesson's number and title (``"02 Raw-pixel classifier"``); the title names the lesson's
    declared metrics (:mod:`utils.lesson_metrics`). Returns the :class:`LessonRun` whose ``finish`` writes them.
    ``blas_threads`` limits the BLAS/OpenMP thread pools for the rest of the session (threadpoolctl), e.g. 1 for a
    lesson of many small fits, each faster on one thread: machine tuning, not a lesson's idea.

    Library noise no lesson reads is silenced here: scikit-learn's ``NearestCentroid`` warns about the per-class
    spread of its training images (undefined or zero with one or two images per class), which it uses only with
    ``shrink_threshold``.
    """
    import warnings

    import matplotlib

    import matplotlib.pyplot as plt

    declared(name)  # an undeclared lesson fails here, not after its run
    warnings.filterwarnings("ignore", module="sklearn.neighbors._nearest_centroid")
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(blas_threads)  # kept for the session: the limits hold until restored
    np.random.seed(seed)
    np.set_printoptions(precision=3, suppress=True)
    plt.rcParams.update({"figure.dpi": 90, "axes.titlesize": 11, "figure.max_open_warning": 50})
    versions = f"python {platform.python_version()}, numpy {np.__version__}, matplotlib {matplotlib.__version__}"
    print(f"{name}: seed {seed}; {versions}")
    return LessonRun(name, {"seed": seed, **parameters})
