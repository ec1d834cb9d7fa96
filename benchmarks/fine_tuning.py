"""Lesson 8's fine-tuning, run as the lesson itself under several settings: time against accuracy.

Each configuration executes ``notebooks/08_fine_tuning.ipynb`` with papermill through the course runner
(``instructor.run.run_course``), its parameters set from :data:`VARIANTS` and ``--seeds``, and reads the figures
from the metrics the notebook records (``instructor/metrics.py``, "Fine-tuning"). So the recipe measured is
the lesson's own code, not a copy. Only what the lesson's parameters cell declares can vary (image size, first
fine-tuned block, epochs, learning rate, seed, backbone); the seed also changes the lesson's fit/validation split.
Settings are compared on the validation split; the lesson also scores the test set, shown in its own columns.

    python benchmarks/fine_tuning.py                                  # every variant, seed 0
    python benchmarks/fine_tuning.py --variants default --seeds 0 1 2  # the lesson's default, three seeds
    python benchmarks/fine_tuning.py --tiny                           # a tiny run: checks that it works

Data: ``--data-dir``, else ``$DEEP_FEATURES_DATA``, else the course default. Writes
``benchmarks/results/fine_tuning.json`` (``--tiny``: nothing unless ``--json`` is given; rows of configurations
not run again are kept) and prints a Markdown table of the figures.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from _common import REPO, load_average

from instructor.run import run_course

RESULTS = REPO / "benchmarks" / "results" / "fine_tuning.json"
LESSON = REPO / "notebooks" / "08_fine_tuning.ipynb"
#: The lesson's parameters each variant changes (the rest keep the lesson's defaults).
VARIANTS: dict[str, dict] = {
    "default": {},
    "2 epochs": {"fine_tune_epochs": 2},
    "4 epochs": {"fine_tune_epochs": 4},
    "learning rate 5e-4": {"fine_tune_learning_rate": 5e-4},
    "learning rate 3e-4": {"fine_tune_learning_rate": 3e-4},
    "learning rate 3e-4, 4 epochs": {"fine_tune_learning_rate": 3e-4, "fine_tune_epochs": 4},
    "from block 12": {"first_top_block": 12},
    "last block only, 6 epochs": {"first_top_block": 15, "fine_tune_epochs": 6},
    "128 px": {"image_size": 128},
}
#: ``--tiny``: the course runner's ``--small`` sizes and one epoch.
TINY = {"n_train_per_class": 24, "n_test_per_class": 12, "image_size": 96, "fine_tune_epochs": 1}
#: (column, metric of the lesson) in the printed table.
FIGURES = [("probe validation", "probe_validation_accuracy"),
           ("fine-tuned validation", "fine_tuned_validation_accuracy"),
           ("probe test", "probe_accuracy"), ("fine-tuned test", "fine_tuned_accuracy"),
           ("fine-tune s", "fine_tune_seconds"), ("fine-tune CPU s", "fine_tune_cpu_seconds"),
           ("activations s", "activation_seconds"), ("notebook CPU s", "cpu_seconds")]
SETTINGS = ["backbone", "image_size", "first_top_block", "fine_tune_epochs", "fine_tune_learning_rate"]


def lesson_defaults() -> dict:
    """The values of the lesson's parameters cell."""
    import papermill

    return {k: ast.literal_eval(v["default"]) for k, v in papermill.inspect_notebook(str(LESSON)).items()}


def run(name: str, parameters: dict, build: Path) -> dict:
    """One execution of the lesson with ``parameters``: a row of its settings and figures."""
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 (stdout: the table)
    results = run_course(build, {**parameters, "model_path": str(build / "image_model.keras")},
                         notebooks=[LESSON], log=log)
    metrics = results["metrics"][LESSON.stem] or {}
    settings = {**lesson_defaults(), **parameters}
    row = {"variant": name, "seed": parameters["seed"], **{key: settings[key] for key in SETTINGS},
           "papermill s": results["run"]["notebook_seconds"].get(LESSON.stem),
           "n_validation": metrics.get("n_validation")}
    for column, key in FIGURES:
        value = metrics.get(key)
        row[column] = round(value, 3 if "accuracy" in key else 1) if isinstance(value, float) else value
    return row


def markdown(rows: list[dict]) -> str:
    columns = ["variant", "seed", *SETTINGS, *(c for c, _ in FIGURES), "papermill s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write(out: Path, rows: list[dict]) -> None:
    previous = json.loads(out.read_text())["runs"] if out.exists() else []
    again = {(r["variant"], r["seed"]) for r in rows}
    keep = [r for r in previous if (r["variant"], r["seed"]) not in again]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load average": round(load_average(), 1)},
        "lesson": LESSON.relative_to(REPO).as_posix(), "runs": keep + rows}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                        help=f"default: all of {list(VARIANTS)}")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="the lesson's seed (default: 0)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="course images (default: $DEEP_FEATURES_DATA, then the course's default)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="another parameter of the lesson for every run, e.g. backbone='efficientnet_lite1'")
    parser.add_argument("--tiny", action="store_true", help="the default at the small size, one epoch")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="keep the executed notebooks here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"where to write the rows (default: {RESULTS.relative_to(REPO)}, none with --tiny)")
    args = parser.parse_args(argv)
    base = {"data_dir": str(args.data_dir.resolve()) if args.data_dir else None, **(TINY if args.tiny else {})}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in lesson_defaults():
            parser.error(f"{LESSON.name} declares no parameter {key!r}: {sorted(lesson_defaults())}")
        base[key] = ast.literal_eval(value)
    names = ["default"] if args.tiny else args.variants
    out = args.json or (None if args.tiny else RESULTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fine-tuning-") as temp:
        build_root = args.build_dir or Path(temp)
        for name in names:
            for seed in args.seeds:
                build = build_root / f"{name.replace(' ', '-').replace(',', '')}-seed{seed}"
                rows.append(run(name, {**base, **VARIANTS[name], "seed": seed}, build))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if out is not None:  # after every run: a long run that is stopped keeps what it measured
                    write(out, rows)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
