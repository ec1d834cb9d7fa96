"""The one setup call at the top of every lesson (all lessons)."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _LessonRun:
    """A lesson being run: its name and start time (for the summary's "ran in ... s")."""

    name: str
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds since :func:`setup`."""
        return time.perf_counter() - self.started


def setup(name: str, seed: int = 0, *, blas_threads: int | None = None) -> _LessonRun:
    """Seed numpy's global generator, set readable figure defaults, print the versions used
    (every lesson).

    ``name`` is the lesson's number and title (``"02 Raw-pixel classifier"``). ``blas_threads``
    limits the BLAS/OpenMP thread pools for the rest of the session (threadpoolctl), e.g. 1 for a
    lesson of many small fits, each faster on one thread: machine tuning, not a lesson's idea.

    Library noise no lesson reads is silenced here: scikit-learn's ``NearestCentroid`` warns about
    the per-class spread of its training images (undefined or zero with one or two images per
    class), which it uses only with ``shrink_threshold``.

    Used in every lesson.
    """
    import warnings

    import matplotlib

    import matplotlib.pyplot as plt

    warnings.filterwarnings("ignore", module="sklearn.neighbors._nearest_centroid")
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(blas_threads)  # kept for the session: the limits hold until restored
    np.random.seed(seed)
    np.set_printoptions(precision=3, suppress=True)
    plt.rcParams.update({"figure.dpi": 90, "axes.titlesize": 11, "figure.max_open_warning": 50})
    versions = (f"python {platform.python_version()}, numpy {np.__version__}, "
                f"matplotlib {matplotlib.__version__}")
    print(f"{name}: seed {seed}; {versions}")
    return _LessonRun(name)
