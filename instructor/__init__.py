"""Instructor tooling of the deep-features course, kept apart from the student package ``utils``.

``python -m instructor course | site | student-copies | check | clean-notebooks | sync-notebooks | grade``:

* :mod:`instructor.lessons` -- the lessons, from the ``NN_name.ipynb`` file names and their first cell;
* :mod:`instructor.run` -- runs every notebook in order with papermill and collects their metrics;
* :mod:`instructor.report` -- ``results.md`` / ``results.json``: this run beside the classic course (pandas tables);
* :mod:`instructor.site` -- the static site, built by Jupyter Book (Sphinx) from the executed notebooks;
* :mod:`instructor.notebooks` -- nbstripout cleaning, student copies without solutions, the install cell;
* :mod:`instructor.grade` -- executes the students' notebooks and writes a gradebook (kernels started by
  :mod:`instructor.kernel_limits` under a memory and a time limit).
* :mod:`instructor.hygiene` -- what a run must not show: C++ log lines, answers before their exercise, long lines.

Students never import this package; ``utils`` does not import papermill, nbconvert or selenium.
"""

from pathlib import Path
from typing import Final

#: The repository root and its lesson notebooks (the default course).
REPO: Final = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR: Final = REPO / "notebooks"
COURSE_TITLE: Final = "Deep features: recognise and retrieve images"
