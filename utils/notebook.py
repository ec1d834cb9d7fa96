"""The one setup call at the top of every notebook, and the metrics it writes at the end."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Lesson:
    """A running lesson: its parameters, its start time and the metrics it collects."""

    name: str
    parameters: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    metrics: dict[str, Any] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds since :func:`setup`."""
        return time.perf_counter() - self.started

    def finish(self, metrics_path: str | Path | None = None, **metrics: Any) -> dict[str, Any]:
        """Record final metrics (plus parameters and run time); write them as JSON when ``metrics_path`` is set."""
        from .course import save_metrics

        self.metrics.update(metrics)
        self.metrics.update({k: v for k, v in self.parameters.items() if k not in {"metrics_path", "data_dir"}})
        self.metrics["seconds"] = round(self.elapsed(), 2)
        return save_metrics(metrics_path, self.metrics)


def setup(name: str, seed: int = 0, **parameters: Any) -> Lesson:
    """Seed numpy and TensorFlow, set readable figure defaults, print the versions used; returns the :class:`Lesson`."""
    import matplotlib

    import matplotlib.pyplot as plt

    np.random.seed(seed)
    np.set_printoptions(precision=3, suppress=True)
    plt.rcParams.update({"figure.dpi": 90, "axes.titlesize": 11, "figure.max_open_warning": 50})
    versions = f"python {platform.python_version()}, numpy {np.__version__}, matplotlib {matplotlib.__version__}"
    print(f"{name}: seed {seed}; {versions}")
    return Lesson(name, {"seed": seed, **parameters})
