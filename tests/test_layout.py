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


def test_tool_code_lines_fit_in_100_columns() -> None:
    long = [f"{p.name}:{n}" for p in sorted(TOOL.glob("*.py"))
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
