"""Grade the students' notebooks: ``python -m instructor grade SUBMISSIONS --out GRADEBOOK_DIR``.

``SUBMISSIONS`` holds one folder per student, named after the student, with the lesson notebooks they hand in,
named as the lessons are (``alice/05_per_class_distances.ipynb``). Each submitted notebook is executed by papermill
in a fresh kernel, on a copy in its own temporary folder, with the instructor's parameters (``--small``: the
course's small size). :func:`utils.checks.check` appends every result to the file named by
``$DEEP_FEATURES_CHECK_RESULTS``; the last result of an exercise counts. A lesson's exercises are those the
checks registry holds for its number, so nothing here repeats what an exercise expects.

Each notebook runs in a worker process (``python -m instructor.grade execute JOB``), whose kernel starts through
:mod:`instructor.kernel_limits` (a kernelspec written in the job's folder): an address-space limit and an alarm
at the timeout. papermill's per-cell timeout and a deadline on the worker back the alarm up. A notebook that
raises, loops or runs out of memory keeps the results it recorded, gets a reason, and never stops the others.

Not a sandbox: the students' code runs as the instructor's user and can read or write whatever that user can
(the README says how to run the grader in a container).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from . import NOTEBOOK_DIR, REPO
from .lessons import LessonNotebook, discover_lessons

#: Where ``utils.checks`` appends each check's result, set for every graded notebook (its name in ``utils.runtime``:
#: ``tests/test_layout.py`` checks that the two agree).
CHECK_RESULTS_ENV_VAR: Final = "DEEP_FEATURES_CHECK_RESULTS"

STATUSES: Final = ("correct", "wrong", "not attempted", "error", "timeout", "missing")
COLUMNS: Final = ("student", "notebook", "exercise", "status", "detail")
KERNEL_NAME: Final = "deep-features-grade"
DEFAULT_TIMEOUT: Final = 600
DEFAULT_MEMORY_GB: Final = 8.0  # the kernel's address space: fine-tuning (lesson 8) peaked at 3.4 GB, small size
WORKER_GRACE_SECONDS: Final = 60  # the worker's deadline after the kernel's: starting and saving
_CHECK_CALL: Final = re.compile(r"""check\(\s*["']([^"']+)["']""")

Log = Callable[[str], Any]


class GradeError(ValueError):
    """The submissions or the options cannot be graded; the message says what to fix."""


@dataclass(frozen=True)
class Submission:
    """One student's notebook of one lesson (``path`` is never written)."""

    student: str
    lesson: LessonNotebook
    path: Path


@dataclass
class Run:
    """What executing one submission gave."""

    results: dict[str, dict[str, str]] = field(default_factory=dict)  # exercise -> its last check result
    failure: str | None = None  # None (ran to the end), "error" or "timeout"
    reason: str = ""
    unfinished: set[str] = field(default_factory=set)  # exercises checked in cells that did not finish
    seconds: float = 0.0
    cpu_seconds: float = 0.0


# --------------------------------------------------------------------------- finding the submissions


def _exercise_key(exercise_id: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in exercise_id.split("."))


def lesson_exercises(lesson: LessonNotebook) -> list[str]:
    """The exercise ids the checks registry holds for this lesson's number (``5.1``, ``5.2``, ...)."""
    from utils.checks import load_all

    return sorted((e for e in load_all() if e.split(".")[0] == str(lesson.number)), key=_exercise_key)


def find_submissions(submissions: Path, lessons: Iterable[LessonNotebook], log: Log = print
                     ) -> tuple[list[str], list[LessonNotebook], list[Submission], dict[str, list[str]]]:
    """The students (folder names), the lessons anyone submitted, the submissions, and per student the notebooks
    not named after a lesson (ignored, and named in the gradebook when that student's lesson is missing)."""
    if not submissions.is_dir():
        raise GradeError(f"{submissions} is not a folder: SUBMISSIONS holds one folder per student")
    by_name = {lesson.path.name: lesson for lesson in lessons}
    students = sorted(p.name for p in submissions.iterdir()
                      if p.is_dir() and not p.name.startswith((".", "__")))  # not .git, __MACOSX, ...
    if not students:
        raise GradeError(f"{submissions} holds no student folder (one folder per student, named after them, "
                         "with the lesson notebooks inside)")
    for stray in sorted(submissions.glob("*.ipynb")):
        log(f"  warning: {stray.name} is not in a student folder; ignored")
    found: list[Submission] = []
    unmatched: dict[str, list[str]] = {}
    for student in students:
        folder = submissions / student
        for path in sorted(folder.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            if path.parent == folder and path.name in by_name:
                found.append(Submission(student, by_name[path.name], path))
            else:  # misnamed, or in a subfolder: said in the log and in the gradebook's "missing" rows
                name = path.relative_to(folder).as_posix()
                unmatched.setdefault(student, []).append(name)
                log(f"  warning: {student}/{name} is not a lesson notebook in the student's folder; ignored")
    graded = sorted({s.lesson for s in found}, key=lambda lesson: (lesson.number, lesson.path.name))
    if not graded:
        names = ", ".join(sorted(by_name)) or "none found"
        raise GradeError(f"no notebook in {submissions}/*/ is named after a lesson (lessons: {names})")
    return students, graded, found, unmatched


# --------------------------------------------------------------------------- running one submission


def _kernel_spec(memory_bytes: int, timeout: int) -> dict[str, Any]:
    """A kernelspec whose kernel starts under :mod:`instructor.kernel_limits`."""
    return {
        "argv": [sys.executable, "-m", "instructor.kernel_limits", "--memory-bytes", str(memory_bytes),
                 "--seconds", str(timeout), "--", sys.executable, "-m", "ipykernel_launcher",
                 "-f", "{connection_file}", "--HistoryManager.hist_file=:memory:"],  # as nbclient does for python3
        "display_name": "Python 3 (grading, limited)",
        "language": "python",
    }


def _worker_environment(work: Path, results_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(work / "jupyter"), env.get("JUPYTER_PATH")) if p)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # inline figures even where Agg is set
    env[CHECK_RESULTS_ENV_VAR] = str(results_file)
    return env


def _read_results(path: Path) -> dict[str, dict[str, str]]:
    """The last recorded result of each exercise (lines a crash cut short are skipped)."""
    last: dict[str, dict[str, str]] = {}
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError:
        return last
    for line in lines:
        try:
            record = json.loads(line)
            last[str(record["exercise"])] = {"status": str(record["status"]), "answer": str(record["answer"])}
        except (ValueError, KeyError, TypeError):
            continue
    return last


def _unfinished(executed: Path, failed: bool) -> tuple[set[str], str]:
    """Exercises checked in cells that did not finish (never ran, or the one running when the notebook stopped),
    and where it stopped (``In [n]``)."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # no executed notebook: nothing ran
        return {"*"}, ""
    code = [c for c in nb.cells if c.cell_type == "code"]
    started = [c for c in code if c.metadata.get("papermill", {}).get("start_time")]
    cells = [c for c in code if c.metadata.get("papermill", {}).get("status") == "pending"]
    where = ""
    if failed and started:
        cells.append(started[-1])
        count = started[-1].get("execution_count")
        where = f"In [{count}]" if count else f"code cell {code.index(started[-1]) + 1}"
    return {m.group(1) for c in cells for m in _CHECK_CALL.finditer(c.source)}, where


class _Workers:
    """The worker processes running now, so that an interrupted grading stops them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen] = set()
        self._stopping = False

    def start(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._stopping:
                raise KeyboardInterrupt("grading was interrupted")
            process = subprocess.Popen(*args, **kwargs, start_new_session=True)
            self._live.add(process)
            return process

    def done(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._live.discard(process)

    def stop_all(self) -> None:
        with self._lock:
            self._stopping = True
            for process in self._live:
                _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the worker's process group (the worker shuts its kernel down), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_submission(submission: Submission, executed: Path, parameters: Mapping[str, Any], timeout: int,
                   memory_bytes: int, workers: _Workers | None = None) -> Run:
    """Execute a copy of the submission in its own temporary folder; the executed notebook goes to ``executed``."""
    import papermill

    workers = workers or _Workers()
    work = Path(tempfile.mkdtemp(prefix="deep-features-grade-"))
    try:
        notebook = work / submission.lesson.path.name
        shutil.copyfile(submission.path, notebook)  # the submission itself is only read
        spec = work / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
        spec.parent.mkdir(parents=True)
        spec.write_text(json.dumps(_kernel_spec(memory_bytes, timeout)), "utf-8")
        # The reference lesson says which parameters to inject: a student who deleted the parameters cell still
        # runs at the instructor's size (a submission writes no metrics: only the course runner collects them).
        declared = papermill.inspect_notebook(str(submission.lesson.path))
        injected = {k: v for k, v in parameters.items() if k in declared}
        executed.parent.mkdir(parents=True, exist_ok=True)
        executed.unlink(missing_ok=True)  # never show a previous grading's notebook
        job = {"input": str(notebook), "output": str(executed.resolve()), "parameters": injected,
               "timeout": timeout, "memory_bytes": memory_bytes, "outcome": str(work / "outcome.json")}
        (work / "job.json").write_text(json.dumps(job), "utf-8")
        results_file = work / "check_results.jsonl"
        with open(work / "worker.log", "wb") as worker_log:
            process = workers.start([sys.executable, "-m", "instructor.grade", "execute", str(work / "job.json")],
                                    cwd=work, env=_worker_environment(work, results_file),
                                    stdin=subprocess.DEVNULL, stdout=worker_log, stderr=subprocess.STDOUT)
            try:
                process.wait(timeout + WORKER_GRACE_SECONDS)
                killed = False
            except subprocess.TimeoutExpired:
                _stop(process)
                killed = True
            finally:
                workers.done(process)
        run = Run(results=_read_results(results_file))
        try:
            outcome = json.loads((work / "outcome.json").read_text("utf-8"))
            run.failure, run.reason = outcome["failure"], outcome["reason"]
            run.seconds, run.cpu_seconds = outcome["seconds"], outcome["cpu_seconds"]
        except (OSError, ValueError, KeyError):  # the worker itself died or was stopped
            tail = (work / "worker.log").read_text("utf-8", errors="replace").strip().splitlines()[-1:]
            run.failure = "timeout" if killed else "error"
            run.reason = (f"stopped after {timeout + WORKER_GRACE_SECONDS} s" if killed
                          else f"the grading worker failed: {tail[0] if tail else f'exit code {process.returncode}'}")
        if run.failure:
            run.unfinished, where = _unfinished(executed, failed=True)
            if where:
                run.reason += f" ({where})"
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- the worker


def _execute(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one notebook with papermill (in the worker process) and say how it ended."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from .run import IPCKernelManager

    timeout, start = int(job["timeout"]), time.perf_counter()
    failure, reason = None, ""
    try:
        papermill.execute_notebook(job["input"], job["output"], parameters=job["parameters"],
                                   kernel_name=KERNEL_NAME, cwd=str(Path(job["input"]).parent),
                                   progress_bar=False, execution_timeout=timeout,
                                   kernel_manager_class=IPCKernelManager)
    except PapermillExecutionError as exc:  # a cell raised (MemoryError included)
        failure, reason = "error", f"{exc.ename}: {exc.evalue}".strip()
    except (CellTimeoutError, DeadKernelError) as exc:
        if isinstance(exc, CellTimeoutError) or time.perf_counter() - start >= timeout - 1:
            failure, reason = "timeout", f"stopped after {timeout} s"
        else:
            memory = int(job["memory_bytes"]) / 2**30
            failure = "error"
            reason = "the kernel died" + (f" (out of memory? its limit is {memory:g} GB)" if memory else "")
    except Exception as exc:  # an unreadable notebook, a kernel that would not start, ...
        failure, reason = "error", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return {"failure": failure, "reason": reason, "seconds": round(time.perf_counter() - start, 2),
            "cpu_seconds": round(sum(u.ru_utime + u.ru_stime for u in usage), 2)}


def _worker_main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "execute":
        print("usage: python -m instructor.grade execute JOB.json (started by python -m instructor grade)",
              file=sys.stderr)
        return 2

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # papermill then shuts the kernel down

    signal.signal(signal.SIGTERM, interrupted)
    job = json.loads(Path(argv[1]).read_text("utf-8"))
    outcome = _execute(job)
    Path(job["outcome"]).write_text(json.dumps(outcome), "utf-8")
    return 0


# --------------------------------------------------------------------------- the gradebook


def _rows(submission: Submission | None, student: str, lesson: LessonNotebook, run: Run | None,
          unmatched: list[str]) -> list[dict[str, str]]:
    """One gradebook row per exercise of the lesson for this student."""
    rows = []
    for exercise in lesson_exercises(lesson):
        if submission is None or run is None:
            found = f" (found: {', '.join(unmatched)})" if unmatched else ""
            status, detail = "missing", f"{student}/ has no {lesson.path.name}{found}"
        elif run.failure and (exercise in run.unfinished or "*" in run.unfinished or exercise not in run.results):
            status, detail = run.failure, run.reason
        elif exercise in run.results:
            result = run.results[exercise]
            status = result["status"]
            detail = ("answer left as ..." if result["answer"] in ("Ellipsis", "None")
                      else f"answer {result['answer']}")
        else:
            status, detail = "not attempted", "no check of this exercise ran"
        rows.append({"student": student, "notebook": lesson.stem, "exercise": exercise, "status": status,
                     "detail": detail})
    return rows


def _summary_cell(statuses: Any) -> str:
    """``2/3 (1 wrong)``: correct out of the exercises, then the other statuses."""
    if (statuses == "missing").all():
        return "missing"
    counts = statuses.value_counts()
    others = [f"{counts[s]} {s}" for s in STATUSES[1:] if counts.get(s, 0)]
    return f"{counts.get('correct', 0)}/{len(statuses)}" + (f" ({', '.join(others)})" if others else "")


def summary_table(gradebook: Any) -> Any:
    """Per student: each lesson's ``correct/exercises (other statuses)`` and the total correct."""
    import pandas as pd

    table = gradebook.pivot_table(index="student", columns="notebook", values="status", aggfunc=_summary_cell,
                                  sort=False)
    correct = gradebook.assign(ok=gradebook["status"].eq("correct")).groupby("student", sort=False)["ok"]
    table["total correct"] = [f"{int(c.sum())}/{len(c)}" for _, c in correct]
    return table.reindex(pd.unique(gradebook["student"]))


def gradebook_markdown(gradebook: Any, runs: Any, heading: str) -> str:
    """gradebook.md: the per-student summary, the class's results per exercise, and the runs."""
    import pandas as pd

    per_exercise = pd.crosstab([gradebook["notebook"], gradebook["exercise"]], gradebook["status"])
    per_exercise = per_exercise.reindex(columns=[s for s in STATUSES if s in per_exercise.columns])
    parts = [f"# Gradebook\n\n{heading}\n", "## Per student\n", summary_table(gradebook).to_markdown(), "",
             "## Per exercise (number of students)\n", per_exercise.reset_index().to_markdown(index=False), ""]
    if len(runs):
        parts += ["## Runs\n", runs.to_markdown(index=False), ""]
    parts.append("Every exercise of every student, with its detail: `gradebook.csv`; the executed notebooks: "
                 "`notebooks/<student>/`.\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- grading


def grade(submissions: str | os.PathLike[str], out: str | os.PathLike[str],
          parameters: Mapping[str, Any] | None = None, notebooks: str | os.PathLike[str] = NOTEBOOK_DIR,
          timeout: int = DEFAULT_TIMEOUT, jobs: int = 1, memory_gb: float = DEFAULT_MEMORY_GB,
          log: Log = print) -> Any:
    """Grade every student's lesson notebooks; write ``out/gradebook.csv``, ``gradebook.md`` and the executed
    notebooks (``out/notebooks/<student>/``). Returns the gradebook (a pandas DataFrame, ``COLUMNS``)."""
    import pandas as pd

    from utils.runtime import atomic_write

    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    if timeout < 1 or jobs < 1 or memory_gb < 0:
        raise GradeError("--timeout and --jobs must be at least 1 and --memory-gb at least 0 (0: no limit)")
    if out == submissions or submissions in out.parents:
        raise GradeError(f"--out {out} is inside SUBMISSIONS {submissions}: write the gradebook elsewhere "
                         "(it would be taken for a student's folder)")
    if out in submissions.parents:
        raise GradeError(f"SUBMISSIONS {submissions} is inside --out {out}: grading would write among them")
    lessons = discover_lessons(notebooks)
    students, graded, found, unmatched = find_submissions(submissions, lessons, log)
    parameters = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in (parameters or {}).items()}
    memory_bytes = int(memory_gb * 2**30)
    log(f"Grading {len(found)} notebooks ({', '.join(l.stem for l in graded)}) of {len(students)} students "
        f"with {jobs} job(s), timeout {timeout} s, memory {memory_gb:g} GB, {parameters or 'default parameters'}")

    workers, runs = _Workers(), {}
    start, cpu_start = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(run_submission, s, out / "notebooks" / s.student / s.lesson.path.name,
                               parameters, timeout, memory_bytes, workers): s for s in found}
        for index, future in enumerate(concurrent.futures.as_completed(futures), 1):
            submission = futures[future]
            run = runs[submission] = future.result()
            statuses = pd.Series([r["status"] for r in _rows(submission, submission.student,
                                                             submission.lesson, run, [])])
            log(f"[{index}/{len(found)}] {submission.student}/{submission.lesson.path.name}: "
                f"{_summary_cell(statuses)} in {run.seconds:.1f} s"
                + (f"; {run.failure}: {run.reason}" if run.failure else ""))
    except BaseException:  # Ctrl-C: stop the running workers (and so their kernels) before waiting for them
        pool.shutdown(wait=False, cancel_futures=True)
        workers.stop_all()
        raise
    finally:
        pool.shutdown(wait=True)
    seconds = time.perf_counter() - start
    cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_end.ru_utime + cpu_end.ru_stime) - (cpu_start.ru_utime + cpu_start.ru_stime)

    by_key = {(s.student, s.lesson): s for s in found}
    rows = [row for student in students for lesson in graded
            for row in _rows(by_key.get((student, lesson)), student, lesson, runs.get(by_key.get((student, lesson))),
                             unmatched.get(student, []))]
    gradebook = pd.DataFrame(rows, columns=list(COLUMNS))
    run_table = pd.DataFrame([{"student": s.student, "notebook": s.lesson.stem,
                               "result": f"{r.failure}: {r.reason}" if r.failure else "ran to the end",
                               "seconds": r.seconds, "CPU seconds": r.cpu_seconds} for s, r in runs.items()])
    if len(run_table):
        run_table = run_table.sort_values(["student", "notebook"])
    per_notebook = f"{seconds / max(len(found), 1):.1f} s per notebook" if found else ""
    heading = (f"{len(students)} students, {len(graded)} lesson(s); {len(found)} notebooks executed in "
               f"{seconds:.0f} s with {jobs} job(s) ({per_notebook}; {cpu:.0f} CPU seconds); timeout {timeout} s, "
               f"memory limit {memory_gb:g} GB; parameters: {parameters or 'the notebooks’ defaults'}.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "gradebook.csv", gradebook.to_csv(index=False))
    atomic_write(out / "gradebook.md", gradebook_markdown(gradebook, run_table, heading))
    log(f"Graded {len(found)} notebooks in {seconds:.1f} s ({per_notebook}, {cpu:.0f} CPU seconds): "
        f"{out / 'gradebook.md'}")
    return gradebook


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
