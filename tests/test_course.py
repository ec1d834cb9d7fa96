"""utils.course: metrics, lesson discovery, the course runner, the report, the site, hygiene.

The runner and site are exercised on tiny fixture notebooks (tests/_course_fixtures.py);
the hygiene tests check the course's real, committed notebooks.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest

from _course_fixtures import REPO, built_course, make_course, make_notebook
from utils import course
from utils.notebook import save_metrics

# Every lesson is sized, seeded and located by the same parameters; lessons that use a network also take
# the backbone and the image size.
REQUIRED_PARAMETERS = {"n_train_per_class", "n_test_per_class", "seed", "data_dir", "metrics_path"}
NETWORK_PARAMETERS = {"backbone", "image_size"}
NETWORK_FREE_LESSONS = {"02_raw_pixel_classifier"}  # raw pixels: no network, nothing to size for one
EXPECTED_NOTEBOOKS = ["01_explore_data", "02_raw_pixel_classifier",
                      "03_deep_features_classifier", "04_image_retrieval",
                      "05_per_class_distances", "06_few_shot_recognizer", "07_fine_tuning"]


# --------------------------------------------------------------------------- metrics


def test_save_metrics_makes_numpy_json_safe(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "m.json"
    clean = save_metrics(path, {
        "acc": np.float32(0.5), "n": np.int64(3), "cm": np.eye(2, dtype=int),
        "per_class": {np.str_("cat"): np.float64(0.25)}, "shape": (96, 96, 3),
        "bad": float("nan"), "where": tmp_path, "ok": np.bool_(True),
    })
    assert clean == json.loads(path.read_text())
    assert clean["acc"] == 0.5 and clean["n"] == 3 and clean["cm"] == [[1, 0], [0, 1]]
    assert clean["per_class"] == {"cat": 0.25} and clean["shape"] == [96, 96, 3]
    assert clean["bad"] is None and clean["where"] == str(tmp_path) and clean["ok"] is True
    assert type(clean["n"]) is int
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp file left


@pytest.mark.parametrize("path", ["", None])
def test_save_metrics_without_path_only_cleans(path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert save_metrics(path, {"x": np.int8(1)}) == {"x": 1}
    assert list(tmp_path.iterdir()) == []


def test_save_metrics_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    save_metrics(path, {"a": 1})
    save_metrics(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}


# --------------------------------------------------------------------------- lessons


def test_parse_intro() -> None:
    title, objectives = course.parse_intro(
        "# Explore the data\n\nIntro.\n\n## Learning objectives\n\n"
        "- Load the images\n- Count them per\n  class\n* Plot a grid\n\n## Next\n- not this")
    assert title == "Explore the data"
    assert objectives == ("Load the images", "Count them per class", "Plot a grid")
    assert course.parse_intro("No heading at all") == (None, ())


def test_discover_lessons_orders_by_number(tmp_path: Path) -> None:
    make_course(tmp_path)
    make_notebook(tmp_path, "10_late", "Late", ["Sort numerically"], "{}")
    lessons = course.discover_lessons(tmp_path)
    assert [l.stem for l in lessons] == [
        "01_first_look", "02_raw_fake", "05_distances_fake", "10_late"]  # scratch ignored
    first = lessons[0]
    assert (first.number, first.slug, first.title) == (1, "first_look", "First look")
    assert first.objectives == ("Load a tiny array", "Plot it")
    assert first.label == "01 · First look"


# --------------------------------------------------------------------------- runner


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The fixture course, run once per session and shared with the browser test."""
    return built_course(tmp_path_factory)


def test_run_course_executes_in_order_and_logs(built: dict) -> None:
    log = "\n".join(built["log"])
    positions = [log.index(f"{name}.ipynb") for name in
                 ("01_first_look", "02_raw_fake", "05_distances_fake")]
    assert positions == sorted(positions)
    assert log.count("done in") == 3
    assert "not_declared" in log  # warned about, not injected
    for name in ("01_first_look", "02_raw_fake", "05_distances_fake"):
        executed = nbformat.read(built["build"] / "notebooks" / f"{name}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in executed.cells)
        assert (built["build"] / "metrics" / f"{name}.json").is_file()


def test_run_course_injects_declared_parameters(built: dict) -> None:
    metrics = built["results"]["metrics"]
    first = metrics["01_first_look"]
    assert first["image_size"] == 96 and first["n_train"] == 24 and first["n_test"] == 12
    assert first["seed"] == 3 and first["image_shape"] == [96, 96, 3]
    assert metrics["02_raw_fake"]["raw_pixel_accuracy"] == 0.5
    assert metrics["05_distances_fake"]["dog_1nn_correct"] == 9


def test_results_json_has_run_info(built: dict) -> None:
    saved = json.loads((built["build"] / "results.json").read_text())
    assert saved == built["results"]
    run = saved["run"]
    assert run["status"] == "ok" and run["parameters"]["image_size"] == 96
    assert set(run["notebook_seconds"]) == {"01_first_look", "02_raw_fake", "05_distances_fake"}
    # Each figure is rounded to 0.01 s on its own, so the parts may add up to a little more than the total.
    parts = run["notebook_seconds"].values()
    assert run["total_seconds"] >= sum(parts) - 0.005 * (len(parts) + 1) and sum(parts) > 0
    for package in ("python", "tensorflow", "keras", "numpy", "scikit-learn"):
        assert package in run["versions"]
    assert run["platform"] and run["date"]
    assert saved["classic"]["deep_feature_accuracy"] == 0.788


def test_results_md_beside_classic(built: dict) -> None:
    text = (built["build"] / "results.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ")}
    assert rows["Raw-pixel classifier accuracy"] == ["0.500", "0.47–0.48"]
    assert rows["Deep-feature classifier accuracy"] == ["—", "0.788"]  # missing, no crash
    assert rows["Dog test images whose 1-NN is a dog"] == ["9/12", "678/1000"]
    assert rows["cat"] == ["0.250", "—", "0.500"]
    assert rows["backbone"] == ["efficientnet_lite0"] and rows["image size"] == ["96"]


def test_report_survives_missing_and_odd_metrics() -> None:
    for results in ({}, {"metrics": {"02_x": None, "03_y": {"few_shot": "oops"}}},
                    {"metrics": {"06_z": {"few_shot": {"shots": [1, 5],
                                                       "deep_feature_accuracy": [0.5]}}}}):
        markdown = course.tables_markdown(course.results_tables(results))
        assert "Classic course" in markdown and "—" in markdown
    assert "| 5 | — | — |" in markdown


def test_run_course_stops_at_failing_notebook(tmp_path: Path) -> None:
    broken = make_notebook(tmp_path, "03_broken", "Broken", ["Fail loudly"], "{}",
                           extra='raise ValueError("fixture failure")')
    later = make_notebook(tmp_path, "04_never", "Never", ["Not reached"], "{}")
    with pytest.raises(course.CourseRunError, match=r"03_broken\.ipynb.*fixture failure"):
        course.run_course(tmp_path / "build", {}, notebooks=[later, broken],
                          kernel_name="python3", log=lambda _: None)
    partial = tmp_path / "build" / "notebooks" / "03_broken.ipynb"
    assert partial.is_file() and "fixture failure" in partial.read_text()
    assert not (tmp_path / "build" / "notebooks" / "04_never.ipynb").exists()
    results = json.loads((tmp_path / "build" / "results.json").read_text())
    assert results["run"]["status"] == "failed" and "03_broken" in results["run"]["error"]
    assert course.discover_lessons(tmp_path / "build" / "notebooks")[0].title == "Broken"


def test_main_builds_parameters(monkeypatch, tmp_path: Path) -> None:
    calls: dict = {}
    monkeypatch.setattr(course, "run_course",
                        lambda out, params, **kw: calls.update(out=out, params=params, **kw))
    monkeypatch.setattr(course, "build_site", lambda out: calls.setdefault("site", out) and out)
    parser = argparse.ArgumentParser()
    course.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--small", "--no-site", "--data-dir",
                              "imgs", "-p", "seed", "2", "-p", "backbone", "efficientnet_lite1"])
    assert course.main(args) == 0
    assert calls["params"] == dict(course.SMALL_PARAMETERS, seed=2, backbone="efficientnet_lite1",
                                   data_dir=str(Path("imgs").resolve()))
    assert "site" not in calls


# --------------------------------------------------------------------------- site


def test_site_index_lists_lessons_and_results(built: dict) -> None:
    index = (built["site"] / "index.html").read_text()
    for lesson in course.discover_lessons(built["build"] / "notebooks"):
        assert f'href="{lesson.stem}.html"' in index and lesson.title in index
        for objective in lesson.objectives:
            assert objective in index
    assert '<table class="results">' in index and "678/1000" in index and "0.788" in index
    assert (built["site"] / "results.json").is_file() and (built["site"] / "results.md").is_file()


def test_site_pages_are_self_contained(built: dict) -> None:
    pages = sorted(built["site"].glob("*.html"))
    assert [p.name for p in pages] == ["01_first_look.html", "02_raw_fake.html",
                                       "05_distances_fake.html", "index.html"]
    for page in pages:
        text = page.read_text()
        external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
        assert not external, f"{page.name} references {external}"
        assert not re.search(r"url\(\s*[\"']?(?:https?:)?//", text), page.name
        assert "<script src" not in text and "require.js" not in text
        assert "cdnjs" not in text and "unpkg" not in text and "mathjax.js" not in text.lower()
        if page.name != "index.html":
            assert re.search(r'<img [^>]*src="data:image/png;base64,', text), page.name


def test_site_navigation(built: dict) -> None:
    pages = ["01_first_look.html", "02_raw_fake.html", "05_distances_fake.html"]
    for i, name in enumerate(pages):
        text = (built["site"] / name).read_text()
        assert f"<title>{course.discover_lessons(built['build'] / 'notebooks')[i].label}" in text
        links = _nav_links(text)
        assert links["index"] == {"index.html"}
        assert links.get("prev", set()) == ({pages[i - 1]} if i > 0 else set())
        assert links.get("next", set()) == ({pages[i + 1]} if i < len(pages) - 1 else set())


def _nav_links(text: str) -> dict[str, set[str]]:
    """rel -> hrefs of the links inside the page's <nav class="course-nav"> bars."""
    found: dict[str, set[str]] = {}
    for nav in re.findall(r'<nav class="course-nav">(.*?)</nav>', text, re.S):
        for tag in re.findall(r"<a\b[^>]*>", nav):
            rel = re.search(r'rel="([^"]+)"', tag)
            href = re.search(r'href="([^"]+)"', tag)
            found.setdefault(rel.group(1), set()).add(href.group(1))
    return found


# --------------------------------------------------------------------------- hygiene


def test_clean_notebook_strips_and_is_idempotent(built: dict, tmp_path: Path) -> None:
    dirty = tmp_path / "05_dirty.ipynb"
    shutil.copyfile(built["build"] / "notebooks" / "05_distances_fake.ipynb", dirty)
    nb = nbformat.read(dirty, as_version=4)
    nb.cells[1].metadata.update(collapsed=True, scrolled=False)
    nb.metadata["widgets"] = {"state": {}}
    nbformat.write(nb, dirty)

    assert course.clean_notebook(dirty, check_only=True) is True
    assert course.clean_notebook(dirty, check_only=True) is True  # check wrote nothing
    assert course.clean_notebook(dirty) is True
    once = dirty.read_bytes()
    assert course.clean_notebook(dirty) is False and dirty.read_bytes() == once
    assert course.clean_notebook(dirty, check_only=True) is False
    assert once.endswith(b"\n")

    clean = nbformat.read(dirty, as_version=4)
    nbformat.validate(clean)
    assert set(clean.metadata) <= {"kernelspec", "language_info"}
    assert set(clean.metadata.get("language_info", {})) <= {"name"}
    assert set(clean.metadata["kernelspec"]) == {"name", "display_name"}
    for cell in clean.cells:
        assert not ({"execution", "papermill", "collapsed", "scrolled"} & set(cell.metadata))
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert papermill.inspect_notebook(str(dirty))  # the parameters tag survived


def test_clean_notebooks_cli(built: dict, tmp_path: Path, capsys) -> None:
    shutil.copytree(built["build"] / "notebooks", tmp_path / "nbs")
    assert course._cli(["clean-notebooks", "--check", str(tmp_path / "nbs")]) == 1
    assert course._cli(["clean-notebooks", str(tmp_path / "nbs")]) == 0
    assert course._cli(["clean-notebooks", "--check", str(tmp_path / "nbs")]) == 0
    assert "notebooks are clean" in capsys.readouterr().out


def _committed_notebooks() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "notebooks"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.split("\0")
        paths = [REPO / p for p in listed if p.endswith(".ipynb")]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    return [p for p in paths if p.is_file()]


COMMITTED = _committed_notebooks()


def _need_notebooks() -> None:
    if not COMMITTED:
        pytest.skip("no notebooks committed in notebooks/ yet")


@pytest.mark.parametrize("path", COMMITTED or [None], ids=lambda p: p.name if p else "none")
def test_committed_notebook_is_valid_and_clean(path: Path | None) -> None:
    _need_notebooks()
    nbformat.validate(nbformat.read(path, as_version=4))
    assert course.clean_notebook(path, check_only=True) is False, (
        f"{path.name} has outputs or volatile metadata: run `python -m utils clean-notebooks`")


@pytest.mark.parametrize("path", COMMITTED or [None], ids=lambda p: p.name if p else "none")
def test_committed_notebook_follows_course_contract(path: Path | None) -> None:
    _need_notebooks()
    lesson = course.read_lesson(path)
    assert lesson.title and lesson.objectives, f"{path.name}: '# Title' + Learning objectives"
    declared = set(papermill.inspect_notebook(str(path)))
    required = REQUIRED_PARAMETERS | (set() if path.stem in NETWORK_FREE_LESSONS else NETWORK_PARAMETERS)
    assert required <= declared, f"{path.name} lacks {required - declared}"


def test_cleaning_committed_notebooks_is_idempotent(tmp_path: Path) -> None:
    _need_notebooks()
    for path in COMMITTED:
        copy = tmp_path / path.name
        shutil.copyfile(path, copy)
        course.clean_notebook(copy)
        assert course.clean_notebook(copy) is False


def test_course_notebooks_are_discovered_in_order() -> None:
    _need_notebooks()
    stems = [l.stem for l in course.discover_lessons(REPO / "notebooks")]
    assert stems == sorted(stems, key=lambda s: int(s.split("_")[0]))
    unknown = [s for s in stems if s not in EXPECTED_NOTEBOOKS]
    assert not unknown, f"unexpected lesson names {unknown}; update EXPECTED_NOTEBOOKS"
