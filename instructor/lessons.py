"""The lessons of the course: every ``NN_name.ipynb`` notebook of a folder, in number order.

The lesson order, the site's table of contents and the report's notebook list all come from the file names and
each notebook's first markdown cell (``# Title`` and the bullets under "Learning objectives"); nothing is kept by hand.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nbformat

from . import NOTEBOOK_DIR

LESSON_NAME: Final = re.compile(r"^(\d+)_(\w[\w-]*)\.ipynb$")
_BULLET: Final = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*\S)\s*$")


@dataclass(frozen=True)
class LessonNotebook:
    """One numbered notebook of the course."""

    path: Path
    number: int
    title: str
    objectives: tuple[str, ...]

    @property
    def stem(self) -> str:
        """File name without extension, e.g. ``01_explore_data``: names every output of the lesson."""
        return self.path.stem

    @property
    def label(self) -> str:
        """Short display label, e.g. ``01 · Explore the data``."""
        return f"{self.number:02d} · {self.title}"


def parse_intro(markdown: str) -> tuple[str | None, tuple[str, ...]]:
    """The ``# Title`` of a markdown cell and the bullets under its "Learning objectives" line."""
    title: str | None = None
    objectives: list[str] = []
    in_objectives = False
    for line in markdown.splitlines():
        stripped = line.strip()
        if title is None and re.match(r"^#\s+\S", stripped):
            title = stripped.lstrip("#").strip()
        elif "learning objectives" in stripped.lower():
            in_objectives = True
        elif in_objectives:
            bullet = _BULLET.match(line)
            if bullet:
                objectives.append(bullet.group(1))
            elif objectives and line.startswith((" ", "\t")) and stripped:
                objectives[-1] += " " + stripped  # a wrapped bullet
            elif stripped and (objectives or stripped.startswith("#")):
                break  # the list (or its section) is over
    return title, tuple(objectives)


def read_lesson(path: str | os.PathLike[str]) -> LessonNotebook:
    """Read one ``NN_name.ipynb`` notebook into a :class:`LessonNotebook`."""
    path = Path(path)
    match = LESSON_NAME.match(path.name)
    if not match:
        raise ValueError(f"{path.name}: lesson notebooks are named NN_name.ipynb")
    nb = nbformat.read(path, as_version=4)
    intro = next((str(c.source) for c in nb.cells if c.cell_type == "markdown"
                  and "papermill-error-cell-tag" not in c.metadata.get("tags", [])), "")
    title, objectives = parse_intro(intro)
    return LessonNotebook(path=path, number=int(match.group(1)),
                  title=title or match.group(2).replace("_", " ").capitalize(), objectives=objectives)


def discover_lessons(notebook_dir: str | os.PathLike[str] = NOTEBOOK_DIR) -> list[LessonNotebook]:
    """All ``NN_name.ipynb`` notebooks of a folder, ordered by their number prefix."""
    lessons = [read_lesson(p) for p in Path(notebook_dir).glob("*.ipynb") if LESSON_NAME.match(p.name)]
    return sorted(lessons, key=lambda lesson: (lesson.number, lesson.path.name))
