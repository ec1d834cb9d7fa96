"""Run the course: every lesson notebook in order with papermill, then collect its metrics, then the report.

The lessons do not write the report's figures: to the copy it executes, the runner appends one cell (tagged
``collect-metrics``) that reads them from the notebook's variables as :mod:`instructor.metrics` declares them, and
writes ``build/metrics/<notebook>.json``; the runner adds the notebook's wall seconds.

Kernels talk to papermill over IPC (Unix sockets) rather than TCP, so ipykernel prints no "Kernel is running over
TCP without encryption" warning per notebook, and nothing listens on a network port.

The terminal shows only the runner's own lines. A kernel's own stdout and stderr -- ipykernel's log, e.g.
"KeyboardInterrupt caught in kernel" when jupyter_client interrupts it at shutdown, and a copy of what native code
writes in the cells -- go to ``build/logs/<notebook>.log``; what the cells print is in the executed notebook.
Each kernel also gets ``$DEEP_FEATURES_ANSWERS`` (``build/answers/<notebook>.jsonl``: the expected answer of every
exercise check that ran, written by :mod:`utils.checks`) and ``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import nbformat
from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum

from utils.runtime import atomic_write

from . import COURSE_TITLE, NOTEBOOK_DIR, REPO
from .lessons import LessonNotebook, discover_lessons, read_lesson
from .metrics import collect_cell_source, notebook_contract, to_jsonable
from .report import CLASSIC_RESULTS, report_gaps, write_results

#: Where ``utils.checks`` appends each check's expected answer, set for every notebook run (its name in
#: ``utils.runtime``: ``tests/test_layout.py`` checks that the two agree).
ANSWERS_ENV_VAR: Final = "DEEP_FEATURES_ANSWERS"

#: ``--small``: a quick run for smoke tests and slow machines (also what the tests and the fixture data use).
SMALL_PARAMETERS: Final[Mapping[str, Any]] = {
    "n_train_per_class": 24,
    "n_test_per_class": 12,
    "image_size": 96,
    "repeats": 2,  # few-shot draws per shot count
    "synthetic_sizes": [2_000, 20_000],  # the search lesson's growing random collection
}

#: Versions recorded in results.json (distribution names).
VERSION_PACKAGES: Final = ("tensorflow", "keras", "numpy", "scikit-learn", "papermill", "jupyter-book", "matplotlib")

#: The tag of the cell the runner appends to collect a lesson's metrics (hidden on the site).
COLLECT_TAG: Final = "collect-metrics"
#: Parameters not echoed in the metrics (where the data and the output are, not what was run).
UNECHOED_PARAMETERS: Final = frozenset({"data_dir"})

Log = Callable[[str], Any]
#: notebook stem -> (lesson title, {metric: source expression}) or None (:func:`instructor.metrics.notebook_contract`)
Contract = Callable[[str], "tuple[str, Mapping[str, str]] | None"]


class CourseRunError(RuntimeError):
    """A notebook failed while the course was running; the message names it."""


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels listen on Unix sockets (no TCP port, no plain-text warning); with
    ``kernel_log`` set, the kernel process's stdout and stderr are appended to that file, not the terminal."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
    kernel_log: Path | None = None

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if self.kernel_log is None:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        with open(self.kernel_log, "ab") as log:  # the kernel keeps its own copy of the descriptor
            return await super()._async_launch_kernel(kernel_cmd, **{**kw, "stdout": log, "stderr": log})


def _kernel_manager_logging_to(path: Path) -> type[IPCKernelManager]:
    class LoggingKernelManager(IPCKernelManager):
        kernel_log = path

    return LoggingKernelManager


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _as_lessons(notebooks: str | os.PathLike[str] | Iterable[Any] | None) -> list[LessonNotebook]:
    if notebooks is None or isinstance(notebooks, (str, os.PathLike)):
        return discover_lessons(notebooks or NOTEBOOK_DIR)
    lessons = [nb if isinstance(nb, LessonNotebook) else read_lesson(nb) for nb in notebooks]
    return sorted(lessons, key=lambda lesson: (lesson.number, lesson.path.name))


@contextlib.contextmanager
def _kernel_environment(answers: Path) -> Iterator[None]:
    """``import utils`` works in the kernels without an installed package; figures are inline PNGs even where
    ``MPLBACKEND`` is set (Agg in CI); exercise checks record their expected answers in ``answers``; TensorFlow's
    C++ INFO and WARNING lines are off even in a notebook that imports it before ``utils``."""
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "MPLBACKEND", ANSWERS_ENV_VAR, "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ[ANSWERS_ENV_VAR] = str(answers)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _kernel_of(path: Path, requested: str | None) -> str:
    spec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
    return requested or spec.get("name") or "python3"


def run_course(build_dir: str | os.PathLike[str], parameters: Mapping[str, Any] | None = None,
               notebooks: str | os.PathLike[str] | Iterable[Any] | None = None,
               kernel_name: str | None = None, log: Log = print,
               contract: Contract = notebook_contract) -> dict:
    """Execute the lesson notebooks in order into ``build_dir/notebooks/`` and collect their metrics.

    ``notebooks`` is a folder, a list of notebook paths / lessons, or ``None`` for the course's ``notebooks/``.
    Each notebook runs in its own folder with those of ``parameters`` its parameters cell declares; a cell the
    runner appends writes its metrics into ``build_dir/metrics/``. Returns the results also written to ``results.json`` / ``.md``.
    Raises :class:`CourseRunError` naming the first notebook that fails (its partly executed copy is kept and the
    results so far are still written).
    """
    import papermill  # slow import: only when running

    build = Path(build_dir).resolve()
    parameters = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in (parameters or {}).items()}
    lessons = _as_lessons(notebooks)
    if not lessons:
        raise CourseRunError(f"no NN_name.ipynb notebooks found in {notebooks or NOTEBOOK_DIR}")
    for folder in ("notebooks", "metrics", "answers", "logs"):
        (build / folder).mkdir(parents=True, exist_ok=True)

    started = dt.datetime.now(dt.timezone.utc)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    unused = set(parameters)
    failure: CourseRunError | None = None
    log(f"Running {len(lessons)} notebooks into {build} with {parameters or 'default parameters'}")
    for index, lesson in enumerate(lessons, 1):
        output = build / "notebooks" / lesson.path.name
        metrics_file = build / "metrics" / f"{lesson.stem}.json"
        answers, kernel_log = build / "answers" / f"{lesson.stem}.jsonl", build / "logs" / f"{lesson.stem}.log"
        for stale in (metrics_file, answers, kernel_log):  # never report a previous run's figures
            stale.unlink(missing_ok=True)
        declared = papermill.inspect_notebook(str(lesson.path))
        injected = {k: v for k, v in parameters.items() if k in declared}
        unused -= set(injected)
        source = _with_collect_cell(lesson, metrics_file, set(declared) - UNECHOED_PARAMETERS, contract)
        log(f"[{index}/{len(lessons)}] {lesson.path.name} ...")
        tick = time.perf_counter()
        try:
            with _kernel_environment(answers):
                papermill.execute_notebook(
                    source, str(output), parameters=injected,
                    kernel_name=_kernel_of(lesson.path, kernel_name), cwd=str(lesson.path.parent),
                    progress_bar=False, kernel_manager_class=_kernel_manager_logging_to(kernel_log))
        except Exception as exc:  # papermill's execution error, a dead kernel, ...
            seconds[lesson.stem] = round(time.perf_counter() - tick, 2)
            reason = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
            failure = CourseRunError(f"notebook {lesson.path.name} failed after {seconds[lesson.stem]:.1f} s "
                                     f"({reason}); the partially executed notebook is at {output}, the kernel's log at "
                                     f"{kernel_log}")
            failure.__cause__ = exc
            log(f"  FAILED: {failure}")
            break
        seconds[lesson.stem] = round(time.perf_counter() - tick, 2)
        _add_seconds(metrics_file, seconds[lesson.stem])
        log(f"  done in {seconds[lesson.stem]:.1f} s")
    if unused:
        log(f"  warning: no notebook declares parameter(s): {', '.join(sorted(unused))}")

    total = round(time.perf_counter() - start, 2)
    results = collect_results(build, lessons, parameters, seconds, total, started, failure)
    write_results(build, results)
    if failure is not None:
        raise failure
    gaps = report_gaps(results)
    if gaps:
        log(f"  warning: the report found no figure for {', '.join(gaps)}")
    log(f"Course ran in {total:.1f} s; results in {build / 'results.md'}")
    return results


def _with_collect_cell(lesson: LessonNotebook, metrics_file: Path, parameters: Iterable[str],
                       contract: Contract) -> nbformat.NotebookNode:
    """The notebook to execute: the lesson with, at its end, the cell that writes its declared metrics."""
    nb = nbformat.read(lesson.path, as_version=4)
    found = contract(lesson.stem)
    if found is None:
        return nb  # no lesson of instructor/metrics.py (a scratch notebook): nothing to collect
    title, sources = found
    cell = nbformat.v4.new_code_cell(collect_cell_source(metrics_file, title, sources, parameters))
    cell.metadata["tags"] = [COLLECT_TAG]
    if nb.nbformat_minor < 5:
        cell.pop("id", None)  # nbformat 4.4 notebooks carry no cell ids
    nb.cells.append(cell)
    return nb


def _add_seconds(metrics_file: Path, seconds: float) -> None:
    """Record the notebook's wall seconds (kernel start included) in the metrics it wrote."""
    try:
        metrics = json.loads(metrics_file.read_text("utf-8"))
    except (OSError, ValueError):
        return  # wrote none: collect_results records None
    metrics["seconds"] = seconds
    atomic_write(metrics_file, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")


def collect_results(build: Path, lessons: list[LessonNotebook], parameters: Mapping[str, Any],
                    seconds: Mapping[str, float], total_seconds: float, started: dt.datetime,
                    failure: BaseException | None = None) -> dict:
    """Every notebook's metrics file (``None`` when it wrote none) with the run's information."""
    metrics: dict[str, Any] = {}
    for lesson in lessons:
        try:
            metrics[lesson.stem] = json.loads((build / "metrics" / f"{lesson.stem}.json").read_text("utf-8"))
        except (OSError, ValueError):
            metrics[lesson.stem] = None  # not run, failed, or wrote nothing
    return to_jsonable({
        "course": COURSE_TITLE,
        "run": {
            "date": started.isoformat(timespec="seconds"),
            "status": "failed" if failure else "ok",
            "error": str(failure) if failure else None,
            "parameters": dict(parameters),
            "notebook_seconds": dict(seconds),
            "total_seconds": total_seconds,
            "versions": _versions(),
            "platform": platform.platform(),
        },
        "lessons": [{"number": l.number, "name": l.stem, "title": l.title, "objectives": list(l.objectives)}
                    for l in lessons],
        "classic": dict(CLASSIC_RESULTS),
        "metrics": metrics,
    })
