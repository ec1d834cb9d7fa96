"""The instructor tooling: lessons, the papermill runner, the report, student copies, cleaning, install cells.

The runner and site run on tiny fixture notebooks (tests/_course_fixtures.py); the hygiene tests check the
course's real, committed notebooks. The site itself is checked in a browser by test_site_browser.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from _course_fixtures import REPO, built_course, make_course, make_notebook
from instructor import NOTEBOOK_DIR, lessons, notebooks, report, run
from instructor.__main__ import main as instructor_main
from instructor import metrics as lesson_metrics
from instructor.metrics import save_metrics

# Every lesson is sized, seeded and located by the same parameters; lessons that use a network also take
# the backbone and the image size.
REQUIRED_PARAMETERS = {"n_train_per_class", "n_test_per_class", "seed", "data_dir"}
NETWORK_PARAMETERS = {"backbone", "image_size"}
NETWORK_FREE_LESSONS = {"02_raw_pixel_classifier"}  # raw pixels: no network, nothing to size for one


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
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp file left


@pytest.mark.parametrize("path", ["", None])
def test_save_metrics_without_path_only_cleans(path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert save_metrics(path, {"x": np.int8(1)}) == {"x": 1}
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- lessons


def test_parse_intro() -> None:
    title, objectives = lessons.parse_intro(
        "# Explore the data\n\nIntro.\n\n## Learning objectives\n\n"
        "- Load the images\n- Count them per\n  class\n* Plot a grid\n\n## Next\n- not this")
    assert title == "Explore the data"
    assert objectives == ("Load the images", "Count them per class", "Plot a grid")
    assert lessons.parse_intro("No heading at all") == (None, ())


def test_discover_lessons_orders_by_number(tmp_path: Path) -> None:
    make_course(tmp_path)
    make_notebook(tmp_path, "10_late", "Late", ["Sort numerically"], "{}")
    found = lessons.discover_lessons(tmp_path)
    assert [l.stem for l in found] == ["01_first_look", "02_raw_fake", "05_distances_fake", "10_late"]
    first = found[0]
    assert (first.number, first.title, first.objectives) == (1, "First look", ("Load a tiny array", "Plot it"))
    assert first.label == "01 · First look"


# --------------------------------------------------------------------------- runner


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The fixture course, run once per session and shared with the browser test."""
    return built_course(tmp_path_factory)


def test_run_course_executes_in_order_and_logs(built: dict) -> None:
    log = "\n".join(built["log"])
    positions = [log.index(f"{name}.ipynb") for name in ("01_first_look", "02_raw_fake", "05_distances_fake")]
    assert positions == sorted(positions) and log.count("done in") == 3
    assert "not_declared" in log  # warned about, not injected
    for name in ("01_first_look", "02_raw_fake", "05_distances_fake"):
        executed = nbformat.read(built["build"] / "notebooks" / f"{name}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in executed.cells)
        assert any(o.get("name") == "stderr" for c in executed.cells for o in c.get("outputs", []))  # the site drops it
        assert (built["build"] / "metrics" / f"{name}.json").is_file()


def test_run_course_injects_declared_parameters(built: dict) -> None:
    metrics = built["results"]["metrics"]
    first = metrics["01_first_look"]
    assert first["image_size"] == 96 and first["n_train"] == 24 and first["n_test"] == 12
    assert first["seed"] == 3 and first["image_shape"] == [96, 96, 3]
    assert metrics["02_raw_fake"]["raw_pixel_accuracy"] == 0.5
    assert metrics["05_distances_fake"]["dog_1nn_correct"] == 9


def test_kernels_use_ipc_so_no_tcp_warning(tmp_path: Path, capfd) -> None:
    """ipykernel warns once per kernel over TCP, on the kernel's stderr: its log file, never the terminal."""
    path = make_notebook(tmp_path, "01_quiet", "Quiet", ["Say nothing"], "{}")
    run.run_course(tmp_path / "build", {}, notebooks=[path], log=lambda _: None)
    assert run.IPCKernelManager().transport == "ipc"
    kernel_log = tmp_path / "build" / "logs" / "01_quiet.log"
    assert kernel_log.is_file() and "without encryption" not in kernel_log.read_text()
    assert capfd.readouterr().err == ""  # nothing of the kernel's reaches this process's terminal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_quiet.ipynb", "build"]  # no socket files left


def test_results_json_has_run_info(built: dict) -> None:
    saved = json.loads((built["build"] / "results.json").read_text())
    assert saved == built["results"]
    info = saved["run"]
    assert info["status"] == "ok" and info["parameters"]["image_size"] == 96
    assert set(info["notebook_seconds"]) == {"01_first_look", "02_raw_fake", "05_distances_fake"}
    # Each figure is rounded to 0.01 s on its own, so the parts may add up to a little more than the total.
    parts = info["notebook_seconds"].values()
    assert info["total_seconds"] >= sum(parts) - 0.005 * (len(parts) + 1) and sum(parts) > 0
    for package in ("python", "tensorflow", "keras", "numpy", "scikit-learn", "papermill", "jupyter-book"):
        assert package in info["versions"]
    assert info["platform"] and info["date"]
    assert saved["classic"]["deep_feature_accuracy"] == report.CLASSIC_RESULTS["deep_feature_accuracy"]


def _rows(markdown: str) -> dict[str, list[str]]:
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in markdown.splitlines() if line.startswith("| ")}


def test_results_md_beside_classic(built: dict) -> None:
    rows = _rows((built["build"] / "results.md").read_text())
    assert rows["Raw-pixel classifier accuracy"] == ["0.500", "0.47–0.48"]
    seconds = built["results"]["run"]["notebook_seconds"]
    assert all(rows[name] == [f"{seconds[name]:.1f}"] for name in seconds)  # each lesson's time, in the table
    assert rows["Deep-feature classifier accuracy"] == ["—", "0.788"]  # missing, no crash
    assert rows["Dog test images whose 1-NN is a dog (Euclidean)"] == ["9/12", "678/1000"]
    assert rows["Retrieval mean average precision, Euclidean / cosine"] == ["—", "—"]  # not in the fake run
    assert rows["cat"] == ["0.250", "—", "0.500"]
    assert rows["backbone"] == ["efficientnet_lite0"] and rows["image size"] == ["96"]
    assert "Keras classifier and fine-tuning" not in (built["build"] / "results.md").read_text()


def test_report_finds_metrics_by_lesson_title_not_number() -> None:
    """Renumbered lessons; lessons 2, 3 and 8 all write per_class_accuracy, each read from its own lesson."""
    results = {"metrics": {
        "01_deep": {"lesson": "Deep-features classifier", "deep_feature_accuracy": 0.9, "raw_pixel_accuracy": 0.4,
                    "per_class_accuracy": {"cat": 0.8}},
        "04_raw": {"lesson": "Raw-pixel classifier", "raw_pixel_accuracy": 0.4, "per_class_accuracy": {"cat": 0.3}},
        "09_nn": {"lesson": "Per-class distances", "dog_1nn_correct": 3, "dog_test_count": 4,
                  "dog_1nn_accuracy": 0.75, "per_class_1nn_accuracy": {"cat": 0.6}},
        "12_tune": {"lesson": "Fine-tuning", "probe_accuracy": 0.81, "fine_tuned_accuracy": 0.86,
                    "fine_tuned_validation_accuracy": 0.87, "top_blocks_from": 11,
                    "per_class_accuracy": {"probe": {"cat": 0.1}}},
        "10_retrieval": {"lesson": "Image retrieval", "map_euclidean": 0.49, "map_cosine": 0.52},
    }}
    results["metrics"]["01_deep"]["image_size_cv_accuracy"] = {"128": 0.81, "224": 0.83}
    markdown = report.tables_markdown(report.results_tables(results))
    rows = _rows(markdown)
    assert rows["Deep-feature classifier accuracy"][0] == "0.900" and rows["Dog 1-NN accuracy"][0] == "0.750"
    assert rows["cat"] == ["0.300", "0.800", "0.600"]
    assert rows["Retrieval mean average precision, Euclidean / cosine"] == ["0.490 / 0.520", "—"]
    assert rows["224"] == ["0.830"] and "chosen on the training images" in markdown
    assert "## Keras classifier and fine-tuning" in markdown
    assert rows["Linear probe (frozen network + Keras head)"] == ["—", "0.810"]
    assert rows["Fine-tuned (from block 11): the image model, pixels in"] == ["0.870", "0.860"]
    assert "Per-class distances: dog_1nn_correct_cosine" in report.report_gaps(results)
    only_probe = report.results_tables({"metrics": {"07_x": {"lesson": "Fine-tuning", "probe_accuracy": 0.5}}})
    table = only_probe["Keras classifier and fine-tuning"]
    assert table["Test accuracy (scored once)"].tolist() == ["0.500", "—", "—"]
    only_keras = report.results_tables({"metrics": {"03_x": {"lesson": "Keras classifier", "head_test_accuracy": 0.8}}})
    table = only_keras["Keras classifier and fine-tuning"]
    assert table["Test accuracy (scored once)"].tolist() == ["—", "0.800"]


def test_the_report_reads_only_declared_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = report._Reader({"metrics": {"02_x": {"lesson": "Raw-pixel classifier", "raw_pixel_acuracy": 0.5}}})
    with pytest.raises(lesson_metrics.MetricsContractError, match="raw_pixel_acuracy"):
        reader("Raw-pixel classifier", "raw_pixel_acuracy")
    assert reader("Raw-pixel classifier", "raw_pixel_accuracy") is None  # declared, not written: a gap
    assert reader.gaps == ["Raw-pixel classifier: raw_pixel_accuracy"]


def test_the_collect_cell_reads_each_source_and_names_what_it_could_not(tmp_path: Path) -> None:
    namespace = {"x": np.int64(2), "table": {"k": np.float32(0.5)}, "seed": 1, "backbone": "b"}
    saved = lesson_metrics.write_lesson_metrics(tmp_path / "m.json", "Raw-pixel classifier",
                                                {"a": "x + 1", "b": "table['k']"}, ["seed", "backbone"],
                                                namespace)
    assert saved == {"a": 3, "b": 0.5, "seed": 1, "backbone": "b", "lesson": "Raw-pixel classifier"}
    assert json.loads((tmp_path / "m.json").read_text()) == saved
    with pytest.raises(lesson_metrics.MetricsContractError, match=r"(?s)c = renamed \+ 1: NameError.*d = "):
        lesson_metrics.write_lesson_metrics(tmp_path / "bad.json", "Raw-pixel classifier",
                                            {"a": "x", "c": "renamed + 1", "d": "table['gone']"}, [], namespace)
    assert json.loads((tmp_path / "bad.json").read_text()) == {"a": 2, "lesson": "Raw-pixel classifier"}
    # a parameter named like a metric (lesson 5's knn_metric = "auto") never hides the metric's value
    kept = lesson_metrics.write_lesson_metrics(tmp_path / "p.json", "Per-class distances",
                                               {"knn_metric": "chosen"}, ["knn_metric"],
                                               {"chosen": "cosine", "knn_metric": "auto"})
    assert kept["knn_metric"] == "cosine"


def test_every_lesson_notebook_has_a_contract_and_an_unknown_one_has_none() -> None:
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        title, sources = lesson_metrics.notebook_contract(path.stem)
        assert set(sources) == set(lesson_metrics.declared(title)), path.name
    assert lesson_metrics.notebook_contract("12_a_lesson_nobody_declared") is None
    with pytest.raises(lesson_metrics.MetricsContractError, match="instructor/metrics.py"):
        lesson_metrics.declared("12 A lesson nobody declared")


def test_the_collect_cell_is_appended_by_the_runner_and_hidden_on_the_site(built: dict) -> None:
    executed = nbformat.read(built["build"] / "notebooks" / "02_raw_fake.ipynb", as_version=4)
    last = executed.cells[-1]
    assert last.metadata["tags"] == [run.COLLECT_TAG] and "write_lesson_metrics" in last.source
    assert not last.get("outputs")  # it prints nothing
    book = nbformat.read(built["build"] / "book" / "02_raw_fake.ipynb", as_version=4)
    assert "remove-cell" in book.cells[-1].metadata["tags"]
    source = nbformat.read(built["root"] / "notebooks" / "02_raw_fake.ipynb", as_version=4)
    assert not any(run.COLLECT_TAG in c.metadata.get("tags", []) for c in source.cells)  # the lesson is untouched
    metrics = built["results"]["metrics"]["02_raw_fake"]
    assert metrics["seconds"] == built["results"]["run"]["notebook_seconds"]["02_raw_fake"]


def test_every_declared_metric_has_a_meaning_and_a_valid_format() -> None:
    for lesson, metrics in lesson_metrics.DECLARED.items():
        assert lesson == lesson_metrics.lesson_title(lesson)
        for key, declared in metrics.items():
            assert key.isidentifier() and declared.meaning, (lesson, key)
            compile(declared.source or key, f"{lesson}: {key}", "eval")  # an expression over the variables
            format(1 if declared.format == "d" else 1.0, declared.format)  # a bad spec raises


def test_report_survives_missing_and_odd_metrics() -> None:
    for results in ({}, {"metrics": {"02_x": None, "03_y": {"lesson": "Few-shot recognizer", "few_shot": "oops"}}},
                    {"metrics": {"06_z": {"lesson": "Few-shot recognizer",
                                          "few_shot": {"shots": [1, 5], "deep_feature_accuracy": [0.5]}}}}):
        markdown = report.tables_markdown(report.results_tables(results))
        assert "Classic course" in markdown and "—" in markdown
    assert re.search(r"^\|\s*5\s*\|\s*—\s*\|\s*—\s*\|$", markdown, re.M)


def test_run_course_stops_at_failing_notebook(tmp_path: Path) -> None:
    broken = make_notebook(tmp_path, "03_broken", "Broken", ["Fail loudly"], "{}",
                           extra='raise ValueError("fixture failure")')
    later = make_notebook(tmp_path, "04_never", "Never", ["Not reached"], "{}")
    with pytest.raises(run.CourseRunError, match=r"03_broken\.ipynb.*fixture failure"):
        run.run_course(tmp_path / "build", {}, notebooks=[later, broken], kernel_name="python3", log=lambda _: None)
    partial = tmp_path / "build" / "notebooks" / "03_broken.ipynb"
    assert partial.is_file() and "fixture failure" in partial.read_text()
    assert not (tmp_path / "build" / "notebooks" / "04_never.ipynb").exists()
    results = json.loads((tmp_path / "build" / "results.json").read_text())
    assert results["run"]["status"] == "failed" and "03_broken" in results["run"]["error"]
    assert "Run failed" in (tmp_path / "build" / "results.md").read_text()


def test_course_command_builds_parameters(monkeypatch, tmp_path: Path) -> None:
    calls: dict = {}
    monkeypatch.setattr(run, "run_course", lambda out, params, **kw: calls.update(out=out, params=params, **kw))
    assert instructor_main(["course", "--out", str(tmp_path), "--small", "--no-site", "--data-dir", "imgs",
                            "-p", "seed", "2", "-p", "backbone", "efficientnet_lite1"]) == 0
    assert calls["params"] == dict(run.SMALL_PARAMETERS, seed=2, backbone="efficientnet_lite1",
                                   data_dir=str(Path("imgs").resolve()))
    assert {p.name for p in (tmp_path / "student").iterdir()} == {p.name for p in NOTEBOOK_DIR.glob("[0-9]*.ipynb")}
    assert not (tmp_path / "site").exists()


# --------------------------------------------------------------------------- student copies


def test_student_copies_drop_solution_cells(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    path = make_notebook(tmp_path / "nbs", "01_ex", "Exercise", ["Solve it"], "{}")
    nb = nbformat.read(path, as_version=4)
    solution = new_code_cell("answer = 42")
    solution.metadata["tags"] = ["solution"]
    nb.cells += [new_markdown_cell("## Solutions"), solution]
    nbformat.write(nb, path)
    written = notebooks.write_student_copies(tmp_path / "student", tmp_path / "nbs")
    assert [p.name for p in written] == ["01_ex.ipynb"]
    student = nbformat.read(written[0], as_version=4)
    assert len(student.cells) == len(nb.cells) - 2  # the solution and its heading, now empty
    assert "## Solutions" not in written[0].read_text()
    assert all("solution" not in c.metadata.get("tags", []) for c in student.cells)
    assert "answer = 42" not in written[0].read_text()
    assert papermill.inspect_notebook(str(written[0]))  # still a parameterised lesson


def test_student_copies_of_the_course_keep_everything_but_solutions(tmp_path: Path) -> None:
    written = notebooks.write_student_copies(tmp_path)
    assert [p.name for p in written] == [l.path.name for l in lessons.discover_lessons()]
    for path in written:
        source = nbformat.read(NOTEBOOK_DIR / path.name, as_version=4)
        kept = []
        for cell in source.cells:
            if not {"solution", "solutions-heading"} & set(cell.metadata.get("tags", [])):
                heading = re.search(r"^#+\s+Solutions", cell.source, re.M)  # the lesson's last heading
                text = cell.source[:heading.start()].rstrip() if heading else cell.source
                kept += [text] if text else []
        assert [c.source for c in nbformat.read(path, as_version=4).cells] == kept


def test_site_hides_the_injected_parameters_and_the_collect_cell(built: dict) -> None:
    """papermill's injected cell and the runner's collect cell (this machine's paths) stay out of the site."""
    metrics_dir = str(built["build"] / "metrics")
    executed = nbformat.read(built["build"] / "notebooks" / "01_first_look.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "seed = 3" in injected[0].source
    assert metrics_dir in executed.cells[-1].source  # the collect cell
    page = (built["site"] / "01_first_look.html").read_text()
    assert metrics_dir not in page and "seed = 3" not in page and "write_lesson_metrics" not in page
    assert "n_train_per_class" in page  # the lesson's own parameters stay


# --------------------------------------------------------------------------- cleaning


def test_clean_notebook_strips_and_is_idempotent(built: dict, tmp_path: Path) -> None:
    dirty = tmp_path / "05_dirty.ipynb"
    shutil.copyfile(built["build"] / "notebooks" / "05_distances_fake.ipynb", dirty)
    nb = nbformat.read(dirty, as_version=4)
    nb.cells[1].metadata.update(collapsed=True, scrolled=False)
    nb.metadata["widgets"] = {"state": {}}
    nbformat.write(nb, dirty)

    assert notebooks.clean_notebook(dirty, check_only=True) is True
    assert notebooks.clean_notebook(dirty, check_only=True) is True  # check wrote nothing
    assert notebooks.clean_notebook(dirty) is True
    once = dirty.read_bytes()
    assert notebooks.clean_notebook(dirty) is False and dirty.read_bytes() == once
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


def test_clean_notebooks_cli_fails_on_dirty(built: dict, tmp_path: Path, capsys) -> None:
    shutil.copytree(built["build"] / "notebooks", tmp_path / "nbs")
    assert instructor_main(["clean-notebooks", "--check", str(tmp_path / "nbs")]) == 1
    assert instructor_main(["clean-notebooks", str(tmp_path / "nbs")]) == 0
    assert instructor_main(["clean-notebooks", "--check", str(tmp_path / "nbs")]) == 0
    assert "notebooks are clean" in capsys.readouterr().out


def test_check_command_fails_on_a_planted_class_name_leak(tmp_path: Path, capsys) -> None:
    """``python -m instructor check BUILD`` (issue 25): a run whose lesson states the class-name answer of an
    exercise above it fails, naming the exercise, the cell and the clause; the same run without that line passes,
    though the class names still head its table and fill its lines."""
    from nbformat.v4 import new_notebook, new_output

    build = tmp_path / "build"
    for folder in ("notebooks", "answers", "metrics"):
        (build / folder).mkdir(parents=True)
    (build / "metrics" / "02_raw.json").write_text(json.dumps({"classes": ["automobile", "bird", "cat", "dog"]}))
    (build / "answers" / "02_raw.jsonl").write_text(json.dumps({"exercise": "2.2", "expected": "dog"}) + "\n")

    def write(summary: str) -> None:
        shown = new_code_cell("print(summary)")
        shown.outputs = [new_output("stream", name="stdout", text=summary)]
        question = new_markdown_cell("**2.** Which class are *cat* test images most often mistaken for?")
        check = new_code_cell('answer = ...\nchecks.check("2.2", answer, model=raw_model);')
        nb = new_notebook(cells=[new_markdown_cell("# 2. Raw pixels"), shown, question, check])
        nbformat.write(nb, build / "notebooks" / "02_raw.ipynb")

    write("Per class: automobile 0.61, bird 0.42, cat 0.30, dog 0.35\n"
          "Most frequent mistake: 310 cat images classified as dog.\n")
    assert instructor_main(["check", "--out", str(build)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "02_raw.ipynb: exercise 2.2: its answer 'dog' is stated by cell 1: "
        "'Most frequent mistake: 310 cat images classified as dog'"]
    write("Per class: automobile 0.61, bird 0.42, cat 0.30, dog 0.35\n"
          "Most frequent mistake: 310 automobile images classified as bird.\n")
    assert instructor_main(["check", "--out", str(build)]) == 0
    assert "no answer on screen before its exercise" in capsys.readouterr().out


def test_pre_commit_hook_strips_the_same_keys() -> None:
    config = (REPO / ".pre-commit-config.yaml").read_text()
    assert "nbstripout" in config and "--keep-id" in config
    assert all(key in config for key in notebooks.EXTRA_KEYS)


# --------------------------------------------------------------------------- install cells and launch links


def test_install_cell_and_links_follow_the_repository_url(tmp_path: Path) -> None:
    make_course(tmp_path / "nbs")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{notebooks.README_START}\nold\n{notebooks.README_END}\n\nrest\n")
    url = "https://github.com/someone/deep-features"
    changed = notebooks.sync_notebooks(tmp_path / "nbs", readme=readme, url=url)
    assert len(changed) == 4 and not notebooks.sync_notebooks(tmp_path / "nbs", readme=readme, url=url,
                                                              check_only=True)
    nb = nbformat.read(tmp_path / "nbs" / "01_first_look.ipynb", as_version=4)
    install = [c for c in nb.cells if "install" in c.metadata.get("tags", [])]
    assert len(install) == 1 and f"git+{url}" in install[0].source and nb.cells[1] is install[0]
    text = readme.read_text()
    assert "colab.research.google.com/github/someone/deep-features/blob/main/notebooks/01_first_look.ipynb" in text
    assert "mybinder.org/v2/gh/someone/deep-features/main?labpath=notebooks%2F01_first_look.ipynb" in text
    assert text.endswith("rest\n") and "old" not in text
    assert notebooks.sync_notebooks(tmp_path / "nbs", readme=readme, url=None, check_only=True)  # now stale


def test_committed_install_cells_and_readme_are_in_sync() -> None:
    url = notebooks.repository_url()
    assert notebooks.sync_notebooks(check_only=True) == [], "run: python -m instructor sync-notebooks"
    readme = (REPO / "README.md").read_text()
    if url is None:  # nothing made up: no launch links, and the cell says how to install instead
        assert "colab.research.google.com" not in readme and "mybinder.org" not in readme
        source = notebooks.install_cell_source(None)
        assert "import utils" in source and "pip install -e ." in source and "git+" not in source
        # a student need not read about publishing the repository (issue 25)
        assert not any(word in source for word in ("published", "not set", "[project.urls]", "pyproject"))


# --------------------------------------------------------------------------- the committed notebooks


def _committed_notebooks() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "notebooks"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.split("\0")
        paths = [REPO / p for p in listed if p.endswith(".ipynb")]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    return [p for p in paths if p.is_file()]


COMMITTED = _committed_notebooks()


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_notebook_is_valid_and_clean(path: Path) -> None:
    nbformat.validate(nbformat.read(path, as_version=4))
    assert notebooks.clean_notebook(path, check_only=True) is False, (
        f"{path.name} has outputs or volatile metadata: run `python -m instructor clean-notebooks`")


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_notebook_follows_course_contract(path: Path) -> None:
    lesson = lessons.read_lesson(path)
    assert lesson.title and lesson.objectives, f"{path.name}: '# Title' + Learning objectives"
    declared = set(papermill.inspect_notebook(str(path)))
    required = REQUIRED_PARAMETERS | (set() if path.stem in NETWORK_FREE_LESSONS else NETWORK_PARAMETERS)
    assert required <= declared, f"{path.name} lacks {required - declared}"


def test_course_lessons_are_the_numbered_notebooks_in_order() -> None:
    """Derived from notebooks/, so adding a lesson (07_...) needs no change here."""
    expected = sorted((p.stem for p in (REPO / "notebooks").glob("*.ipynb") if p.name[:2].isdigit()),
                      key=lambda s: int(s.split("_")[0]))
    assert expected and [l.stem for l in lessons.discover_lessons()] == expected
    assert {p.stem for p in COMMITTED} >= set(expected), "a lesson notebook is not committed"


# --------------------------------------------------------------------------- layering


def test_utils_imports_no_instructor_tooling() -> None:
    code = ("import sys, utils, utils.notebook, utils.data, deep_features.__main__; "
            "bad = {'papermill', 'nbconvert', 'nbformat', 'selenium', 'instructor', 'jupyter_book'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_compare_lists_differences_and_keeps_timings_apart(tmp_path: Path, capsys) -> None:
    from instructor import compare

    before = {"metrics": {"02_x": {"lesson": "Raw-pixel classifier", "raw_pixel_accuracy": 0.5, "seconds": 3.0,
                                    "per_class_accuracy": {"cat": 0.25}, "fit_seconds": 1.0}}}
    after = json.loads(json.dumps(before))
    after["metrics"]["02_x"].update(seconds=9.0, fit_seconds=2.0, extra=1)
    assert compare.compare(before, after) == ([], ["02_x: seconds", "02_x: fit_seconds"], 3)
    after["metrics"]["02_x"]["per_class_accuracy"]["cat"] = 0.3
    del after["metrics"]["02_x"]["raw_pixel_accuracy"]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(before))
    second.write_text(json.dumps(after))
    assert instructor_main(["compare", str(first), str(second)]) == 1
    out = capsys.readouterr().out
    assert "02_x: raw_pixel_accuracy: missing" in out and "per_class_accuracy.cat: 0.25 -> 0.3" in out


def test_compare_ignores_the_random_part_of_temporary_folders_only() -> None:
    import tempfile

    from instructor import compare

    tmp = tempfile.gettempdir()
    first, second = f"{tmp}/new-photos-kqnh0qjj/test_cat_2016.png", f"{tmp}/new-photos-r3rtyr0k/test_cat_2016.png"
    assert compare._same(first, second)
    assert compare._same(f"5 images in {tmp}/my_images-283u0uz8", f"5 images in {tmp}/my_images-j0nd91sp")
    assert not compare._same(first, f"{tmp}/new-photos-r3rtyr0k/test_cat_2075.png")
    assert not compare._same(f"{tmp}/photos-kqnh0qjj/a.png", f"{tmp}/pictures-kqnh0qjj/a.png")
