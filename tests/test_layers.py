"""utils/ imports one way (runtime -> data -> backbones -> ... -> the rest), and never the instructor tooling.

An AST walk over utils/*.py collects every import of another utils module -- at module top AND inside functions,
where a cycle hides best -- and the resulting graph must have no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UTILS = REPO / "utils"
TOOLING = {"papermill", "nbconvert", "nbformat", "nbclient", "selenium", "jupyter_book", "nbstripout", "instructor"}


def _imports(path: Path) -> set[str]:
    """The utils modules (and top-level packages) one file imports, wherever the import statement is."""
    module = path.stem
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .data import x
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import data, features
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("utils."):
                found.add(node.module.split(".")[1])
            elif node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.add(parts[1] if parts[0] == "utils" and len(parts) > 1 else parts[0])
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in UTILS.glob("*.py")}
    return {p.stem: _imports(p) & modules for p in UTILS.glob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_utils_modules_import_one_way() -> None:
    graph = _graph()
    assert graph["runtime"] == set(), f"runtime is the bottom layer, imports {graph['runtime']}"
    assert "backbones" not in graph["data"], "data sits below backbones"
    assert _cycle(graph) is None, f"import cycle in utils: {' -> '.join(_cycle(graph))}"


def test_utils_source_never_names_the_instructor_tooling() -> None:
    for path in UTILS.glob("*.py"):
        bad = _imports(path) & TOOLING
        assert not bad, f"{path.name} imports {bad}: instructor tooling belongs in instructor/"


def test_import_utils_loads_no_tooling() -> None:
    code = ("import sys, utils, utils.notebook, utils.checks, utils.plots; "
            f"bad = {sorted(TOOLING)!r}; loaded = [m for m in bad if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
