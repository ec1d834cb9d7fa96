"""The course site: Jupyter Book 1.x (Sphinx + MyST-NB) renders the executed notebooks into ``build/site/``.

Why Jupyter Book: it installs from PyPI, builds offline (its theme, search index and scripts are local files),
and gives every page previous/next links, a table of contents and a full-text search box, which nbconvert alone
does not. The notebooks are not re-executed (papermill already ran them); the install
cell is hidden, stderr outputs (progress bars) are dropped, and math rendering is off (MathJax would be fetched
from a CDN).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import yaml

from . import COURSE_TITLE
from .lessons import discover_lessons
from .notebooks import install_cell_index
from .report import report_markdown
from .run import COLLECT_TAG

INJECTED_PARAMETERS_TAG = "injected-parameters"  # papermill's cell with the parameters of this run
CONFIG: dict[str, Any] = {
    "author": "the deep-features course",
    "copyright": "",
    "only_build_toc_files": True,
    "execute": {"execute_notebooks": "off", "stderr_output": "remove"},
    "parse": {"myst_enable_extensions": ["colon_fence", "substitution", "tasklist"]},  # no dollarmath: no MathJax
    "html": {"use_repository_button": False, "use_issues_button": False, "use_edit_page_button": False,
             "home_page_in_navbar": True},
    "launch_buttons": {"binderhub_url": "", "jupyterhub_url": "", "colab_url": "", "thebe": False},
    "sphinx": {"config": {"html_show_copyright": False, "html_show_sphinx": False, "smartquotes": False,
                          "suppress_warnings": ["misc.highlighting_failure"]}},
}


def _intro(title: str, lessons: list, results: dict) -> str:
    lines = [f"# {title}", "",
             "Recognise and retrieve images with pretrained deep features. Each lesson below is a notebook executed "
             "for this site; open it in Jupyter to run it yourself.", "", "## Lessons", ""]
    for lesson in lessons:
        lines.append(f"- [{lesson.title}]({lesson.path.name})")
        lines += [f"  - {objective}" for objective in lesson.objectives]
    lines += ["", "## Results", ""]
    lines.append(report_markdown(results, level=3) if results else "No results.json in this build.")
    return "\n".join(lines) + "\n"


def prepare_book(build_dir: str | os.PathLike[str]) -> Path:
    """Write the Jupyter Book sources (``build_dir/book/``) from ``build_dir/notebooks/`` and ``results.json``."""
    build = Path(build_dir)
    book = build / "book"
    shutil.rmtree(book, ignore_errors=True)
    book.mkdir(parents=True)
    lessons = discover_lessons(build / "notebooks")
    results_file = build / "results.json"
    results = json.loads(results_file.read_text("utf-8")) if results_file.is_file() else {}
    title = results.get("course") or COURSE_TITLE
    for lesson in lessons:
        nb = nbformat.read(lesson.path, as_version=4)
        hidden = [nb.cells[i] for i in (install_cell_index(nb),) if i is not None]  # means nothing on the site
        hidden += [c for c in nb.cells if {INJECTED_PARAMETERS_TAG, COLLECT_TAG} & set(c.metadata.get("tags", []))]
        for cell in hidden:
            cell.metadata.setdefault("tags", []).append("remove-cell")
        nbformat.write(nb, book / lesson.path.name)
    (book / "intro.md").write_text(_intro(title, lessons, results), "utf-8")
    toc = {"format": "jb-book", "root": "intro", "chapters": [{"file": l.stem} for l in lessons]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False), "utf-8")
    (book / "_config.yml").write_text(yaml.safe_dump({"title": title, **CONFIG}, sort_keys=False), "utf-8")
    return book


def build_site(build_dir: str | os.PathLike[str], quiet: bool = True) -> Path:
    """Build ``build_dir/site/`` (``index.html`` plus one page per lesson) with Jupyter Book; return the folder."""
    build = Path(build_dir).resolve()
    book = prepare_book(build)
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book),
               "--path-output", str(book), "--all", *(["-q"] if quiet else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    site = build / "site"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(book / "_build" / "html", site)
    for name in ("results.json", "results.md"):
        if (build / name).is_file():
            shutil.copyfile(build / name, site / name)
    return site
