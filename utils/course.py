"""Run the whole course for an instructor, publish it as a static site, keep notebooks clean.

One command (wired as ``python -m utils course``) does everything an instructor needs
before class:

1. :func:`discover_lessons` finds the numbered notebooks (``NN_name.ipynb``) and reads each
   one's title and learning objectives from its first markdown cell. The lesson order, the
   site index and the previous/next links all come from this; nothing is kept by hand.
2. :func:`run_course` executes every notebook in order with papermill, each writing its
   metrics through :func:`save_metrics`, then collects them into ``results.json`` and a
   readable ``results.md`` that puts this run's figures beside the classic course's.
3. :func:`build_site` renders the executed notebooks to self-contained HTML pages (images
   embedded, no CDN scripts) with an index and a navigation bar; they open from ``file://``.

:func:`clean_notebook` / :func:`clean_notebooks` strip outputs and volatile metadata, like
nbstripout, so committed notebooks stay small and diff-friendly (``clean-notebooks --check``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import html
import json
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any, Final

import nbformat

from .notebook import to_jsonable
from .runtime import atomic_write

COURSE_TITLE: Final = "Deep features: recognise and retrieve images"

#: The repository's own notebooks folder (the default course).
NOTEBOOK_DIR: Final = Path(__file__).resolve().parents[1] / "notebooks"

#: ``--small``: a quick run for smoke tests and slow machines (also used by the tests).
SMALL_PARAMETERS: Final[Mapping[str, Any]] = {
    "n_train_per_class": 24,
    "n_test_per_class": 12,
    "image_size": 96,
    "repeats": 2,  # few-shot draws per shot count (notebook 6)
}

#: Headline figures of the classic course this one re-creates: the original "Deep Features
#: for Image Classification" and "Deep Features for Image Retrieval" notebooks of the
#: University of Washington's Machine Learning Foundations course (GraphLab Create, 4-class
#: CIFAR-10 subset: 2,005 training / 4,000 test images). They are quoted from that course,
#: not measured here; results.md shows each beside this run's figure.
CLASSIC_RESULTS: Final[Mapping[str, Any]] = {
    "raw_pixel_accuracy": (0.47, 0.48),  # logistic regression on raw pixels
    "deep_feature_accuracy": 0.788,  # logistic regression on ImageNet deep features
    "dog_1nn_correct": 678,  # test dogs whose 1-NN (over all train classes) is a dog ...
    "dog_test_count": 1000,  # ... out of the 1,000 test dogs
}

#: Run parameters echoed by every notebook's metrics (shown in the run-info table).
RUN_KEYS: Final = ("backbone", "image_size", "n_train", "n_test", "seed")

#: Versions recorded in results.json (distribution names).
VERSION_PACKAGES: Final = (
    "tensorflow", "keras", "numpy", "scikit-learn", "papermill", "nbconvert", "matplotlib",
)

_LESSON_NAME = re.compile(r"^(\d+)_(\w[\w-]*)\.ipynb$")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*\S)\s*$")
_MISSING: Final = "—"
_PAPERMILL_ERROR_TAG: Final = "papermill-error-cell-tag"

Log = Callable[[str], Any]


class CourseRunError(RuntimeError):
    """A notebook failed while the course was running; the message names it."""


# --------------------------------------------------------------------------- lessons


@dataclass(frozen=True)
class Lesson:
    """One numbered notebook of the course."""

    path: Path
    number: int
    slug: str  # the name after the number: "explore_data"
    title: str
    objectives: tuple[str, ...]

    @property
    def stem(self) -> str:
        """File name without extension, e.g. ``01_explore_data``: used for every output."""
        return self.path.stem

    @property
    def label(self) -> str:
        """Short display label, e.g. ``01 · Explore the data``."""
        return f"{self.number:02d} · {self.title}"


def _first_markdown(nb: nbformat.NotebookNode) -> str:
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "markdown" and _PAPERMILL_ERROR_TAG not in tags:
            return str(cell.source)
    return ""


def parse_intro(markdown: str) -> tuple[str | None, tuple[str, ...]]:
    """Return the ``# Title`` and the bullets under a "Learning objectives" line."""
    title: str | None = None
    objectives: list[str] = []
    in_objectives = False
    for line in markdown.splitlines():
        stripped = line.strip()
        if title is None and re.match(r"^#\s+\S", stripped):
            title = stripped.lstrip("#").strip()
            continue
        if "learning objectives" in stripped.lower():
            in_objectives = True
            continue
        if not in_objectives:
            continue
        bullet = _BULLET.match(line)
        if bullet:
            objectives.append(bullet.group(1))
        elif objectives and line.startswith((" ", "\t")) and stripped:
            objectives[-1] += " " + stripped  # a wrapped bullet
        elif stripped and (objectives or stripped.startswith("#")):
            break  # the list (or its section) is over
    return title, tuple(objectives)


def read_lesson(path: str | os.PathLike[str]) -> Lesson:
    """Read one ``NN_name.ipynb`` notebook into a :class:`Lesson`."""
    path = Path(path)
    match = _LESSON_NAME.match(path.name)
    if not match:
        raise ValueError(f"{path.name}: lesson notebooks are named NN_name.ipynb")
    nb = nbformat.read(path, as_version=4)
    title, objectives = parse_intro(_first_markdown(nb))
    slug = match.group(2)
    return Lesson(
        path=path,
        number=int(match.group(1)),
        slug=slug,
        title=title or slug.replace("_", " ").capitalize(),
        objectives=objectives,
    )


def discover_lessons(notebook_dir: str | os.PathLike[str] = NOTEBOOK_DIR) -> list[Lesson]:
    """All ``NN_name.ipynb`` notebooks of a folder, ordered by their number prefix."""
    paths = [p for p in Path(notebook_dir).glob("*.ipynb") if _LESSON_NAME.match(p.name)]
    lessons = [read_lesson(p) for p in paths]
    return sorted(lessons, key=lambda lesson: (lesson.number, lesson.path.name))


# --------------------------------------------------------------------------- metrics


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, text)


# --------------------------------------------------------------------------- running


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            found[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            found[name] = None
    return found


def _as_lessons(notebooks: str | os.PathLike[str] | Iterable[Any] | None) -> list[Lesson]:
    if notebooks is None:
        return discover_lessons(NOTEBOOK_DIR)
    if isinstance(notebooks, (str, os.PathLike)):
        return discover_lessons(notebooks)
    lessons = [nb if isinstance(nb, Lesson) else read_lesson(nb) for nb in notebooks]
    return sorted(lessons, key=lambda lesson: (lesson.number, lesson.path.name))


@contextlib.contextmanager
def _kernel_environment() -> Iterator[None]:
    """Environment the notebook kernels inherit while the course runs.

    ``import utils`` works from the notebooks folder without an installed package, and
    figures are inline PNG outputs even where ``MPLBACKEND`` is set (e.g. Agg in CI).
    """
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "MPLBACKEND")}
    repo = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, saved["PYTHONPATH"]) if p)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _kernel_of(path: Path, requested: str | None) -> str:
    if requested:
        return requested
    spec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
    return spec.get("name") or "python3"


def _parameter_value(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def run_course(
    build_dir: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    notebooks: str | os.PathLike[str] | Iterable[Any] | None = None,
    kernel_name: str | None = None,
    log: Log = print,
) -> dict:
    """Execute the course notebooks in order and collect their metrics.

    ``notebooks`` is a folder, a list of notebook paths/lessons, or ``None`` for the
    course's ``notebooks/``. Each notebook runs with papermill in its own folder and is
    written to ``build_dir/notebooks/``; it gets ``metrics_path`` pointing into
    ``build_dir/metrics/`` plus those of ``parameters`` its parameters cell declares.
    Returns the results also written to ``build_dir/results.json`` and ``results.md``.
    Raises :class:`CourseRunError` naming the first notebook that fails (its partially
    executed copy is kept, and the results so far are still written).
    """
    import papermill  # slow import: only when running

    build = Path(build_dir).resolve()
    parameters = {k: _parameter_value(v) for k, v in (parameters or {}).items()}
    lessons = _as_lessons(notebooks)
    if not lessons:
        raise CourseRunError(f"no NN_name.ipynb notebooks found in {notebooks or NOTEBOOK_DIR}")
    (build / "notebooks").mkdir(parents=True, exist_ok=True)
    (build / "metrics").mkdir(parents=True, exist_ok=True)

    started = _dt.datetime.now(_dt.timezone.utc)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    unused = set(parameters)
    failure: CourseRunError | None = None
    log(f"Running {len(lessons)} notebooks into {build} with {parameters or 'default parameters'}")
    for index, lesson in enumerate(lessons, 1):
        output = build / "notebooks" / lesson.path.name
        metrics_file = build / "metrics" / f"{lesson.stem}.json"
        metrics_file.unlink(missing_ok=True)  # never report a previous run's figures
        declared = papermill.inspect_notebook(str(lesson.path))
        injected = {k: v for k, v in parameters.items() if k in declared}
        unused -= set(injected)
        if "metrics_path" in declared:
            injected["metrics_path"] = str(metrics_file)
        else:
            log(f"  warning: {lesson.path.name} declares no metrics_path parameter")
        log(f"[{index}/{len(lessons)}] {lesson.path.name} ...")
        tick = time.perf_counter()
        try:
            with _kernel_environment():
                papermill.execute_notebook(
                    str(lesson.path),
                    str(output),
                    parameters=injected,
                    kernel_name=_kernel_of(lesson.path, kernel_name),
                    cwd=str(lesson.path.parent),
                    progress_bar=False,
                )
        except Exception as exc:  # papermill's execution error, a dead kernel, ...
            seconds[lesson.stem] = round(time.perf_counter() - tick, 2)
            reason = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
            failure = CourseRunError(
                f"notebook {lesson.path.name} failed after {seconds[lesson.stem]:.1f} s "
                f"({reason}); the partially executed notebook is at {output}"
            )
            failure.__cause__ = exc
            log(f"  FAILED: {failure}")
            break
        seconds[lesson.stem] = round(time.perf_counter() - tick, 2)
        log(f"  done in {seconds[lesson.stem]:.1f} s")
    if unused:
        log(f"  warning: no notebook declares parameter(s): {', '.join(sorted(unused))}")

    total = round(time.perf_counter() - start, 2)
    results = collect_results(build, lessons, parameters, seconds, total, started, failure)
    write_results(build, results)
    if failure is not None:
        raise failure
    log(f"Course ran in {total:.1f} s; results in {build / 'results.md'}")
    return results


def collect_results(
    build: Path,
    lessons: list[Lesson],
    parameters: Mapping[str, Any],
    seconds: Mapping[str, float],
    total_seconds: float,
    started: _dt.datetime,
    failure: BaseException | None = None,
) -> dict:
    """Gather every notebook's metrics file with the run's information."""
    metrics: dict[str, Any] = {}
    for lesson in lessons:
        file = build / "metrics" / f"{lesson.stem}.json"
        try:
            metrics[lesson.stem] = json.loads(file.read_text(encoding="utf-8"))
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
            "notebook_dir": str(lessons[0].path.parent.resolve()) if lessons else None,
        },
        "lessons": [
            {"number": l.number, "name": l.stem, "title": l.title,
             "objectives": list(l.objectives)}
            for l in lessons
        ],
        "classic": dict(CLASSIC_RESULTS),
        "metrics": metrics,
    })


# --------------------------------------------------------------------------- report


Table = tuple[str, list[str], list[list[str]]]  # heading, header row, body rows


def _fmt(value: Any) -> str:
    if value is None or value == "" or isinstance(value, (dict, list)):
        return _MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _fmt_seconds(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else _MISSING


def _metric(results: Mapping[str, Any], key: str, prefer: Iterable[int] = ()) -> Any:
    """First value of ``key`` among the notebooks' metrics (preferred lesson numbers first)."""
    per_notebook = results.get("metrics") or {}
    numbers = {name: int(name.split("_", 1)[0]) if name[:1].isdigit() else -1
               for name in per_notebook}
    preferred = tuple(prefer)
    order = sorted(per_notebook, key=lambda n: (numbers[n] not in preferred, n))
    for name in order:
        found = per_notebook.get(name)
        if isinstance(found, Mapping) and found.get(key) is not None:
            return found[key]
    return None


def _mapping(value: Any) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


def results_tables(results: Mapping[str, Any]) -> list[Table]:
    """The report as tables; a missing metric shows as "—"."""
    classic = results.get("classic") or CLASSIC_RESULTS
    raw_classic = classic.get("raw_pixel_accuracy")
    if isinstance(raw_classic, (list, tuple)):
        raw_classic = "–".join(f"{v:.2f}" for v in raw_classic)
    dog_correct = _metric(results, "dog_1nn_correct", prefer=[5])
    dog_count = _metric(results, "dog_test_count", prefer=[5])
    dog = f"{dog_correct}/{dog_count}" if dog_correct is not None else _MISSING
    headline = [
        ["Raw-pixel classifier accuracy",
         _fmt(_metric(results, "raw_pixel_accuracy", prefer=[2])), _fmt(raw_classic)],
        ["Deep-feature classifier accuracy",
         _fmt(_metric(results, "deep_feature_accuracy", prefer=[3])),
         _fmt(classic.get("deep_feature_accuracy"))],
        ["Dog test images whose 1-NN is a dog",
         dog, f"{classic.get('dog_1nn_correct')}/{classic.get('dog_test_count')}"],
        ["Dog 1-NN accuracy", _fmt(_metric(results, "dog_1nn_accuracy", prefer=[5])
                                   or _ratio(dog_correct, dog_count)),
         _fmt(_ratio(classic.get("dog_1nn_correct"), classic.get("dog_test_count")))],
        ["Retrieval: same-class rate",
         _fmt(_metric(results, "retrieval_same_class_rate", prefer=[4])), _MISSING],
        ["Deep feature dimension", _fmt(_metric(results, "feature_dim", prefer=[3])), _MISSING],
    ]
    tables: list[Table] = [("Headline results", ["Measure", "This run", "Classic course"],
                            headline)]

    raw = _mapping(_metric_from(results, "per_class_accuracy", 2))
    deep = _mapping(_metric_from(results, "per_class_accuracy", 3))
    nn = _mapping(_metric(results, "per_class_1nn_accuracy", prefer=[5]))
    classes = list(dict.fromkeys([*raw, *deep, *nn]))
    if classes:
        tables.append(("Per-class accuracy", ["Class", "Raw pixels", "Deep features", "1-NN"],
                       [[c, _fmt(raw.get(c)), _fmt(deep.get(c)), _fmt(nn.get(c))]
                        for c in classes]))

    few = _mapping(_metric(results, "few_shot", prefer=[6]))
    shots = few.get("shots") or []
    if isinstance(shots, list) and shots:
        raw_curve, deep_curve = few.get("raw_pixel_accuracy"), few.get("deep_feature_accuracy")
        tables.append(("Few-shot curve", ["Shots per class", "Raw pixels", "Deep features"],
                       [[_fmt(s), _fmt(_at(raw_curve, i)), _fmt(_at(deep_curve, i))]
                        for i, s in enumerate(shots)]))

    backbones = _mapping(_metric(results, "backbone_comparison", prefer=[3]))
    if backbones:
        tables.append(("Backbone comparison", ["Backbone", "Deep-feature accuracy"],
                       [[name, _fmt(acc)] for name, acc in backbones.items()]))

    sizes = _mapping(_metric(results, "image_size_comparison", prefer=[3]))
    if sizes:
        tables.append(("Input size comparison (main backbone)", ["Image size (px)", "Deep-feature accuracy"],
                       [[str(size), _fmt(acc)] for size, acc in sizes.items()]))

    run = _mapping(results.get("run"))
    info = [[key.replace("_", " "), _fmt(_metric(results, key))] for key in RUN_KEYS]
    info.append(["total seconds", _fmt_seconds(run.get("total_seconds"))])
    info.append(["date", _fmt(run.get("date"))])
    info.append(["status", _fmt(run.get("status"))])
    info.append(["platform", _fmt(run.get("platform"))])
    info += [[name, _fmt(version)] for name, version in _mapping(run.get("versions")).items()]
    tables.append(("Run", ["Item", "Value"], info))

    seconds = _mapping(run.get("notebook_seconds"))
    lessons = results.get("lessons") or []
    if lessons:
        tables.append(("Notebooks", ["Notebook", "Seconds"],
                       [[str(l.get("name")), _fmt_seconds(seconds.get(l.get("name")))]
                        for l in lessons if isinstance(l, Mapping)]))
    return tables


def _metric_from(results: Mapping[str, Any], key: str, number: int) -> Any:
    for name, found in (results.get("metrics") or {}).items():
        if name.startswith(f"{number:02d}_") and isinstance(found, Mapping):
            return found.get(key)
    return None


def _ratio(a: Any, b: Any) -> float | None:
    try:
        return float(a) / float(b)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _at(values: Any, index: int) -> Any:
    return values[index] if isinstance(values, list) and index < len(values) else None


def tables_markdown(tables: list[Table]) -> str:
    """Render tables as GitHub-flavoured markdown."""
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    parts = []
    for heading, header, rows in tables:
        parts += [f"## {heading}", "", row(header), row(["---"] * len(header))]
        parts += [row(r) for r in rows]
        parts.append("")
    return "\n".join(parts)


def tables_html(tables: list[Table]) -> str:
    """Render tables as HTML (``<table class="results">``)."""
    esc = html.escape
    parts = []
    for heading, header, rows in tables:
        parts.append(f"<h3>{esc(heading)}</h3>\n<table class=\"results\">")
        parts.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                     + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</tbody></table>")
    return "\n".join(parts)


def write_results(build_dir: str | os.PathLike[str], results: Mapping[str, Any]) -> None:
    """Write ``results.json`` and ``results.md`` into the build folder."""
    build = Path(build_dir)
    _write_atomic(build / "results.json",
                  json.dumps(to_jsonable(results), indent=2, ensure_ascii=False) + "\n")
    run = _mapping(results.get("run"))
    status = "" if run.get("status") != "failed" else f"\n**Run failed:** {run.get('error')}\n"
    text = (f"# {results.get('course', COURSE_TITLE)} — results\n{status}\n"
            "The classic course's figures are quoted from the original course "
            "(see `CLASSIC_RESULTS` in `utils/course.py`).\n\n"
            + tables_markdown(results_tables(results)))
    _write_atomic(build / "results.md", text)


# --------------------------------------------------------------------------- site

SITE_CSS: Final = """
body { margin: 0; background: #fafafa; }
main, .course-page { max-width: 960px; margin: 0 auto; padding: 0 1.5rem 2rem;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.5; }
.course-page { background: #fff; display: flow-root; }
nav.course-nav { display: flex; justify-content: space-between; gap: 1rem; max-width: 960px;
  margin: 0 auto; padding: .6rem 1.5rem; background: #24425f; color: #fff;
  font-family: system-ui, sans-serif; font-size: .95rem; }
nav.course-nav a { color: #fff; text-decoration: none; }
nav.course-nav a:hover { text-decoration: underline; }
nav.course-nav .disabled { opacity: .4; }
table.results { border-collapse: collapse; margin: .5rem 0 1.5rem; }
table.results th, table.results td { border: 1px solid #bbb; padding: .3rem .7rem;
  text-align: left; }
table.results th { background: #eef2f6; }
ul.lessons > li { margin-bottom: 1rem; }
.jp-Notebook { padding-top: 0; }
"""

_INDEX_TEMPLATE: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<nav class="course-nav"><span>{{ title }}</span>
{%- if lessons %}<a rel="next" href="{{ lessons[0].href }}">Start: {{ lessons[0].label }} →</a>
{%- endif %}</nav>
<div class="course-page">
<h1>{{ title }}</h1>
<p>Recognise and retrieve images with pretrained deep features. Each lesson below is a
notebook executed for this site; open it in Jupyter to run it yourself.</p>
<h2>Lessons</h2>
<ul class="lessons">
{%- for lesson in lessons %}
<li><a href="{{ lesson.href }}">{{ lesson.title }}</a>
{%- if lesson.objectives %}
<ul>{% for objective in lesson.objectives %}<li>{{ objective }}</li>{% endfor %}</ul>
{%- endif %}</li>
{%- endfor %}
</ul>
<h2>Results</h2>
{%- if results_html %}
<p>This run beside the classic course
(also as <a href="results.md">results.md</a> and <a href="results.json">results.json</a>).</p>
{{ results_html }}
{%- else %}
<p>No results.json in this build.</p>
{%- endif %}
</div>
</body>
</html>
"""

# Lab template without anything fetched from a CDN (require.js, MathJax, mermaid,
# widget manager): the pages must work offline and from file://.
_PAGE_TEMPLATE: Final = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">{{ resources.course_css }}</style>{%- endblock -%}
{%- block body_header -%}
{{ super() }}
{{ resources.course_nav }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.course_nav }}
{{ super() }}
{% endblock body_footer %}
"""

_EXTERNAL_SCRIPT = re.compile(
    r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script>", re.IGNORECASE)


def _nav(lessons: list[Lesson], index: int) -> str:
    esc = html.escape

    def link(rel: str, position: int, text: str) -> str:
        if 0 <= position < len(lessons):
            target = lessons[position]
            return (f'<a rel="{rel}" href="{esc(target.stem)}.html" '
                    f'title="{esc(target.label)}">{text}</a>')
        return f'<span class="disabled">{text}</span>'

    return ('<nav class="course-nav">'
            + link("prev", index - 1, "← Previous")
            + f'<a rel="index" href="index.html">Course index · {esc(lessons[index].label)}</a>'
            + link("next", index + 1, "Next →")
            + "</nav>")


def _inline_markdown(text: str) -> str:
    """The inline markdown of an objective (`code`, **strong**, *em*) as escaped HTML."""
    from markupsafe import Markup, escape

    out = str(escape(text))
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)
    return Markup(out)


def build_site(build_dir: str | os.PathLike[str]) -> Path:
    """Render ``build_dir/notebooks/*.ipynb`` and the results into ``build_dir/site/``.

    Writes ``index.html`` plus one self-contained page per lesson (images embedded, no CDN
    scripts) with previous / index / next links. Returns the site folder.
    """
    import jinja2
    from markupsafe import Markup
    from nbconvert import HTMLExporter

    build = Path(build_dir)
    site = build / "site"
    site.mkdir(parents=True, exist_ok=True)
    lessons = discover_lessons(build / "notebooks")
    results: dict = {}
    if (build / "results.json").exists():
        results = json.loads((build / "results.json").read_text(encoding="utf-8"))
        for name in ("results.json", "results.md"):
            if (build / name).exists():
                shutil.copyfile(build / name, site / name)
    source_dir = Path(_mapping(results.get("run")).get("notebook_dir") or build / "notebooks")
    if not source_dir.is_dir():
        source_dir = build / "notebooks"

    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"course_page.html.j2": _PAGE_TEMPLATE})],
        template_file="course_page.html.j2",
        embed_images=True,  # markdown images become data: URIs too
    )
    for position, lesson in enumerate(lessons):
        nb = nbformat.read(lesson.path, as_version=4)
        resources = {
            "metadata": {"name": lesson.label, "path": str(source_dir)},
            "course_nav": _nav(lessons, position),
            "course_css": SITE_CSS,
        }
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        body = _EXTERNAL_SCRIPT.sub("", body)  # belt and braces: nothing from a CDN
        _write_atomic(site / f"{lesson.stem}.html", body)

    env = jinja2.Environment(autoescape=True)
    index = env.from_string(_INDEX_TEMPLATE).render(
        title=results.get("course", COURSE_TITLE),
        css=Markup(SITE_CSS),
        lessons=[{"number": l.number, "title": l.title, "label": l.label,
                  "objectives": [_inline_markdown(o) for o in l.objectives],
                  "href": f"{l.stem}.html"} for l in lessons],
        results_html=Markup(tables_html(results_tables(results)))
        if results else "",
    )
    _write_atomic(site / "index.html", index)
    return site


# --------------------------------------------------------------------------- hygiene

#: Cell metadata that only records how/when a notebook last ran or was displayed.
VOLATILE_CELL_METADATA: Final = frozenset(
    {"execution", "papermill", "collapsed", "scrolled", "ExecuteTime"})
#: Notebook metadata dropped entirely (kernelspec/language_info are trimmed instead).
VOLATILE_NOTEBOOK_METADATA: Final = frozenset(
    {"widgets", "papermill", "execution", "vscode", "colab"})


def _clean_node(nb: nbformat.NotebookNode) -> None:
    meta = nb.metadata
    for key in VOLATILE_NOTEBOOK_METADATA & set(meta):
        del meta[key]
    if "kernelspec" in meta:  # name + display_name: both required by the nbformat schema
        spec = meta["kernelspec"]
        meta["kernelspec"] = {k: spec[k] for k in ("name", "display_name") if k in spec}
    if "language_info" in meta:
        meta["language_info"] = {k: v for k, v in meta["language_info"].items() if k == "name"}
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA & set(cell.metadata):
            del cell.metadata[key]
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None


def clean_notebook(path: str | os.PathLike[str], check_only: bool = False) -> bool:
    """Strip outputs, execution counts and volatile metadata, like nbstripout.

    Returns whether the file changed (or, with ``check_only``, would change). The file is
    written in nbformat's canonical form with a trailing newline, so cleaning twice is a
    no-op.
    """
    path = Path(path)
    original = path.read_text(encoding="utf-8")
    nb = nbformat.reads(original, as_version=4)
    _clean_node(nb)
    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    changed = text != original
    if changed and not check_only:
        _write_atomic(path, text)
    return changed


def clean_notebooks(notebook_dir: str | os.PathLike[str] = NOTEBOOK_DIR,
                    check_only: bool = False) -> list[Path]:
    """Clean every notebook under a folder; return those that changed (or would)."""
    paths = sorted(p for p in Path(notebook_dir).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    return [p for p in paths if clean_notebook(p, check_only=check_only)]


# --------------------------------------------------------------------------- CLI


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m utils course``."""
    parser.add_argument("--out", type=Path, default=Path("build"),
                        help="build folder (default: build)")
    parser.add_argument("--small", action="store_true",
                        help="quick run: " + ", ".join(f"{k}={v}" for k, v in
                                                       SMALL_PARAMETERS.items()))
    parser.add_argument("--no-site", action="store_true", help="skip the static HTML site")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of the course images (default: the notebooks' own)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR,
                        help="folder of the NN_name.ipynb notebooks (default: %(default)s)")
    parser.add_argument("--kernel", default=None,
                        help="Jupyter kernel name (default: each notebook's own)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="extra notebook parameter, VALUE parsed as JSON when it can be "
                             "(e.g. -p backbone efficientnet_lite1 -p seed 1)")


def main(args: argparse.Namespace) -> int:
    """Run the course (and build the site) from parsed ``course`` arguments."""
    log: Log = lambda message: print(message, flush=True)  # noqa: E731
    parameters: dict[str, Any] = dict(SMALL_PARAMETERS) if args.small else {}
    if args.data_dir is not None:
        parameters["data_dir"] = str(args.data_dir.resolve())
    parameters.update({name: _parse_value(value) for name, value in args.parameter})
    try:
        run_course(args.out, parameters, notebooks=args.notebooks,
                   kernel_name=args.kernel, log=log)
    except CourseRunError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    if not args.no_site:
        site = build_site(args.out)
        log(f"Site: {(site / 'index.html').resolve().as_uri()}")
    return 0


def add_clean_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m utils clean-notebooks``."""
    parser.add_argument("--check", action="store_true",
                        help="only report notebooks that are not clean (exit 1 if any)")
    parser.add_argument("folder", nargs="?", type=Path, default=NOTEBOOK_DIR,
                        help="folder of notebooks (default: %(default)s)")


def clean_main(args: argparse.Namespace) -> int:
    """Clean (or with ``--check``, check) the notebooks; 1 when ``--check`` finds dirt."""
    changed = clean_notebooks(args.folder, check_only=args.check)
    for path in changed:
        print(f"{'not clean' if args.check else 'cleaned'}: {path}")
    if args.check and changed:
        print("run: python -m utils clean-notebooks", file=sys.stderr)
        return 1
    if not changed:
        print("notebooks are clean")
    return 0


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.course")
    commands = parser.add_subparsers(dest="command", required=True)
    add_arguments(commands.add_parser("course", help="run every notebook, build the site"))
    add_clean_arguments(commands.add_parser("clean-notebooks", help="strip notebook outputs"))
    args = parser.parse_args(argv)
    return main(args) if args.command == "course" else clean_main(args)


if __name__ == "__main__":
    sys.exit(_cli())
