"""What a course run must not show: TensorFlow's C++ log, an exercise's answer before the exercise, code lines too
wide for the site. ``python -m instructor check BUILD`` reports all three; the tests use the same functions.

* :func:`native_log_lines` -- TensorFlow / absl log lines in a notebook's outputs (or any text).
* :func:`answer_leaks` -- an exercise's expected answer (recorded by :mod:`utils.checks` in
  ``build/answers/<notebook>.jsonl`` during the run) shown by a cell *before* the exercise asks for it.
* :func:`long_code_lines` -- code lines longer than the site's column (:data:`MAX_CODE_LINE`).

Which answers can be looked for, and where. Every cell above the exercise's check cell is read: the outputs of
code cells (printed lines, results, errors; an HTML table -- a DataFrame -- row by row with its column headers)
and the prose of markdown cells, since a number typed in prose is as much a leak as a printed one.

*Numbers* (:func:`answer_pattern`) are found as they are printed, so the search is on numbers, not on strings,
and only on *distinctive* ones. An integer counts when it has at least three digits (smaller ones -- 1, 4, 12 --
are printed all over a lesson as counts, sizes and indices), found as a whole number, also with thousands
separators ("1280", "1,280"). A float counts unless it is a whole number or exactly a fraction with a denominator
of at most 100 (an accuracy over a few dozen images in a small run, which other figures of that run equal by
chance: 3/4, 61/96); it is found where a printed number has at least three decimals and equals the answer rounded
to them ("23.456", "0.8125", numpy's "0.812", a table's "0.812250" or "8.1225e-01"), or is a percentage with at
least one decimal ("81.2%"). And a printed number gives the answer away only when the check would accept it:
within the exercise's tolerance (so "test accuracy 0.333" above "compute the test accuracy to 1e-4" is not a
leak; "1280 features" above "how many features?" is).

*Text answers and small integers* (:func:`conclusion_pattern`: a class name, "up", a shot count under 100) are on
screen everywhere -- the class names head every table and label every figure -- so their mere mention is no
leak. What gives them away is a line that *states the question's conclusion*. Lines are cut into clauses (at
";" and at ",", ".", "!", "?" before a space), and a clause states the answer when it holds the answer (a whole
word, any case, also plural: "dogs"; an integer as a whole number) and

1. a *conclusion word* of the question -- one of :data:`CONCLUSION_WORDS` (most, least, more, best, improve,
   mistaken, need, reach, ...) or a superlative in "-est" (brightest, fewest), with its inflections (improves,
   improved, improvement; brighter) and its family (:data:`CONCLUSION_FAMILIES`: improve ~ gain) -- in the clause
   or, for a table's row, in the table's column headers: "bird improves the most (+0.374)" and the answer's row of
   a table headed "improvement" are leaks of "Which class do deep features improve the most?"; or
2. for a class-name answer, the class the question is about (a class name in the question: *cat* in "Which class
   are cat images most often mistaken for?") and a number: "310 cat images classified as dog".

A clause about a class-name answer that names another class besides the answer and the question's classes is a
header, a list or a statement about another class ("5 automobile images classified as bird" above the cat
question), never a leak: so the headers, per-class tables and label lists of every lesson pass. The question's
own cell is not read for these (it names the options, "up" or "down", not the answer), nor an exercise's number
("**1.**").
The search words of retrieval (nearest, closest) are no conclusion: "the 5 nearest images" is a thing, not an
answer. The class names come from the run's metrics (:func:`build_class_names`); without them rule 2 is off and
rule 1 holds a clause with other classes too. What the rule cannot see: a conclusion in other words than the
question's ("dog takes the bulk of the cat errors" above "mistaken for"), an answer only derived from what is printed
(a per-class table of raw and deep accuracies above "which class improves the most?": computing it is the
exercise), and figures (pixels, not text).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
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
_NUMBER: Final = re.compile(r"(?<![\w.])(-?\d{1,3}(?:,\d{3})+|-?\d+)(?:\.(\d+))?(?:[eE]([-+]?\d+))?(%)?(?![\d])")
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
    """``(cell index, length, line)`` of every code line longer than ``limit`` characters (not in the cell the
    course runner appends to collect the metrics, ``collect-metrics``: no student reads it)."""
    return [(index, len(line), line) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and "collect-metrics" not in cell.metadata.get("tags", [])
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
    """``(value, decimals, is_percent, as printed)`` of every number printed in ``text``; an exponent
    (``8.1225e-01``, as numpy and pandas print a column of mixed magnitudes) is part of the number."""
    for match in _NUMBER.finditer(text):
        whole, decimals, exponent = match.group(1).replace(",", ""), match.group(2) or "", match.group(3) or "0"
        value = float(f"{whole}.{decimals or 0}e{exponent}")
        places = max(len(decimals) - int(exponent), 0)  # 8.1225e-01 is 0.81225: five decimals
        yield value, places, bool(match.group(4)), match.group(0)


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


# ---- text answers and small numbers: only where a line states the question's conclusion

#: Words that state a conclusion when a question asks with them (any superlative in ``-est`` counts too).
CONCLUSION_WORDS: Final = frozenset({
    "most", "least", "more", "fewer", "less", "best", "worst", "better", "worse", "often",
    "improve", "gain", "mistaken", "confused", "need", "reach"})
#: Conclusion words that say the same: a line with one answers a question asked with another.
CONCLUSION_FAMILIES: Final = (frozenset({"improve", "gain"}), frozenset({"mistaken", "confused", "misclassified"}))
#: Words in ``-est`` that are not superlatives, and the superlatives of search that name a thing (the nearest
#: image), not a conclusion.
NOT_CONCLUSIONS: Final = frozenset({
    "interest", "request", "suggest", "manifest", "harvest", "contest", "protest", "forest", "honest", "modest",
    "digest", "invest", "ingest", "arrest", "nearest", "closest", "farthest", "furthest"})
#: A text answer of at most this many words (a class name, "up") is looked for as a stated conclusion.
SHORT_ANSWER_WORDS: Final = 3
_WORD: Final = re.compile(r"[a-z]+(?:[-_][a-z0-9]+)*")  # "few-shot", "few_shot_classifier": not "few"
_SUFFIXES: Final = ("ements", "ement", "ments", "ment", "ings", "ing", "ions", "ion", "est", "ers", "er", "ied",
                    "ies", "es", "ed", "en", "s", "e", "d")
_CLAUSE_END: Final = re.compile(r";|[.,!?](?=\s|$)")
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXERCISE_NUMBER: Final = re.compile(r"\*\*\d+\.\*\*")


def _stem(word: str) -> str:
    """The word without its inflection (one suffix), so that the forms of one word meet: improve, improves,
    improved, improvement -> improv; bright, brighter, brightest -> bright; mistake, mistaken -> mistak."""
    word = word.lower()
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= (3 if suffix in ("est", "er", "ers") else 4):
            return word[:-len(suffix)]
    return word


_CONCLUSION_STEMS: Final = frozenset(_stem(word) for word in CONCLUSION_WORDS)
_FAMILY_STEMS: Final = tuple(frozenset(_stem(word) for word in family) for family in CONCLUSION_FAMILIES)


def conclusion_stems(question: str) -> frozenset[str]:
    """The stems of the words with which ``question`` asks for a conclusion: its :data:`CONCLUSION_WORDS` and
    superlatives (``brightest``, ``fewest``; not :data:`NOT_CONCLUSIONS`), with their families."""
    stems = {_stem(word) for word in _WORD.findall(question.lower()) if word not in NOT_CONCLUSIONS
             and (_stem(word) in _CONCLUSION_STEMS or (word.endswith("est") and len(word) >= 6))}
    for family in _FAMILY_STEMS:
        if stems & family:
            stems |= family
    return frozenset(stems)


def _name_pattern(name: str) -> re.Pattern[str]:
    """``name`` as a whole word or phrase, any case, also in the plural (dog, dogs; bus, buses)."""
    words = r"\s+".join(re.escape(part) for part in name.split())
    return re.compile(rf"(?<![\w-]){words}(?:s|es)?(?![\w-])", re.I)


class ScreenLine(NamedTuple):
    """One line of what a cell shows: a printed or prose line, or a table's row with its column headers."""

    text: str
    header: str = ""  # a table row's column headers, caption or Series name: what its numbers are


class _TableRows(HTMLParser):
    """The rows of the HTML tables in a rich output (a DataFrame, a Styler) with their headers, and the text
    outside any table; ``<style>`` and ``<script>`` are skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[ScreenLine] = []
        self.outside: list[str] = []
        self._skip = 0
        self._table: list[tuple[list[str], bool]] | None = None  # (cells, is a header row)
        self._caption: list[str] = []
        self._row: list[str] | None = None
        self._row_header = True
        self._cell: list[str] | None = None
        self._in_head = False
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        elif tag == "table":
            self._table, self._caption = [], []
        elif tag == "thead":
            self._in_head = True
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr" and self._table is not None:
            self._row, self._row_header = [], True
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._row_header &= tag == "th"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip = max(self._skip - 1, 0)
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self._table.append((self._row, self._in_head or (self._row_header and not self._table)))
            self._row = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "caption":
            self._in_caption = False
        elif tag == "table" and self._table is not None:
            header = " ".join(self._caption + [cell for cells, is_header in self._table if is_header
                                               for cell in cells])
            self.lines += [ScreenLine("  ".join(cells), header) for cells, is_header in self._table
                           if not is_header]
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_caption:
            self._caption.append(data)
        elif self._cell is not None:
            self._cell.append(data)
        elif self._table is None:
            self.outside.append(data)


def screen_lines(cell: Any) -> list[ScreenLine]:
    """What a cell shows, line by line: a markdown cell's prose; a code cell's printed lines and results. An
    HTML table (a DataFrame) gives one line per row with its column headers (its text/plain copy is then left
    out); a Series' ``Name: ...`` line is the header of its rows."""
    if cell.get("cell_type") == "markdown":  # an exercise's number ("**1.**") is no statement
        return [ScreenLine(_EXERCISE_NUMBER.sub("", line)) for line in str(cell.get("source", "")).splitlines()
                if line.strip()]
    lines: list[ScreenLine] = []
    for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
        texts: list[str] = []
        if output.get("output_type") == "stream":
            texts.append(str(output.get("text", "")))
        elif output.get("output_type") == "error":
            texts.append(_ANSI.sub("", "\n".join(output.get("traceback", []))))
        data = output.get("data", {})
        tables = None
        if "text/html" in data:
            tables = _TableRows()
            tables.feed(str(data["text/html"]))
            tables.close()
            lines += tables.lines
            texts.append("".join(tables.outside))
        if "text/plain" in data and not (tables and tables.lines):
            plain = str(data["text/plain"]).splitlines()
            names = [line for line in plain if re.match(r"Name: .*dtype: ", line)]
            lines += [ScreenLine(line, " ".join(names)) for line in plain if line.strip() and line not in names]
        if "text/markdown" in data:
            texts.append(str(data["text/markdown"]))
        lines += [ScreenLine(line) for text in texts for line in text.splitlines() if line.strip()]
    return lines


def _question(nb: nbformat.NotebookNode, asked_at: int) -> tuple[int, int, str]:
    """``(cell index, offset, text)`` of an exercise's question: the last markdown cell above its check cell,
    from the exercise's ``**N.**`` (at ``offset`` in the cell) on; ``(-1, 0, "")`` when there is none."""
    for index in range(asked_at - 1, -1, -1):
        if nb.cells[index].cell_type == "markdown":
            text = nb.cells[index].source
            starts = [m.start() for m in _EXERCISE_NUMBER.finditer(text)] or [0]
            return index, starts[-1], text[starts[-1]:]
    return -1, 0, ""


def conclusion_pattern(expected: Any, question: str, names: Collection[str] = ()) -> Any:
    """A function ``ScreenLine -> the clause that gives expected away, or None`` for an answer that is not
    distinctive as a number (a short text answer, an integer under 100; see the module's docstring), else
    ``None``. ``names``: the lesson's class names (the rule knows a class from another word by them)."""
    stems = conclusion_stems(question)
    named = {name.lower(): _name_pattern(name) for name in names}
    if isinstance(expected, str) and 0 < len(expected.split()) <= SHORT_ANSWER_WORDS:
        answer = _name_pattern(expected.strip())
        is_class = expected.strip().lower() in named
    elif isinstance(expected, int) and not isinstance(expected, bool) and abs(expected) < 100:
        answer, is_class = None, False
    else:
        return None
    subjects = {name for name, pattern in named.items() if pattern.search(question)} - {str(expected).lower()}
    if not stems and not (is_class and subjects):
        return None

    def states(line: ScreenLine) -> str | None:
        for clause in _CLAUSE_END.split(line.text):
            if answer is not None:
                if not answer.search(clause):
                    continue
            elif not any(not decimals and not percent and value == expected
                         for value, decimals, percent, _ in _tokens(clause)):
                continue
            classes = {name for name, pattern in named.items() if pattern.search(clause)}
            others = classes - subjects - {str(expected).lower()}
            if is_class and others:  # a header, a list of classes or a statement about another class
                continue
            words = {_stem(word) for word in _WORD.findall(f"{clause} {line.header}".lower())}
            if words & stems:
                return clause.strip()
            if is_class and classes & subjects and re.search(r"\d", clause):  # "310 cat images ... as dog"
                return clause.strip()
        return None

    return states


@dataclass(frozen=True)
class Leak:
    """An exercise's expected answer shown by an earlier cell of the same notebook."""

    exercise: str
    expected: Any
    cell: int  # the earlier cell that shows it
    shown: str  # the number as printed or typed, or the clause that states the answer
    how: str = "printed"  # "printed" by code, "typed" in prose, or "stated" (a conclusion, not a number)

    def __str__(self) -> str:
        answer = f"exercise {self.exercise}: its answer {self.expected!r}"
        if self.how == "stated":
            return f"{answer} is stated by cell {self.cell}: {self.shown[:100]!r}"
        if self.how == "typed":
            return f"{answer} is typed as {self.shown!r} in the prose of cell {self.cell}"
        return f"{answer} is printed as {self.shown!r} by cell {self.cell}"


def exercise_cells(nb: nbformat.NotebookNode) -> dict[str, int]:
    """``{exercise id: index of the cell that asks it}``: the first code cell, not tagged ``solution``, that calls
    ``checks.check("<id>", ...)``."""
    asked: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and SOLUTION_TAG not in cell.metadata.get("tags", []):
            for exercise in re.findall(r"checks\.check\(\s*[\"']([^\"']+)[\"']", cell.source):
                asked.setdefault(exercise, index)
    return asked


def answer_leaks(nb: nbformat.NotebookNode, key: dict[str, Answer],
                 names: Collection[str] = ()) -> tuple[list[Leak], list[str]]:
    """The leaks of an executed notebook given its answer key, and the asked exercises that were not looked for
    (no distinctive expected answer and no conclusion to look for, or none recorded). ``names``: the lesson's
    class names (:func:`build_class_names`), for class-name answers."""
    leaks: list[Leak] = []
    unchecked: list[str] = []
    texts = [output_text(cell) if cell.cell_type == "code" else cell.source for cell in nb.cells]
    lines = [screen_lines(cell) for cell in nb.cells]
    for exercise, asked_at in exercise_cells(nb).items():
        answer = key.get(exercise, Answer(None))
        pattern = answer_pattern(answer.expected, answer.tolerance)
        if pattern is not None:
            for index in range(asked_at):
                shown = pattern(texts[index])
                if shown:  # one leak per cell
                    how = "typed" if nb.cells[index].cell_type == "markdown" else "printed"
                    leaks.append(Leak(exercise, answer.expected, index, shown[0], how))
            continue
        question_cell, offset, question = _question(nb, asked_at)
        states = conclusion_pattern(answer.expected, question, names)
        if states is None:
            unchecked.append(exercise)
            continue
        for index in range(asked_at):
            shown = lines[index]
            if index == question_cell:  # the question names its options ("up" or "down"), not its answer
                shown = screen_lines({"cell_type": "markdown", "source": nb.cells[index].source[:offset]})
            stated = next((clause for line in shown if (clause := states(line))), None)
            if stated:
                leaks.append(Leak(exercise, answer.expected, index, stated, "stated"))
    return leaks, unchecked


# --------------------------------------------------------------------------- a whole build


def build_class_names(build_dir: str | os.PathLike[str]) -> list[str]:
    """The class names of a course run, from the metrics its lessons wrote (``classes``, or the keys of
    ``train_counts``); ``[]`` when none did."""
    names: list[str] = []
    for path in sorted((Path(build_dir) / "metrics").glob("*.json")):
        try:
            metrics = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        found = metrics.get("classes") or list(metrics.get("train_counts") or {})
        names += [str(name) for name in found if isinstance(name, str) and str(name) not in names]
    return names


def check_build(build_dir: str | os.PathLike[str]) -> list[str]:
    """Every problem of a course run's build folder, one line each: C++ log lines in the executed notebooks, the
    kernels' logs (what the terminal would have shown) and the site; answers on screen before their exercise;
    code lines over :data:`MAX_CODE_LINE` characters."""
    build = Path(build_dir)
    problems: list[str] = []
    names = build_class_names(build)
    for path in sorted((build / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        problems += [f"{path.name}: cell {i} shows a C++ log line: {line}" for i, line in notebook_native_log(nb)]
        leaks, _ = answer_leaks(nb, read_answer_key(build / "answers" / f"{path.stem}.jsonl"), names)
        problems += [f"{path.name}: {leak}" for leak in leaks]
        long = long_code_lines(nb)
        if long:
            problems.append(f"{path.name}: {len(long)} code lines over {MAX_CODE_LINE} characters, the first in "
                            f"cell {long[0][0]}: {long[0][2].strip()[:60]}...")
    for path in sorted((build / "logs").glob("*.log")) + sorted((build / "site").rglob("*.html")):
        problems += [f"{path.relative_to(build)}: C++ log line: {line}"
                     for line in native_log_lines(path.read_text("utf-8", "replace"))]
    return problems
