"""What a course run must not show: TensorFlow's C++ log, an exercise's answer before the exercise, code lines too
wide for the site. ``python -m instructor check BUILD`` reports all three; the tests use the same functions.

* :func:`native_log_lines` -- TensorFlow / absl log lines in a notebook's outputs (or any text).
* :func:`answer_leaks` -- an exercise's expected answer (recorded by :mod:`utils.checks` in
  ``build/answers/<notebook>.jsonl`` during the run) printed by a cell *before* the exercise asks for it.
* :func:`long_code_lines` -- code lines longer than the site's column (:data:`MAX_CODE_LINE`).

Which answers can be looked for (:func:`answer_pattern`): a number is found as it is printed, so the search is
on numbers, not on strings, and only on *distinctive* ones. An integer counts when it has at least three digits
(smaller ones -- 1, 4, 12 -- are printed all over a lesson as counts, sizes and indices), found as a whole number,
also with thousands separators ("1280", "1,280"). A float counts unless it is a whole number or exactly a fraction with a denominator of at most 100 (an accuracy
over a few dozen images in a small run, which other figures of that run equal by chance: 3/4, 61/96); it is found where a
printed number has at least three decimals and equals the answer rounded to them ("23.456", "0.8125", numpy's
"0.812"), or is a percentage with at least one decimal ("81.2%"). And a printed number gives the answer away only
when the check would accept it: within the exercise's tolerance (so "test accuracy 0.333" above "compute the test
accuracy to 1e-4" is not a leak; "1280 features" above "how many features?" is). Text answers (a class name,
"up") are not looked for: the class names are on screen in every lesson, and saying which mention gives an answer
away takes a reader. Neither is an answer that is only derived from what is printed (a shape whose product is
asked for).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import nbformat

#: The site's code column: lines longer than this wrap or scroll.
MAX_CODE_LINE: Final = 88
SOLUTION_TAG: Final = "solution"

#: TensorFlow's and absl's C++ log lines (any severity) and the start-up lines the course must not show.
NATIVE_LOG: Final = re.compile(
    r"oneDNN custom operations are on|failed call to cuInit|All log messages before absl::InitializeLog\(\)"
    r"|cudart_stub\.cc|cpu_feature_guard\.cc|rebuild TensorFlow with the appropriate compiler flags"
    r"|^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "  # absl: I0000 00:00:1796017795.087262    6241 file.cc:31]
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] ",  # TensorFlow's own format
    re.M)

# A printed number: optional sign, digits (maybe with thousands commas), optional decimals, optional percent.
_NUMBER: Final = re.compile(r"(?<![\w.])(-?\d{1,3}(?:,\d{3})+|-?\d+)(?:\.(\d+))?(%)?(?![\d])")
_TAG: Final = re.compile(r"<[^>]+>")


def output_text(cell: Any) -> str:
    """Everything a code cell shows as text: streams, plain / markdown / HTML results (tags removed), errors."""
    parts: list[str] = []
    for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
        if output.get("output_type") == "stream":
            parts.append(str(output.get("text", "")))
        elif output.get("output_type") == "error":
            parts.append("\n".join(output.get("traceback", [])))
        data = output.get("data", {})
        for mime in ("text/plain", "text/markdown"):
            if mime in data:
                parts.append(str(data[mime]))
        if "text/html" in data:
            parts.append(html.unescape(_TAG.sub(" ", str(data["text/html"]))))
    return "\n".join(parts)


def native_log_lines(text: str) -> list[str]:
    """The lines of ``text`` that are TensorFlow / absl C++ log lines."""
    return [line for line in text.splitlines() if NATIVE_LOG.search(line)]


def notebook_native_log(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """``(cell index, line)`` of every C++ log line in a notebook's outputs."""
    return [(index, line) for index, cell in enumerate(nb.cells) for line in native_log_lines(output_text(cell))]


def long_code_lines(nb: nbformat.NotebookNode, limit: int = MAX_CODE_LINE) -> list[tuple[int, int, str]]:
    """``(cell index, length, line)`` of every code line longer than ``limit`` characters."""
    return [(index, len(line), line) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > limit]


# --------------------------------------------------------------------------- answers on screen


class Answer(NamedTuple):
    """An exercise's expected answer in one run, and how close the check wants it."""

    expected: Any
    tolerance: float | None = None


def read_answer_key(path: str | os.PathLike[str]) -> dict[str, Answer]:
    """``{exercise id: Answer}`` from a run's ``answers/<notebook>.jsonl`` (the last record of each exercise)."""
    key: dict[str, Answer] = {}
    file = Path(path)
    if file.is_file():
        for line in file.read_text("utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                key[str(record["exercise"])] = Answer(record["expected"], record.get("tolerance"))
    return key


def _tokens(text: str) -> Iterator[tuple[float, int, bool, str]]:
    """``(value, decimals, is_percent, as printed)`` of every number printed in ``text``."""
    for match in _NUMBER.finditer(text):
        whole, decimals, percent = match.group(1).replace(",", ""), match.group(2) or "", bool(match.group(3))
        yield float(f"{whole}.{decimals}" if decimals else whole), len(decimals), percent, match.group(0)


SMALL_DENOMINATOR = 100


def _small_fraction(value: float) -> bool:
    """True when ``value`` is exactly k/n with n <= :data:`SMALL_DENOMINATOR`: an accuracy over a few dozen
    images (a small run) that other figures of the same run hit by chance (3/4, 61/96)."""
    return any(abs(value * n - round(value * n)) < 1e-9 for n in range(1, SMALL_DENOMINATOR + 1))


def answer_pattern(expected: Any, tolerance: float | None = None) -> Any:
    """A function ``text -> the printed numbers that give expected away`` when ``expected`` is distinctive (see
    the module's docstring), else ``None``. ``tolerance``: the check's (``None``: any printed rounding)."""
    if isinstance(expected, bool) or not isinstance(expected, (int, float)) or not math.isfinite(expected):
        return None
    if float(expected).is_integer():
        if isinstance(expected, float) or abs(expected) < 100:
            return None
        target = int(expected)
        return lambda text: [shown for value, decimals, percent, shown in _tokens(text)
                             if not decimals and not percent and value == target]
    if _small_fraction(float(expected)):
        return None

    def found(text: str) -> list[str]:
        hits = []
        for value, decimals, percent, shown in _tokens(text):
            places = decimals + 2 if percent else decimals
            if places < 3:
                continue
            value = value / 100 if percent else value
            rounded_alike = abs(value - expected) <= 0.5 * 10 ** -places + 1e-12
            if rounded_alike and (tolerance is None or abs(value - expected) <= tolerance + 1e-12):
                hits.append(shown)
        return hits

    return found


@dataclass(frozen=True)
class Leak:
    """An exercise's expected answer printed by an earlier cell of the same notebook."""

    exercise: str
    expected: Any
    cell: int  # the earlier cell that printed it
    shown: str  # the number as printed

    def __str__(self) -> str:
        return f"exercise {self.exercise}: its answer {self.expected!r} is printed as {self.shown!r} by cell {self.cell}"


def exercise_cells(nb: nbformat.NotebookNode) -> dict[str, int]:
    """``{exercise id: index of the cell that asks it}``: the first code cell, not tagged ``solution``, that calls
    ``checks.check("<id>", ...)``."""
    asked: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and SOLUTION_TAG not in cell.metadata.get("tags", []):
            for exercise in re.findall(r"checks\.check\(\s*[\"']([^\"']+)[\"']", cell.source):
                asked.setdefault(exercise, index)
    return asked


def answer_leaks(nb: nbformat.NotebookNode, key: dict[str, Answer]) -> tuple[list[Leak], list[str]]:
    """The leaks of an executed notebook given its answer key, and the asked exercises that were not looked for
    (no distinctive expected answer, or none recorded)."""
    leaks: list[Leak] = []
    unchecked: list[str] = []
    texts = [output_text(cell) for cell in nb.cells]
    for exercise, asked_at in exercise_cells(nb).items():
        answer = key.get(exercise, Answer(None))
        pattern = answer_pattern(answer.expected, answer.tolerance)
        if pattern is None:
            unchecked.append(exercise)
            continue
        for index in range(asked_at):
            shown = pattern(texts[index])
            if shown:  # one leak per cell
                leaks.append(Leak(exercise, answer.expected, index, shown[0]))
    return leaks, unchecked


# --------------------------------------------------------------------------- a whole build


def check_build(build_dir: str | os.PathLike[str]) -> list[str]:
    """Every problem of a course run's build folder, one line each: C++ log lines in the executed notebooks, the
    kernels' logs (what the terminal would have shown) and the site; answers on screen before their exercise;
    code lines over :data:`MAX_CODE_LINE` characters."""
    build = Path(build_dir)
    problems: list[str] = []
    for path in sorted((build / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        problems += [f"{path.name}: cell {i} shows a C++ log line: {line}" for i, line in notebook_native_log(nb)]
        leaks, _ = answer_leaks(nb, read_answer_key(build / "answers" / f"{path.stem}.jsonl"))
        problems += [f"{path.name}: {leak}" for leak in leaks]
        long = long_code_lines(nb)
        if long:
            problems.append(f"{path.name}: {len(long)} code lines over {MAX_CODE_LINE} characters, the first in "
                            f"cell {long[0][0]}: {long[0][2].strip()[:60]}...")
    for path in sorted((build / "logs").glob("*.log")) + sorted((build / "site").rglob("*.html")):
        problems += [f"{path.relative_to(build)}: C++ log line: {line}"
                     for line in native_log_lines(path.read_text("utf-8", "replace"))]
    return problems
