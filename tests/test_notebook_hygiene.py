"""What a course run must not show (issue 15): TensorFlow's C++ log in a notebook, a kernel's log, the site or the
terminal; an exercise's answer on screen before the exercise asks for it (issue 25: also a class name stated as
its conclusion, a number typed in prose or inside a table); code lines wider than the site's column;
an empty "Solutions" heading in the student copies.

The real course's small run is shared with test_notebooks.py (``built_real_course``); the rest runs on fixtures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from _course_fixtures import REPO, built_real_course, make_notebook
from instructor import hygiene, lessons, notebooks, run
from utils import runtime

#: What TensorFlow 2.21 (the `tensorflow` wheel) printed in lessons 3 and 7 and in the course's terminal, and the
#: older lines an issue quoted: the hygiene check finds them in an executed notebook.
TENSORFLOW_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796018226.029867   10339 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1796018251.710652   10339 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796017795.235217    6241 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "2024-05-01 10:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
    "W0000 00:00:1732900000.000000    1234 some_file.cc:10] a warning",
]
ORDINARY_LINES = ["accuracy 0.812 on 48 test images", "Epoch 1/3", "I0000 is not a log line without its time",
                  "[3.1] not answered yet: replace the ... with your answer and run the cell again."]


# --------------------------------------------------------------------------- TensorFlow's C++ log


def test_the_log_pattern_finds_tensorflows_lines_and_nothing_else() -> None:
    assert hygiene.native_log_lines("\n".join(TENSORFLOW_LINES + ORDINARY_LINES)) == TENSORFLOW_LINES


@pytest.mark.slow
def test_the_terminal_and_the_kernels_stay_quiet(tmp_path: Path) -> None:
    """``python -m instructor course`` (what scripts/course.sh runs) on a notebook that imports TensorFlow after
    utils, as lessons 3 and 7 do: the terminal shows the runner's lines only, the kernel's own output goes to its
    log, and neither the notebook nor the log holds a C++ log line; a Python warning still shows."""
    (tmp_path / "nbs").mkdir()
    path = make_notebook(tmp_path / "nbs", "01_tf", "TensorFlow", ["Import it"], "{}", extra=(
        "import os, warnings\n"
        "import utils\n"
        "import keras\n"
        "print(keras.ops.ones(2))\n"
        "warnings.warn('a warning that matters')\n"
        "os.write(2, b'native text from the kernel\\n')"))
    out = tmp_path / "build"
    done = subprocess.run([sys.executable, "-m", "instructor", "course", "--no-site", "--notebooks",
                           str(path.parent), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    terminal = (done.stdout + done.stderr).splitlines()
    runner = ("Running 1 notebooks", "[1/1] 01_tf.ipynb", "  done in", "Course ran in", "Student copies")
    assert [line for line in terminal if not line.startswith(runner)] == []
    kernel_log = (out / "logs" / "01_tf.log").read_text()
    assert "native text from the kernel" in kernel_log and not hygiene.native_log_lines(kernel_log)
    executed = nbformat.read(out / "notebooks" / "01_tf.ipynb", as_version=4)
    assert hygiene.notebook_native_log(executed) == []
    shown = "\n".join(hygiene.output_text(cell) for cell in executed.cells)
    assert "a warning that matters" in shown and "[1. 1.]" in shown


# --------------------------------------------------------------------------- answers on screen


def test_which_answers_are_looked_for_and_how() -> None:
    find = hygiene.answer_pattern
    assert find(1280)("features: 1280 per image") == ["1280"] and find(1280)("1,280 numbers") == ["1,280"]
    assert find(1280)("12800 or 1280.5 or v1280 or 0.1280") == []
    assert find(4) is None and find(99) is None and find(2.0) is None and find(True) is None
    assert find("cat") is None and find(None) is None and find(float("nan")) is None
    distance = find(23.45678)
    assert distance("nearest at 23.457; next 23.46, 23.4568 and [23.457 24.1]") == ["23.457", "23.4568", "23.457"]
    assert distance("23.458 23.45 23") == []
    accuracy = find(0.81225)  # 3249/4000: a full-size test accuracy
    assert accuracy("accuracy 0.812 (81.2%), pandas 0.812250") == ["0.812", "81.2%", "0.812250"]
    assert accuracy("0.81 or 81% or 0.814 or 81.4%") == []
    # only what the check would accept: to 1e-4, the three decimals printed do not give 0.81225 away
    assert find(0.81225, tolerance=1e-3)("0.812") == ["0.812"] and find(0.81225, tolerance=1e-4)("0.812") == []
    assert find(0.81225, tolerance=1e-4)("pandas prints 0.812250") == ["0.812250"]
    # an accuracy over a few dozen images (exactly k/n, n <= 100) is too common a number to call a leak
    assert find(0.75) is None and find(61 / 96) is None and find(0.8125) is None


def test_a_check_records_its_answer_only_where_the_runner_asks(tmp_path: Path, monkeypatch, capsys) -> None:
    from utils import checks

    key = tmp_path / "answers.jsonl"
    monkeypatch.delenv(runtime._ANSWERS_ENV_VAR, raising=False)
    assert checks.check("8.2", 119, fine_tuned_predicted=list(range(150)) + [-1] * 50, probe_predicted=list(range(30)) + [-1] * 170, labels=list(range(200))) is False and not key.exists()
    monkeypatch.setenv(runtime._ANSWERS_ENV_VAR, str(key))
    assert checks.check("8.2", ..., fine_tuned_predicted=list(range(150)) + [-1] * 50, probe_predicted=list(range(30)) + [-1] * 170, labels=list(range(200))) is None and not key.exists()  # nothing computed
    assert checks.check("8.2", 120, fine_tuned_predicted=list(range(150)) + [-1] * 50, probe_predicted=list(range(30)) + [-1] * 170, labels=list(range(200))) is True
    assert hygiene.read_answer_key(key) == {"8.2": hygiene.Answer(120, 0)}
    assert "120" not in capsys.readouterr().out


def _exercise_notebook(tmp_path: Path, leak: bool) -> Path:
    """A fixture lesson with exercise 8.2 (120 images fixed by fine-tuning), its solution at the end and,
    when ``leak``, a cell that prints the answer before the exercise."""
    path = make_notebook(tmp_path, "07_ask", "Ask", ["Answer"], "{}")
    nb = nbformat.read(path, as_version=4)
    printed = "print(f'the activations hold {4 * 5 * 6} numbers')" if leak else "print('4 x 5 x 6 activations')"
    exercise = "from utils import checks\nanswer = ...\nchecks.check('8.2', answer, fine_tuned_predicted=list(range(150)) + [-1] * 50, probe_predicted=list(range(30)) + [-1] * 170, labels=list(range(200)));"
    solution = new_code_cell(exercise.replace("...", "4 * 5 * 6"))
    solution.metadata["tags"] = ["solution"]
    nb.cells += [new_code_cell(printed), new_markdown_cell("**1.** How many numbers?"), new_code_cell(exercise),
                 new_markdown_cell("## Solutions"), solution]
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("leak", [True, False], ids=["leaks", "asks-first"])
def test_the_run_records_each_answer_and_a_leak_is_found(tmp_path: Path, leak: bool) -> None:
    path = _exercise_notebook(tmp_path, leak)
    run.run_course(tmp_path / "build", {}, notebooks=[path], log=lambda _: None)
    key = hygiene.read_answer_key(tmp_path / "build" / "answers" / "07_ask.jsonl")
    assert key == {"8.2": hygiene.Answer(120, 0)}
    executed = nbformat.read(tmp_path / "build" / "notebooks" / "07_ask.ipynb", as_version=4)
    leaks, unchecked = hygiene.answer_leaks(executed, key)
    assert unchecked == []
    assert [(l.exercise, l.shown, executed.cells[l.cell].source) for l in leaks] == (
        [("8.2", "120", executed.cells[-5].source)] if leak else [])
    assert "120" not in "".join(hygiene.output_text(c) for c in executed.cells[-3:])  # the check never shows it


# --------------------------------------------------------------------------- text answers, prose and tables

CLASSES = ["automobile", "bird", "cat", "dog"]
QUESTIONS = {  # the course's text-answer questions (lessons 1-3), as the notebooks ask them
    "1.3": "**3.** Which class has the *brightest* average image (the highest mean pixel value over all its "
           "images)?\nAnswer with the class name.",
    "2.2": "**2.** Which class are *cat* test images most often mistaken for? (A class name; use the confusion "
           "matrix.)",
    "2.3": "**3.** (Explore) Train the same pipeline with `C` 100 times *smaller*: a much more regularized, "
           "simpler model\n(hint: `sklearn.base.clone(raw_model)`). Does the test accuracy go up or\ndown? "
           'Answer `"up"` or `"down"`, and think about why.',
    "3.3": "**3.** Which class do deep features improve the most, compared with raw pixels? (A class name.)",
    "6.2": "**2.** How many images per class do *raw pixels* need (column `raw pixels` of `curve`) to reach the "
           "accuracy\ndeep features get with the fewest shots (column `chosen`)? Answer with the smallest number "
           "from `shots`, or\n`0` if raw pixels never get there.",
    "7.2": "**2.** How many test images does the fine-tuned model get right that the linear probe got wrong?",
}


def _printed(text: str) -> nbformat.NotebookNode:
    cell = new_code_cell("print(...)")
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    return cell


def _result(value) -> nbformat.NotebookNode:
    """A code cell whose result is ``value`` as Jupyter shows it (a DataFrame: HTML and plain text)."""
    cell = new_code_cell("value")
    data = {"text/plain": repr(value)}
    if hasattr(value, "_repr_html_"):
        data["text/html"] = value._repr_html_()
    cell.outputs = [new_output("execute_result", data=data, execution_count=1)]
    return cell


def _asking(exercise: str, *cells_above: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """An executed notebook: the cells above, then the exercise's question and its check cell."""
    check = new_code_cell(f'answer = ...\nchecks.check("{exercise}", answer, model=model);')
    check.outputs = [new_output("stream", name="stdout", text=f"[{exercise}] not answered yet: replace the ...\n")]
    return new_notebook(cells=[new_markdown_cell("# A lesson"), *cells_above,
                               new_markdown_cell(f"## Exercises\n\n{QUESTIONS[exercise]}"), check])


def _leaks(nb, exercise: str, expected, names=CLASSES) -> list[hygiene.Leak]:
    leaks, unchecked = hygiene.answer_leaks(nb, {exercise: hygiene.Answer(expected, 0)}, names)
    assert exercise not in unchecked  # looked for
    return leaks


@pytest.mark.parametrize("exercise, answer, shown", [
    ("2.2", "dog", _printed("Most frequent mistake: 310 cat images classified as dog.\n")),
    ("2.2", "dog", _printed("Cats are most often mistaken for dogs (310 of 1000).\n")),
    ("2.2", "dog", new_markdown_cell("The confusion matrix says it: cats are mistaken for dogs.")),
    ("3.3", "bird", _printed("Accuracy per class: ...\nbird improves the most (+0.374), cat the least.\n")),
    ("3.3", "bird", _printed("Deep features gain most on bird: +0.374\n")),
    ("1.3", "cat", _printed("The brightest class: cat (mean 0.52)\n")),
    ("2.3", "down", _printed("With C / 100 the accuracy goes down: more regularization underfits.\n")),
    ("6.2", 20, _printed("Raw pixels need 20 shots per class to reach it.\n")),
], ids=["count-and-subject", "plural", "prose", "superlative", "family", "brightest", "up-down", "small-number"])
def test_a_planted_conclusion_is_a_leak(exercise: str, answer, shown) -> None:
    leaks = _leaks(_asking(exercise, _printed("some other output\n"), shown), exercise, answer)
    assert [(leak.exercise, leak.cell, leak.how) for leak in leaks] == [(exercise, 2, "stated")]
    assert f"its answer {answer!r} is stated by cell 2" in str(leaks[0])


def test_a_table_row_of_the_answer_under_a_conclusion_header_is_a_leak() -> None:
    """The DataFrame whose argmax row is the answer: its "improvement" column makes the rows conclusions."""
    pd = pytest.importorskip("pandas")
    raw, deep = [0.417, 0.583, 0.500, 0.333], [0.917, 0.833, 0.583, 0.750]
    table = pd.DataFrame({"raw pixels": raw, "deep features": deep}, index=CLASSES)
    gains = table.assign(improvement=table["deep features"] - table["raw pixels"]).round(3)
    leaks = _leaks(_asking("3.3", _result(gains)), "3.3", "automobile")
    assert [(leak.cell, leak.shown) for leak in leaks] == [(1, "automobile  0.417  0.917  0.500")]
    as_series = _leaks(_asking("3.3", _result(gains["improvement"])), "3.3", "automobile")  # plain text only
    assert [leak.shown for leak in as_series] == ["automobile    0.500"]
    # the same table without the conclusion: the per-class accuracies the student subtracts (the exercise)
    assert _leaks(_asking("3.3", _result(table)), "3.3", "automobile") == []


def test_the_ordinary_mentions_of_class_names_are_no_leak() -> None:
    """Headers, labels, per-class tables and statements about other classes, in every shape the lessons print
    them: none gives away 2.2 (dog), 3.3 (bird), 1.3 (cat) or 2.3 (down)."""
    pd = pytest.importorskip("pandas")
    matrix = pd.DataFrame([[9, 1, 1, 1], [1, 8, 2, 1], [0, 1, 5, 6], [1, 0, 4, 7]], index=CLASSES, columns=CLASSES)
    per_class = pd.DataFrame({"raw pixels": [0.417, 0.583, 0.5, 0.333], "deep features": [0.917, 0.833, 0.583, 0.75]},
                             index=CLASSES)
    cells = [
        new_markdown_cell("- Load the course data: a 4-class subset of CIFAR-10 (automobile, bird, cat, dog)."),
        new_markdown_cell("A weight per pixel can only learn colours: a dog looks like a cat at this level, and\n"
                          "the most common mistakes are between animals."),
        _printed("train.labels: values [0 1 2 3] = ['automobile', 'bird', 'cat', 'dog']\n"
                 "96 training and 48 test images: {'automobile': 24, 'bird': 24, 'cat': 24, 'dog': 24}\n"
                 "Best recognized class: dog (0.83); worst: cat (0.33).\n"
                 "Most frequent mistake: 5 automobile images classified as dog.\n"
                 "The least common training class is 'dog' with 24 images; the most common has 24.\n"
                 "labels of its neighbours: ['cat', 'dog', 'dog', 'bird', 'cat']\n"),
        _result(matrix), _result(per_class), _result(per_class["deep features"]),
        _printed("Epoch 1/3 - loss 0.512 - accuracy 0.812; more epochs: loss goes down\n"),
    ]
    for exercise, answer in [("2.2", "dog"), ("3.3", "bird"), ("3.3", "dog"), ("1.3", "cat"), ("2.3", "up")]:
        assert _leaks(_asking(exercise, *cells), exercise, answer) == [], (exercise, answer)
    # the question names its options ("up" or "down") and no other cell states one
    assert _leaks(_asking("2.3", *cells[:-1]), "2.3", "down") == []
    # but the prose above the question, in the question's own cell, is read
    nb = _asking("2.3", *cells[:-1])
    nb.cells[-2].source = nb.cells[-2].source.replace("## Exercises", "## Exercises\n\nMore regularization: down.")
    assert [leak.shown for leak in _leaks(nb, "2.3", "down")] == ["More regularization: down"]
    # small numbers: "1" and "5" are everywhere, stated only with the question's conclusion word
    assert _leaks(_asking("6.2", *cells), "6.2", 5) == [] and _leaks(_asking("6.2", *cells), "6.2", 1) == []


def test_the_conclusion_words_of_a_question() -> None:
    def stems(question: str) -> set[str]:
        return set(hygiene.conclusion_stems(question))

    assert stems(QUESTIONS["3.3"]) == {"improv", "most", "gain"} and stems(QUESTIONS["7.2"]) == set()
    assert stems(QUESTIONS["1.3"]) == {"bright", "high"}  # superlatives, met in any degree
    assert stems(QUESTIONS["2.2"]) == {"most", "often", "mistak", "confus", "misclassif"}  # with its family
    assert stems(QUESTIONS["2.3"]) == {"more"} and stems(QUESTIONS["6.2"]) == {"need", "reach", "few", "small"}
    assert stems("the 5 nearest images, the closest one") == set()  # what search names, not a conclusion
    same = ["improve improves improved improvement improving", "bright brighter brightest", "mistake mistaken",
            "confused confusion", "need needs needed", "reach reached", "few fewer fewest", "large larger largest"]
    for words in same:
        assert len({hygiene._stem(word) for word in words.split()}) == 1, words
    assert len({hygiene._stem(w) for w in ["most", "more", "mostly", "less", "least", "lesson", "best", "test"]}) == 8
    # without the class names, a class answer is still found with a conclusion word, never by its subject alone
    nb = _asking("2.2", _printed("310 cat images classified as dog\nThe cat row: dog most often\n"))
    assert [leak.shown for leak in _leaks(nb, "2.2", "dog", names=())] == ["The cat row: dog most often"]


def test_a_number_typed_in_prose_above_the_exercise_is_a_leak() -> None:
    prose = new_markdown_cell("Fine-tuning fixes 120 of the probe's mistakes, and 1,280 features feed the head.")
    after = new_markdown_cell("The answer was 120.")
    nb = _asking("7.2", prose)
    nb.cells.append(after)
    leaks, _ = hygiene.answer_leaks(nb, {"7.2": hygiene.Answer(120, 0)})
    assert [(leak.cell, leak.shown, leak.how) for leak in leaks] == [(1, "120", "typed")]
    assert "typed as '120' in the prose of cell 1" in str(leaks[0])
    leaks, _ = hygiene.answer_leaks(nb, {"7.2": hygiene.Answer(1280, 0)})
    assert [leak.shown for leak in leaks] == ["1,280"]


def test_a_number_inside_a_dataframe_output_is_found() -> None:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    table = pd.DataFrame({"accuracy": [0.81225, 0.5], "images": [4000, 1280]}, index=["deep", "raw"])
    nb = _asking("7.2", _result(table))
    found = {answer: [leak.shown for leak in hygiene.answer_leaks(nb, {"7.2": hygiene.Answer(answer, tol)})[0]]
             for answer, tol in [(0.81225, 1e-3), (1280, 0), (4000, 0)]}
    assert found == {0.81225: ["0.81225"], 1280: ["1280"], 4000: ["4000"]}
    # a column of mixed magnitudes, printed in scientific notation by pandas and numpy
    mixed = pd.DataFrame({"seconds": [8.1225e-7, 1.2345e6]})
    with np.printoptions(precision=8, suppress=False):  # numpy's defaults (a lesson's setup() changes them)
        array = _printed(f"{np.array(mixed.seconds)}\n")
    for shown, printed in [(_result(mixed), "8.122500e-07"), (array, "8.1225e-07")]:
        leaks, _ = hygiene.answer_leaks(_asking("7.2", shown), {"7.2": hygiene.Answer(8.1225e-7, 1e-9)})
        assert [leak.shown for leak in leaks] == [printed]
    assert hygiene.answer_pattern(1234.567)("1.234567e+03, not 1.23e+03") == ["1.234567e+03"]
    assert hygiene.answer_pattern(1280)("1.28e+03") == ["1.28e+03"]


def test_the_class_names_of_a_build(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "01_a.json").write_text('{"train_counts": {"cat": 3, "dog": 4}}')
    (tmp_path / "metrics" / "02_b.json").write_text('{"classes": ["cat", "dog", "bird"]}')
    (tmp_path / "metrics" / "03_c.json").write_text("not json")
    assert hygiene.build_class_names(tmp_path) == ["cat", "dog", "bird"]
    assert hygiene.build_class_names(tmp_path / "nothing") == []


# --------------------------------------------------------------------------- the real course's small run


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    return built_real_course(tmp_path_factory)


@pytest.mark.slow
def test_no_cpp_log_line_in_notebooks_kernel_logs_or_site(course: dict) -> None:
    build = course["build"]
    found = [problem for problem in hygiene.check_build(build) if "C++ log line" in problem]
    assert found == []
    assert sorted(p.stem for p in (build / "logs").glob("*.log")) == sorted(course["metrics"])


@pytest.mark.slow
def test_no_answer_on_screen_before_its_exercise(course: dict) -> None:
    """For each exercise: its expected value, as this run computed it, is not shown by an earlier cell: a
    distinctive number printed or typed (hygiene.answer_pattern), or a class name, a text or a small number
    stated as the question's conclusion (hygiene.conclusion_pattern)."""
    leaks, looked_for = [], []
    names = hygiene.build_class_names(course["build"])
    assert sorted(names) == ["automobile", "bird", "cat", "dog"]
    for path in sorted((course["build"] / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        key = hygiene.read_answer_key(course["build"] / "answers" / f"{path.stem}.jsonl")
        asked = hygiene.exercise_cells(nb)
        assert asked and set(asked) <= set(key), f"{path.name}: no answer recorded for {set(asked) - set(key)}"
        found, unchecked = hygiene.answer_leaks(nb, key, names)
        leaks += [f"{path.name}: {leak}" for leak in found]
        looked_for += sorted(set(asked) - set(unchecked))
    assert len(looked_for) >= 5, looked_for  # the test is not vacuous
    assert "3.3" in looked_for  # a class-name answer too (2.2 asks for a share since issue 25)
    assert leaks == [], "\n".join(leaks)


# --------------------------------------------------------------------------- the committed notebooks


def _course_notebooks() -> list[Path]:
    return [lesson.path for lesson in lessons.discover_lessons()]


@pytest.mark.parametrize("path", _course_notebooks(), ids=lambda p: p.name)
def test_code_lines_fit_the_site(path: Path) -> None:
    long = hygiene.long_code_lines(nbformat.read(path, as_version=4))
    assert long == [], f"{path.name}: {len(long)} code lines over {hygiene.MAX_CODE_LINE} characters, e.g. " \
                       f"cell {long[0][0]}: {long[0][2]!r}"


@pytest.mark.parametrize("url", [None, "https://github.com/someone/deep-features"])
def test_the_install_cell_fits_the_site(url: str | None) -> None:
    source = notebooks.install_cell_source(url)
    assert max(len(line) for line in source.splitlines()) <= hygiene.MAX_CODE_LINE


def test_student_copies_drop_the_empty_solutions_heading() -> None:
    def markdown(text: str, *tags: str) -> nbformat.NotebookNode:
        cell = new_markdown_cell(text)
        cell.metadata["tags"] = list(tags)
        return cell

    solution = new_code_cell("answer = 42")
    solution.metadata["tags"] = ["solution"]
    cases = [  # (cells, the sources a student gets)
        ([markdown("# L"), markdown("**1.** Ask."), markdown("## Solutions\n\nEach runs its check."), solution],
         ["# L", "**1.** Ask."]),
        ([markdown("# L"), markdown("**2.** Your photo: no check.\n\n## Solutions"), solution],
         ["# L", "**2.** Your photo: no check."]),
        ([markdown("# L"), markdown("## Answers", "solutions-heading"), solution, markdown("## Next lesson")],
         ["# L", "## Next lesson"]),
        ([markdown("# L"), markdown("## Solutions"), solution, markdown("## Next lesson")],
         ["# L", "## Next lesson"]),
        ([markdown("# L"), markdown("## Solutions"), new_code_cell("kept = 1")],  # not empty: kept
         ["# L", "## Solutions", "kept = 1"]),
    ]
    for cells, expected in cases:
        copy = notebooks.student_copy(new_notebook(cells=cells))
        assert [c.source for c in copy.cells] == expected
