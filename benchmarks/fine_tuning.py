"""Compare fine-tuning settings of lesson 7 on the VALIDATION split only: one papermill run of
notebooks/07_fine_tuning.ipynb per setting, with ``score_test=False`` (the test set stays untouched).

    PYTHONPATH=. python benchmarks/fine_tuning.py                      # every variant, in sequence
    PYTHONPATH=. python benchmarks/fine_tuning.py "lite0 block 11 224px bf16" --score-test   # one, with test

Each finished variant is merged into ``benchmarks/results/fine_tuning.json`` (validation accuracy, epochs, wall and
CPU seconds of the notebook's kernel, load average), which lesson 7's closing note displays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "fine_tuning.json"

# Every variant below changes these settings (the notebook's default until lr 1e-3 won on validation) on top of
# the notebook's other defaults: lite0, 224 px, block 11, float32, flip TTA, shift 0.1, label smoothing 0.1, cosine.
BASE = {"fine_tune_learning_rate": 1e-4, "fine_tune_epochs": 8}
VARIANTS: dict[str, dict] = {
    "lite0 block 11 224px": {},
    "lite0 block 11 224px no shift": {"shift_augmentation": 0.0},
    "lite0 block 8 224px": {"first_top_block": 8},
    "lite2 block 15 260px": {"backbone": "efficientnet_lite2", "image_size": 260, "first_top_block": 15},
    "lite0 block 11 224px lr 3e-4": {"fine_tune_learning_rate": 3e-4},
    "lite0 block 15 224px": {"first_top_block": 15},
    "lite0 block 11 160px": {"image_size": 160},
    "lite0 block 11 224px bf16": {"mixed_precision": "mixed_bfloat16"},
    "lite0 block 11 224px no smoothing no shift": {"label_smoothing": 0.0, "shift_augmentation": 0.0},
    "lite0 block 11 224px old recipe (no smoothing, no shift, constant lr, 4 epochs)": {
        "label_smoothing": 0.0, "shift_augmentation": 0.0, "lr_schedule": "constant", "fine_tune_epochs": 4},
    "lite0 block 11 224px lr 1e-3": {"fine_tune_learning_rate": 1e-3},
    "lite0 block 11 224px 12 epochs patience 3": {"fine_tune_epochs": 12, "patience": 3},
    "lite0 block 11 224px lr 3e-4 12 epochs patience 3": {"fine_tune_learning_rate": 3e-4, "fine_tune_epochs": 12,
                                                         "patience": 3},
    "lite0 block 11 224px lr 1e-3 6 epochs": {"fine_tune_learning_rate": 1e-3, "fine_tune_epochs": 6},
    "lite0 block 8 224px lr 1e-3 4 epochs": {"first_top_block": 8, "fine_tune_learning_rate": 1e-3,
                                            "fine_tune_epochs": 4},
    "lite1 top two stages 240px": {"backbone": "efficientnet_lite1", "image_size": 240},
    "lite1 top two stages 240px lr 1e-3 6 epochs": {"backbone": "efficientnet_lite1", "image_size": 240,
                                                   "fine_tune_learning_rate": 1e-3, "fine_tune_epochs": 6},
}


def run(name: str, parameters: dict, score_test: bool) -> dict:
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        metrics_path = Path(tmp) / "metrics.json"
        start = time.perf_counter()
        papermill.execute_notebook(str(REPO / "notebooks" / "07_fine_tuning.ipynb"), str(Path(tmp) / "out.ipynb"),
                                   parameters={**parameters, "score_test": score_test,
                                               "metrics_path": str(metrics_path)},
                                   cwd=str(REPO / "notebooks"), progress_bar=False)
        m = json.loads(metrics_path.read_text())
    row = {"variant": name, "validation accuracy": round(m["fine_tuned_validation_accuracy"], 3),
           "best epoch validation (no flip TTA)": round(m["best_epoch_validation_accuracy"], 3),
           "frozen head validation": round(m["frozen_head_validation_accuracy"], 3),
           "epochs": m["fine_tune_epochs_run"], "fine-tune s": round(m["fine_tune_seconds"]),
           "fine-tune CPU s": round(m["fine_tune_cpu_seconds"]), "notebook s": round(time.perf_counter() - start),
           "kernel CPU s": round(m["cpu_seconds"]), "load avg": round(os.getloadavg()[0], 1),
           "test accuracy": round(m["fine_tuned_accuracy"], 3) if score_test else None,
           "linear probe test accuracy": round(m["linear_probe_accuracy"], 3) if score_test else None}
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help=f"default: all of {list(VARIANTS)}")
    parser.add_argument("--score-test", action="store_true", help="also score the test set (chosen variants only)")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    for name in args.variants or VARIANTS:
        row = run(name, {**BASE, **VARIANTS[name]}, args.score_test)
        rows = json.loads(RESULTS.read_text())["variants"] if RESULTS.exists() else []
        previous = next((r for r in rows if r["variant"] == name), {})
        if row["test accuracy"] is None:  # keep a test figure measured earlier for the same variant
            row["test accuracy"] = previous.get("test accuracy")
            row["linear probe test accuracy"] = previous.get("linear probe test accuracy")
        rows = [r for r in rows if r["variant"] != name] + [row]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"cpu": os.cpu_count(), "variants": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
