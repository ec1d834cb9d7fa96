"""The benchmarks cannot rot: each script with a ``--tiny`` mode runs in it on the fixture images, they import
only public names of ``utils``, and no tracked file names a path of one machine.

Nothing here asserts a speed: a tiny run's figures mean nothing, it only proves the script still works.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SMALL_DATA = REPO / "tests" / "data" / "cifar10-4class-small"
TINY = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and "--tiny" in p.read_text())
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|home|root)/")


def test_every_benchmark_script_has_a_tiny_mode() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {p.name for p in TINY}


@pytest.mark.parametrize("script", TINY, ids=[p.name for p in TINY])
def test_benchmark_runs_in_its_tiny_mode(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("DEEP_FEATURES_DATA", None)  # the fixture images, given by --data-dir as a user would
    done = subprocess.run([sys.executable, str(script), "--tiny", "--data-dir", str(SMALL_DATA)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "a benchmark prints its figures"


def _private_uses(path: Path) -> list[str]:
    """``from utils.x import _name``, ``utils.x._name`` and ``module._name`` on a module imported from utils."""
    tree = ast.parse(path.read_text(), str(path))
    utils_names: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "utils":
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"from {node.module} import {alias.name}")
                utils_names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            utils_names.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("utils"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in utils_names):
            found.append(f"{node.value.id}.{node.attr}")
    for text in re.findall(r'r?"""(.*?)"""', path.read_text(), re.S):  # code run in subprocesses
        found += [f"(subprocess code) {m}" for m in re.findall(r"from utils\S* import .*\b_\w+", text)]
    return found


#: The internals the benchmarks measure (the lesson library's public names are what the lessons call, so
#: a benchmark of the featurizer's runtimes reaches below them, as a test does). Shrink, never grow.
MEASURED_INTERNALS = {
    "featurize.py": {"fast_inference._keras_step", "fast_inference._TFLiteRunner", "fast_inference._convert_to_tflite",
                     "fast_inference._tflite_featurizer",
                     "fast_inference._load_or_convert", "backbones._lite_checkpoint_path"},
    "precision.py": {"fast_inference._TFLiteRunner", "fast_inference._convert_to_tflite",
                     "fast_inference._calibration_images", "runtime._cpu_flags"},
}


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_only_public_utils_or_the_internals_they_measure(script: Path) -> None:
    def named(use: str) -> str:  # "from utils.fast_inference import _x" -> "fast_inference._x"
        if use.startswith("from utils."):
            module, _, name = use[len("from utils."):].partition(" import ")
            return f"{module}.{name}"
        return use

    allowed = MEASURED_INTERNALS.get(script.name, set())
    assert [use for use in _private_uses(script) if named(use) not in allowed] == []


def test_the_private_use_finder_finds_them(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from utils import features\nfrom utils.data import _decode_error\nfeatures._inference_step(1)\n")
    assert _private_uses(bad) == ["from utils.data import _decode_error", "features._inference_step"]


def test_no_absolute_machine_path_in_tracked_files() -> None:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    offenders = []
    for name in tracked.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file() or path.suffix in {".jpg", ".png", ".npz", ".npy"}:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}" for m in MACHINE_PATH.finditer(text)]
    assert offenders == [], "absolute paths of one machine (use --data-dir, $DEEP_FEATURES_DATA, REPO-relative)"
