"""The one setup call at the top of every lesson."""

import platform
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _LessonRun:
    name: str
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds since :func:`setup`."""
        return time.perf_counter() - self.started


def setup(name: str, seed: int = 0, *, blas_threads: int | None = None) -> _LessonRun:
    """Seed numpy, set figure defaults, print the versions used (every lesson); ``blas_threads``
    limits the BLAS/OpenMP threads for the session (lesson 6: many small fits)."""
    import warnings

    import matplotlib
    import matplotlib.pyplot as plt
    # one or two images per class: NearestCentroid warns of a spread it uses only to shrink
    warnings.filterwarnings("ignore", module="sklearn.neighbors._nearest_centroid")
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits
        threadpool_limits(blas_threads)  # kept for the session: the limits hold until restored
    np.random.seed(seed)
    np.set_printoptions(precision=3, suppress=True)
    plt.rcParams.update({"figure.dpi": 90, "axes.titlesize": 11, "figure.max_open_warning": 50})
    print(f"{name}: seed {seed}; python {platform.python_version()}, numpy {np.__version__}, "
          f"matplotlib {matplotlib.__version__}")
    return _LessonRun(name)
