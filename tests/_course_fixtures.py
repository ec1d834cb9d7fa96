"""Tiny stand-in notebooks for testing the instructor tooling (runner, report, site, student copies).

They are not the course: each has a ``# Title`` + "Learning objectives" first cell, a
``parameters`` cell, a small matplotlib figure and variables holding fake figures, which the runner collects
under a declared lesson title through :func:`fixture_contract` (as it collects a lesson's through
``instructor/metrics.py``), and they run in a couple of seconds each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]

PARAMETERS = """\
backbone = "efficientnet_lite0"
image_size = 224
n_train_per_class = None
n_test_per_class = None
seed = 0
data_dir = None
"""

# Parts of each notebook: (name, title, objectives, extra code, metrics dict source)
FIXTURES = [
    ("01_first_look", "First look", ["Load a tiny array", "Plot it"],
     "", '{"lesson": "Explore the data", "train_counts": {"cat": 3, "dog": 4}, '
         '"image_shape": [image_size, image_size, 3]}'),
    ("02_raw_fake", "Fake raw pixels", ["Pretend to classify raw pixels"],
     "", '{"lesson": "Raw-pixel classifier", "raw_pixel_accuracy": np.float32(0.5), '
         '"per_class_accuracy": {"cat": 0.25, "dog": np.float64(0.75)}}'),
    ("05_distances_fake", "Fake distances", ["Count dogs", "Draw a curve"],
     "", '{"lesson": "Per-class distances", "dog_1nn_correct": np.int64(9), "dog_test_count": 12, '
         '"per_class_1nn_accuracy": {"cat": 0.5, "dog": 0.75}}'),
]


def make_notebook(directory: Path, name: str, title: str, objectives: list[str],
                  metrics_source: str, extra: str = "") -> Path:
    """Write one fixture notebook and return its path."""
    intro = f"# {title}\n\n**Learning objectives**\n\n" + "".join(
        f"- {objective}\n" for objective in objectives) + "\nSome text after the list.\n"
    parameters = new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    body = f"""\
import sys
import numpy as np
import matplotlib.pyplot as plt  # run_course makes the backend inline and utils importable
print("fake " + "progress 50%", file=sys.stderr)  # a progress bar: the site drops stderr outputs
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot(np.arange(image_size % 7 + 3))
ax.set_title({title!r})
plt.show()
{extra}
globals().update({metrics_source}, n_train=n_train_per_class, n_test=n_test_per_class)
"""
    from instructor.notebooks import install_cell_source

    install = new_code_cell(install_cell_source(None))
    install.metadata["tags"] = ["install"]
    nb = new_notebook(cells=[new_markdown_cell(intro), install, parameters, new_code_cell(body),
                             new_markdown_cell("## The end\n\n$x^2$ stays as text.")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = directory / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def fixture_contract(stem: str) -> tuple[str, dict[str, str]] | None:
    """The runner's contract for the fixture notebooks: each one's lesson title and the variables it collects."""
    import ast

    for name, _, _, _, metrics in FIXTURES:
        if name == stem:
            figures = ast.parse(metrics, mode="eval").body
            keys = [key.value for key in figures.keys]
            title = ast.literal_eval(figures.values[keys.index("lesson")])
            return title, {key: key for key in keys + ["n_train", "n_test"] if key != "lesson"}
    return None


def make_course(directory: Path, failing: bool = False) -> list[Path]:
    """Write the fixture notebooks (optionally a failing one in between) into a folder."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [make_notebook(directory, name, title, objectives, metrics, extra)
             for name, title, objectives, extra, metrics in FIXTURES]
    if failing:
        paths.append(make_notebook(directory, "03_broken", "Broken", ["Fail loudly"],
                                   "{}", extra='raise ValueError("fixture failure")'))
    (directory / "scratch.ipynb").write_text("not a lesson, never read")
    return paths


def built_course(tmp_path_factory: Any) -> dict[str, Any]:
    """Run the fixture course once per test session (small parameters, seed 3, as in CI:
    ``MPLBACKEND=agg`` and no ``PYTHONPATH``) and build its site; later calls reuse it."""
    import json
    import os

    import pytest

    from instructor import run, site

    root = tmp_path_factory.getbasetemp() / "fixture_course"
    build, log_file = root / "build", root / "log.txt"
    if not (build / "site" / "index.html").is_file():
        make_course(root / "notebooks")
        lines: list[str] = []
        parameters = dict(run.SMALL_PARAMETERS, seed=3, not_declared=1)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MPLBACKEND", "agg")
            env.delenv("PYTHONPATH", raising=False)
            run.run_course(build, parameters, notebooks=root / "notebooks", log=lines.append,
                           contract=fixture_contract)  # the notebooks' own kernel: python3
            assert os.environ["MPLBACKEND"] == "agg" and "PYTHONPATH" not in os.environ
        site.build_site(build)
        log_file.write_text("\n".join(lines))
    return {"root": root, "build": build, "site": build / "site",
            "log": log_file.read_text().splitlines(),
            "results": json.loads((build / "results.json").read_text())}


def course_data_dir() -> Path:
    """The course images: ``$DEEP_FEATURES_DATA`` when set (CI: the full images), else the committed fixture
    ``tests/data/cifar10-4class-small`` (24 train / 12 test real images per class: what ``--small`` reads)."""
    import os

    return Path(os.environ.get("DEEP_FEATURES_DATA") or REPO / "tests" / "data" / "cifar10-4class-small")


def built_real_course(tmp_path_factory: Any) -> dict[str, Any]:
    """Run the course notebooks once per session at the small size (``SMALL_PARAMETERS``) on the course images
    (:func:`course_data_dir`), write the student copies and build the site; later calls reuse it."""
    import json

    from instructor import notebooks, run, site

    data = course_data_dir()
    root = tmp_path_factory.getbasetemp() / "real_course"
    build = root / "build"
    if not (build / "site" / "index.html").is_file():
        lines: list[str] = []
        parameters = dict(run.SMALL_PARAMETERS, data_dir=str(data))
        run.run_course(build, parameters, log=lines.append)
        notebooks.write_student_copies(build / "student")
        site.build_site(build)
        (root / "log.txt").write_text("\n".join(lines))
    metrics = {p.stem: json.loads(p.read_text()) for p in sorted((build / "metrics").glob("*.json"))}
    return {"build": build, "site": build / "site", "metrics": metrics, "data_dir": data,
            "results": json.loads((build / "results.json").read_text())}
