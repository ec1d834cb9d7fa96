"""``python -m instructor grade``: the students' notebooks executed, their checks recorded, the gradebook.

The end-to-end test grades lesson 05 (a cheap lesson) at the small size on the course images, for students who
hand in the notebook as shipped, the student copy untouched, a wrong answer, an infinite loop, a notebook that
raises half way, and nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell

from _course_fixtures import REPO, course_data_dir, make_notebook
from instructor import NOTEBOOK_DIR, grade, notebooks
from instructor.__main__ import main as instructor_main
from utils import checks, runtime

LESSON = "05_per_class_distances"
# Seconds per notebook: the infinite loop costs this much of the test, and a cold lesson 05 at the small size takes
# about 40 s on 2 free cores. A machine shared by other busy processes may need more (wall-clock seconds).
TIMEOUT = int(os.environ.get("DEEP_FEATURES_GRADE_TEST_TIMEOUT", "120"))


def _replace_answer(nb: nbformat.NotebookNode, exercise: str, answer: str) -> None:
    cell = next(c for c in nb.cells if f'checks.check("{exercise}"' in c.source and "answer = ..." in c.source)
    cell.source = cell.source.replace("answer = ...", f"answer = {answer}")


def _insert_before(nb: nbformat.NotebookNode, marker: str, source: str) -> None:
    index = next(i for i, c in enumerate(nb.cells) if marker in c.source)
    cell = new_code_cell(source)
    if nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
        del cell["id"]
    nb.cells.insert(index, cell)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def make_submissions(root: Path) -> Path:
    """One folder per student, from the shipped lesson and its student copy (no solution cells)."""
    student_copy = notebooks.write_student_copies(root / "handed_out")
    copy_of = {p.stem: p for p in student_copy}
    name = f"{LESSON}.ipynb"
    submissions = root / "submissions"

    def hand_in(student: str, nb: nbformat.NotebookNode, file_name: str = name) -> None:
        (submissions / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, submissions / student / file_name)

    hand_in("alice", nbformat.read(NOTEBOOK_DIR / name, as_version=4))  # as shipped: the solutions answer
    hand_in("bob", nbformat.read(copy_of[LESSON], as_version=4))  # the copy handed out, untouched
    wrong = nbformat.read(copy_of[LESSON], as_version=4)
    _replace_answer(wrong, "5.2", "-1.0")  # a distance is never negative
    hand_in("carol", wrong)
    looping = nbformat.read(copy_of[LESSON], as_version=4)
    # Sleeps in its loop so that it does not slow the other kernels on a 2-core machine.
    _insert_before(looping, "answer = ...", "import time\nwhile True:\n    time.sleep(0.2)")
    hand_in("dave", looping)
    (submissions / "erin").mkdir(parents=True)  # submits the lesson under another name: it is missing
    hand_in("erin", nbformat.read(copy_of[LESSON], as_version=4), f"{LESSON} (1).ipynb")
    raising = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    _insert_before(raising, 'answer = dog_distances["dog-cat"].mean()', 'raise RuntimeError("half way")')
    hand_in("frank", raising)
    return submissions


@pytest.mark.slow
def test_grade_the_five_students(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    submissions = make_submissions(tmp_path)
    before = _digests(submissions)
    out = tmp_path / "gradebook"
    code = instructor_main(["grade", str(submissions), "--out", str(out), "--small", "--data-dir",
                            str(course_data_dir()), "--timeout", str(TIMEOUT), "--jobs", "2"])
    log = capsys.readouterr().out
    assert code == 0, log
    assert _digests(submissions) == before  # the submissions are never modified

    book = pd.read_csv(out / "gradebook.csv", dtype=str, keep_default_na=False)
    assert list(book.columns) == list(grade.COLUMNS)
    exercises = grade.lesson_exercises(next(l for l in grade.discover_lessons() if l.stem == LESSON))
    assert exercises == ["5.1", "5.2", "5.3"]
    status = {(r.student, r.exercise): r.status for r in book.itertuples()}
    detail = {(r.student, r.exercise): r.detail for r in book.itertuples()}
    assert sorted(book["student"].unique()) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert len(book) == 6 * len(exercises) and set(book["notebook"]) == {LESSON}
    for exercise in exercises:
        assert status["alice", exercise] == "correct", detail["alice", exercise]
        assert status["bob", exercise] == "not attempted" and detail["bob", exercise] == "answer left as ..."
        assert status["dave", exercise] == "timeout" and f"stopped after {TIMEOUT} s" in detail["dave", exercise]
        assert status["erin", exercise] == "missing"
        assert detail["erin", exercise] == f"erin/ has no {LESSON}.ipynb (found: {LESSON} (1).ipynb)"
    assert status["carol", "5.2"] == "wrong" and detail["carol", "5.2"] == "answer -1.0"
    assert status["carol", "5.1"] == status["carol", "5.3"] == "not attempted"
    # frank's notebook raised after the solution of 5.1: 5.1 keeps its result, the rest were never checked.
    assert status["frank", "5.1"] == "correct"
    for exercise in ("5.2", "5.3"):
        assert status["frank", exercise] == "error"
        assert detail["frank", exercise].startswith("RuntimeError: half way (In [")

    for student in ("alice", "bob", "carol", "dave", "frank"):  # executed notebooks, for the instructor
        executed = nbformat.read(out / "notebooks" / student / f"{LESSON}.ipynb", as_version=4)
        assert executed.metadata["papermill"]["parameters"]["n_train_per_class"] == 24
    assert not (out / "notebooks" / "erin").exists()

    markdown = (out / "gradebook.md").read_text()
    summary = grade.summary_table(book)
    assert summary.loc["alice", LESSON] == "3/3" and summary.loc["alice", "total correct"] == "3/3"
    assert summary.loc["bob", LESSON] == "0/3 (3 not attempted)"
    assert summary.loc["carol", LESSON] == "0/3 (1 wrong, 2 not attempted)"
    assert summary.loc["dave", LESSON] == "0/3 (3 timeout)"
    assert summary.loc["erin", LESSON] == "missing" and summary.loc["erin", "total correct"] == "0/3"
    assert summary.loc["frank", LESSON] == "1/3 (2 error)"
    for cell in ("| alice     | 3/3", "0/3 (3 timeout)", "1/3 (2 error)", "## Per exercise", "## Runs"):
        assert cell in markdown
    assert f"erin/{LESSON} (1).ipynb is not a lesson notebook in the student's folder; ignored" in log
    assert "[5/5]" in log and "Graded 5 notebooks" in log


def test_checks_record_results_only_for_the_grader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = {"fine_tuned_predicted": [0, 1, 2, 3], "probe_predicted": [0, 9, 9, 9], "labels": [0, 1, 2, 3]}
    checks.check("8.2", 3, **model)  # no variable: nothing written anywhere
    results = tmp_path / "results.jsonl"
    monkeypatch.setenv(runtime._CHECK_RESULTS_ENV_VAR, str(results))
    checks.check("8.2", ..., **model)
    checks.check("8.2", 1, **model)
    checks.check("8.2", 3, **model)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["exercise"], r["status"], r["answer"]) for r in lines] == [
        ("8.2", "not attempted", "Ellipsis"), ("8.2", "wrong", "1"), ("8.2", "correct", "3")]
    assert "62720" not in capsys.readouterr().out.replace("correct", "")  # nothing printed beyond the verdicts
    assert grade._read_results(results) == {"8.2": {"status": "correct", "answer": "3"}}  # the last counts


def _limited(*args: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instructor.kernel_limits", *args, "--", sys.executable, "-c", code],
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_kernel_limits_memory_and_time() -> None:
    memory = _limited("--memory-bytes", str(2**30), code=(
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])\n"
        "try:\n    bytearray(2 * 2**30)\nexcept MemoryError:\n    print('MemoryError')"))
    assert memory.returncode == 0, memory.stderr
    assert memory.stdout.split() == [str(2**30), "MemoryError"]
    timed = _limited("--seconds", "1", code="import time\ntime.sleep(30)")
    assert timed.returncode == -signal.SIGALRM


@pytest.mark.parametrize("case, message", [
    ("not a folder", "is not a folder"),
    ("no students", "holds no student folder"),
    ("no lesson", "is named after a lesson"),
    ("out inside", "is inside SUBMISSIONS"),
])
def test_bad_input_is_refused_with_a_reason(tmp_path: Path, case: str, message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    submissions, out = tmp_path / "submissions", tmp_path / "gradebook"
    if case != "not a folder":
        submissions.mkdir()
    if case in ("no lesson", "out inside"):
        (submissions / "alice").mkdir()
        (submissions / "alice" / "homework.ipynb").write_text("{}")
    if case == "out inside":
        out = submissions / "grades"
    assert instructor_main(["grade", str(submissions), "--out", str(out), "--small"]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()



def test_memory_limit_and_a_check_that_never_ran(tmp_path: Path) -> None:
    """Tiny stand-in lessons (no checks in them): one student's notebook allocates beyond the kernel's limit."""
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    make_notebook(lessons, "02_raw_fake", "Fake raw pixels", ["Pretend"], "{}")
    submissions = tmp_path / "submissions"
    for student in ("nina", "mallory"):
        (submissions / student).mkdir(parents=True)
    shutil.copyfile(lessons / "02_raw_fake.ipynb", submissions / "nina" / "02_raw_fake.ipynb")
    make_notebook(submissions / "mallory", "02_raw_fake", "Fake raw pixels", ["Pretend"], "{}",
                  extra="hog = bytearray(4 * 2**30)")
    log: list[str] = []
    book = grade.grade(submissions, tmp_path / "out", notebooks=lessons, timeout=120, jobs=2, memory_gb=2,
                       log=log.append)
    exercises = [e for e in checks.load_all() if e.startswith("2.")]
    assert len(book) == 2 * len(exercises)
    by_student = {student: rows for student, rows in book.groupby("student")}
    assert set(by_student["nina"]["status"]) == {"not attempted"}
    assert set(by_student["nina"]["detail"]) == {"no check of this exercise ran"}
    assert set(by_student["mallory"]["status"]) == {"error"}
    assert by_student["mallory"]["detail"].str.startswith("MemoryError").all(), by_student["mallory"]["detail"]
    assert any("mallory/02_raw_fake.ipynb: 0/3 (3 error)" in line for line in log), log
