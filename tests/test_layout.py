"""The repository's two Python packages and who they are for: ``utils``, the lesson library, and
``deep_features``, the tool for people's own photo collections, built on ``utils`` and imported one
way only (tool -> utils, never back); the ``deep-features`` console script is the tool's ``main``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the instructor extra installs tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
UTILS = REPO / "utils"
TOOL = REPO / "deep_features"
HEAVY = ("tensorflow", "keras", "faiss", "sklearn", "dask", "distributed")


def _absolute_imports(path: Path) -> set[str]:
    """The top-level packages a file imports absolutely (``import x.y``, ``from x.y import z``),
    wherever the statement is; relative imports (``from .deep_features import ...``) stay inside the
    file's own package and are left out."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_import_finder_sees_absolute_imports_only(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os.path\nfrom .deep_features import DeepFeatures\n\n"
                      "def f():\n    from deep_features.index import build_index\n")
    assert _absolute_imports(source) == {"os", "deep_features"}


def test_utils_never_imports_the_tool() -> None:
    offenders = sorted(p.name for p in UTILS.glob("*.py") if "deep_features" in _absolute_imports(p))
    assert not offenders, f"utils modules import the tool (deep_features): {offenders}"
    assert not (UTILS / "__main__.py").exists(), "the command line is the tool's: deep_features"


def test_the_tool_imports_utils() -> None:
    assert all(_absolute_imports(p) & {"utils"} for p in TOOL.glob("*.py") if p.stem != "__init__")


def test_library_and_tool_code_lines_fit_in_100_columns() -> None:
    files = sorted(TOOL.glob("*.py")) + sorted((REPO / "utils").rglob("*.py"))
    long = [f"{p.relative_to(REPO)}:{n}" for p in files
            for n, line in enumerate(p.read_text("utf-8").splitlines(), 1) if len(line) > 100]
    assert not long, f"lines over 100 characters: {long}"


def test_import_utils_loads_neither_tensorflow_nor_faiss() -> None:
    code = (f"import sys, utils; heavy = {HEAVY!r}; "
            "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy)); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_console_script_is_the_tools_main() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    assert "deep_features" in project["tool"]["setuptools"]["packages"]
    module, _, name = project["project"]["scripts"]["deep-features"].partition(":")
    main = getattr(importlib.import_module(module), name)
    from deep_features.__main__ import main as tool_main

    assert main is tool_main
    done = subprocess.run([sys.executable, "-m", "deep_features", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: deep-features"), done.stderr


# --------------------------------------------------------------------------------------------------
# utils is the lesson library: its public names are what the lessons' code uses, nothing else
# --------------------------------------------------------------------------------------------------

#: Public names of ``utils`` that no lesson's code uses, each kept public for one reason. Keep it
#: short: a name only ``utils`` uses is private (``_name``); one only the tool uses moves to the tool.
KEPT_PUBLIC = {
    "backbones.REGISTRY": "the one table of backbones; the tool's `backbones` command lists it",
    "backbones.UnknownBackboneError": "raised by load_backbone (lessons); the tool's one-line error",
    "backbones.BackboneUnavailableError": "raised by load_backbone (lessons); the tool catches it",
    "runtime.atomic_write": "the one crash-safe write: the lessons' cache, the tool, instructor",
    "fast_inference.resolve_precision": "the featurizer's precision; the tool records the same",
    "features.FileFeatures": "featurize_files' result (lessons); the tool's Dask path returns one",
    "checks.load_all": "instructor grade lists every lesson's exercises",
}

def _lesson_code() -> str:
    """The code cells of every lesson notebook, as one text."""
    import json

    cells = []
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells += ["".join(cell["source"])
                  for cell in json.loads(notebook.read_text("utf-8"))["cells"]
                  if cell["cell_type"] == "code"]
    return "\n".join(cells)


def _printed_for_students() -> set[str]:
    """Names the lessons print as code to write: lesson 3 prints ``spec.application_names``
    (``backbones.EfficientNetLite0``, ``backbones.lite_preprocess_input``)."""
    from utils.backbones import REGISTRY

    return {f"backbones.{written.split('.')[-1]}" for spec in REGISTRY.values()
            for written in spec.application_names if written.startswith("backbones.")}


def _public_module_names(path: Path) -> list[str]:
    """The module-level names a file defines without a leading underscore (functions, classes,
    assignments)."""
    names: list[str] = []
    for node in ast.parse(path.read_text("utf-8"), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in names if not n.startswith("_")]


def _utils_public_names() -> dict[str, Path]:
    """``"module.name"`` (``"checks.load_all"``, ``"checks.lesson03.x"``) -> file, for every
    public module-level name of every ``utils`` module."""
    found = {}
    for path in sorted(UTILS.rglob("*.py")):
        module = ".".join(path.relative_to(UTILS).with_suffix("").parts)
        module = module.removesuffix(".__init__").removesuffix("__init__")
        for name in _public_module_names(path):
            found[f"{module}.{name}" if module else name] = path
    return found


def test_every_public_utils_name_is_used_by_a_lesson() -> None:
    import re

    code = _lesson_code()
    exempt = set(KEPT_PUBLIC) | _printed_for_students()
    public = _utils_public_names()
    unused = sorted(key for key in public if key not in exempt
                    and not re.search(rf"\b{re.escape(key.rsplit('.', 1)[-1])}\b", code))
    assert not unused, (
        "public names of utils that no lesson notebook's code uses (make them private, `_name`, "
        "or move them to the tool, deep_features):\n  " + "\n  ".join(unused))
    stale = sorted(exempt - set(public) - _printed_for_students())
    assert not stale, f"KEPT_PUBLIC names what utils no longer has: {stale}"
    assert len(KEPT_PUBLIC) < 10, "keep the list of exceptions short"


def test_every_public_utils_helper_names_the_lesson_that_uses_it() -> None:
    """d2l's habit: a public function or class of utils says which lesson uses it."""
    import re

    silent = []
    for path in sorted(UTILS.rglob("*.py")):
        module = ".".join(path.relative_to(UTILS).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text("utf-8"), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_") \
                    and f"{module}.{node.name}" not in KEPT_PUBLIC \
                    and not re.search(r"\blessons?\b", ast.get_docstring(node) or "", re.I):
                silent.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not silent, "public utils helpers whose docstring names no lesson:\n  " + "\n  ".join(silent)


def test_the_lesson_library_and_the_tool_keep_to_their_size() -> None:
    """Issue 26: a lesson library a student can read (d2l's whole book: 3,515 lines) and a tool
    beside it; every line counts, blank ones included."""
    def lines(package: Path) -> int:
        return sum(len(p.read_text("utf-8").splitlines()) for p in package.rglob("*.py"))

    assert lines(UTILS) <= 2500, f"utils/ has {lines(UTILS)} lines, more than 2,500"
    assert lines(TOOL) <= 1500, f"deep_features/ has {lines(TOOL)} lines, more than 1,500"


def test_the_public_names_test_sees_module_level_names(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("A = 1\n_B = 2\nC: int = 3\ndef f():\n    D = 4\nclass E:\n    F = 5\n"
                      "def _g():\n    pass\n")
    assert _public_module_names(source) == ["A", "C", "f", "E"]


def _private_utils_uses(path: Path) -> list[str]:
    """``utils`` names with a leading underscore that a file imports or reads off a ``utils``
    module it imported (``from utils.x import _y``, ``x._y``)."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    modules: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "utils":
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname for a in node.names if a.asname and a.name.startswith("utils."))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in modules and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_the_tool_and_instructor_use_no_private_utils_name() -> None:
    """The tool and the instructor tooling use utils' public names only (tests and benchmarks,
    which measure its internals, may use the private ones)."""
    offenders = {str(p.relative_to(REPO)): found
                 for p in sorted([*TOOL.glob("*.py"), *(REPO / "instructor").glob("*.py")])
                 if (found := _private_utils_uses(p))}
    assert not offenders, f"private utils names used outside utils: {offenders}"


def test_the_tools_own_settings_agree_with_utils() -> None:
    """The settings the tool and instructor keep a copy of (they import no private utils name)."""
    import deep_features
    import deep_features.__main__ as cli
    import instructor.grade
    import instructor.run
    from deep_features import dask_features
    from utils import backbones, data, fast_inference, features, runtime

    assert deep_features.DEFAULT_BACKBONE == backbones._DEFAULT_BACKBONE
    assert cli.MIN_IMAGE_SIZE == backbones._MIN_IMAGE_SIZE
    assert cli.IMAGENET_CLASSES == backbones._IMAGENET_CLASSES
    assert cli.PRECISIONS == fast_inference._PRECISIONS
    assert cli.PRECISION_ENV_VAR == fast_inference._PRECISION_ENV_VAR
    assert dask_features.CHUNK_FILES == features._CHUNK_FILES
    assert dask_features.NO_SUCH_FILE == data._NO_SUCH_FILE
    assert instructor.run.ANSWERS_ENV_VAR == runtime._ANSWERS_ENV_VAR
    assert instructor.grade.CHECK_RESULTS_ENV_VAR == runtime._CHECK_RESULTS_ENV_VAR
