"""How long ``python -m instructor grade`` takes: N submissions of one lesson, graded at ``--small``.

Half the students hand in the lesson as shipped (its solutions answer every check), half the student copy
untouched; every notebook runs to the end. Prints wall-clock and CPU seconds per notebook (CPU: the workers and
their kernels, from ``getrusage(RUSAGE_CHILDREN)``) and the load average, which says how shared the machine was.

    python benchmarks/grading.py --students 30 --jobs 2 --data-dir tests/data/cifar10-4class-small --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from instructor import NOTEBOOK_DIR, grade, notebooks, run  # noqa: E402


def _shown(path: Path) -> str:
    """The data folder as recorded: relative to the repository when inside it (no machine path in results)."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else path.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lesson", default="05_per_class_distances")
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=grade.DEFAULT_TIMEOUT)
    parser.add_argument("--data-dir", type=Path, default=REPO / "tests" / "data" / "cifar10-4class-small")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    parser.add_argument("--tiny", action="store_true",
                        help="2 submissions of lesson 01, one at a time: proves the script works, in seconds")
    args = parser.parse_args()
    if args.tiny:
        args.lesson, args.students, args.jobs = "01_explore_data", 2, 1

    root = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        copies = {p.stem: p for p in notebooks.write_student_copies(root / "handed_out")}
        shipped = NOTEBOOK_DIR / f"{args.lesson}.ipynb"
        for index in range(args.students):
            folder = root / "submissions" / f"student{index:02d}"
            folder.mkdir(parents=True)
            shutil.copyfile(shipped if index % 2 == 0 else copies[args.lesson], folder / shipped.name)
        load_before = os.getloadavg()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        book = grade.grade(root / "submissions", root / "gradebook", dict(run.SMALL_PARAMETERS, data_dir=str(
            args.data_dir.resolve())), timeout=args.timeout, jobs=args.jobs, log=lambda line: None)
        seconds = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
        figures = {
            "lesson": args.lesson, "notebooks": args.students, "jobs": args.jobs, "timeout": args.timeout,
            "parameters": "small", "data_dir": _shown(args.data_dir),
            "seconds": round(seconds, 1), "seconds_per_notebook": round(seconds / args.students, 2),
            "cpu_seconds": round(cpu, 1), "cpu_seconds_per_notebook": round(cpu / args.students, 2),
            "statuses": book["status"].value_counts().to_dict(),
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "platform": platform.platform(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.students} notebooks of {args.lesson} at --small, --jobs {args.jobs}: {seconds:.0f} s "
          f"({figures['seconds_per_notebook']:.1f} s per notebook), {cpu:.0f} CPU s "
          f"({figures['cpu_seconds_per_notebook']:.1f} CPU s per notebook); statuses {figures['statuses']}; "
          f"load average {figures['load_average_before'][0]} before, {figures['load_average_after'][0]} after "
          f"on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
