"""What every benchmark script shares: the command-line options for the data and the tiny mode, the course data
found as the course finds it, round-robin timing, and the printed tables.

Benchmarks use only the public functions of ``utils``. ``--tiny`` runs a script in seconds on whatever data it is
given (the test suite passes the committed fixture images): it checks that the script still works, its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_log_stream = sys.stdout


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` (as the course: then ``$DEEP_FEATURES_DATA``, then ``data/cifar10/``) and ``--tiny``."""
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the course images (default: $DEEP_FEATURES_DATA, then data/cifar10/)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few images, one repeat, small sizes: checks the script runs (figures meaningless)")


def cache_root() -> Path:
    """The course's cache folder, as ``utils`` finds it: ``$DEEP_FEATURES_CACHE`` or ``~/.cache/deep-features``."""
    return Path(os.environ.get("DEEP_FEATURES_CACHE") or Path.home() / ".cache" / "deep-features")


def data_dir(args: argparse.Namespace) -> Path:
    """The folder of course images, found like the course finds it; a clear error when there is none."""
    candidates = (args.data_dir, os.environ.get("DEEP_FEATURES_DATA"),
                  Path(__file__).resolve().parents[1] / "data" / "cifar10")
    found = next((Path(c) for c in candidates if c and Path(c).is_dir() and any(Path(c).iterdir())),
                 None)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise SystemExit(f"--data-dir {args.data_dir} does not exist")
    if found is None:
        raise SystemExit("no course images found: pass --data-dir DIR or set $DEEP_FEATURES_DATA")
    return found.resolve()  # absolute: scale.py links to these files from another folder


def course_split(args: argparse.Namespace):
    """The course's training and test images (``utils.data.load_course_data``) from :func:`data_dir`; with
    ``--tiny``, 8 training and 4 test images per class."""
    from utils.data import load_course_data

    return load_course_data(data_dir(args), *((8, 4) if args.tiny else (None, None)))


def log_to_stderr() -> None:
    """Print the tables on stderr (stdout then carries one JSON document)."""
    global _log_stream
    _log_stream = sys.stderr


def log(text: str = "") -> None:
    print(text, file=_log_stream, flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    log(f"\n## {title}  (load average {load_average():.2f})")
    log("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    log("  ".join("-" * w for w in widths))
    for r in cells:
        log("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def interleaved_best(fns: dict[str, Callable[[np.ndarray], object]], images: np.ndarray, batch: dict[str, int] | int,
                     repeats: int) -> dict[str, float]:
    """Best images/s of each fn over ``repeats`` round-robin timed passes of ``images`` (after one warm-up pass),
    so background load hits every variant alike."""
    sizes = batch if isinstance(batch, dict) else {k: batch for k in fns}

    def one_pass(name: str) -> float:
        fn, bs = fns[name], sizes[name]
        start = time.perf_counter()
        for s in range(0, len(images), bs):
            fn(images[s : s + bs])
        return time.perf_counter() - start

    for name in fns:
        one_pass(name)  # warm-up: traces, allocations, thread pools
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name in fns:
            best[name] = min(best[name], one_pass(name))
    return {name: len(images) / t for name, t in best.items()}
