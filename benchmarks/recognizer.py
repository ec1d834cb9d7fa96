"""How good is a recognizer from a few photos, and how often does it say ``unknown``? (``deep-features
train-recognizer`` / ``recognize``, :mod:`deep_features.recognizer`.)

For 1, 2 and 5 photos per course class (several random draws each), a recognizer is fitted exactly as
``train-recognizer`` fits it (``Recognizer.from_features``) and measured four ways: its leave-one-out accuracy
(what ``train-recognizer`` prints; also without ``class_weight="balanced"``, lesson 6's pipeline as it
is), its accuracy on held-out course test photos (what leave-one-out estimates),
how many of those it calls ``unknown``, and how many of scikit-image's unrelated photos (coffee, rocket, ...) it
calls ``unknown``. Features are computed once per file (cached), so the draws cost only the fits.

    python benchmarks/recognizer.py [--draws 10] [--json out.json] [--data-dir DIR] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from _common import add_common_arguments, data_dir, load_average, log, table

UNRELATED = ("coffee", "rocket", "hubble_deep_field", "retina", "astronaut", "brick", "moon", "page", "coins",
             "grass", "gravel", "text", "logo", "camera")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--draws", type=int, default=10, help="random draws of the training photos per count")
    parser.add_argument("--pool", type=int, default=100, help="training files per class to draw from")
    parser.add_argument("--test", type=int, default=250, help="held-out test files per class")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        args.shots, args.draws, args.pool, args.test = [1, 2], 2, 4, 3

    import skimage.data

    from utils.features import featurize_files
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    from deep_features.recognizer import FEW_SHOT_C, UNKNOWN, Recognizer

    root = data_dir(args)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    pool = [sorted((root / "train" / c).glob("*.jpg"))[:args.pool] for c in classes]
    test = [sorted((root / "test" / c).glob("*.jpg"))[:args.test] for c in classes]
    photos = Path(skimage.data.__file__).parent
    unrelated = [next(photos.glob(f"{name}.*")) for name in UNRELATED]

    def features(paths: list[Path]) -> np.ndarray:
        found = featurize_files(paths, args.backbone, progress=False)
        assert not found.skipped, found.skipped
        return found.features

    pool_f = [features(p) for p in pool]
    test_f = np.concatenate([features(p) for p in test])
    test_y = np.repeat(np.arange(len(classes)), [len(p) for p in test])
    unrelated_f = features(unrelated)
    # lesson 6's pipeline without class weights: the same fit on equal counts, not under leave-one-out
    lesson6 = Pipeline([("l2", Normalizer()), ("classify", LogisticRegression(C=FEW_SHOT_C, max_iter=1000))])
    rng = np.random.default_rng(0)
    rows = []
    for shots in args.shots:
        runs = []
        for _ in range(args.draws):
            picks = [rng.choice(len(f), shots, replace=False) for f in pool_f]
            x = np.concatenate([f[i] for f, i in zip(pool_f, picks)])
            y = np.repeat(np.arange(len(classes)), shots)
            names = [f"{classes[c]}/{i}" for c, ii in enumerate(picks) for i in ii]
            recognizer = Recognizer.from_features(x, y, classes, names, args.backbone)
            unweighted = Recognizer.from_features(x, y, classes, names, args.backbone, classifier=lesson6)
            answers = recognizer.answer(test_f)
            said = [a[0] for a in answers]
            nearest = (recognizer.centroids @ (test_f / np.linalg.norm(test_f, axis=1, keepdims=True)).T).max(0)
            away = recognizer.answer(unrelated_f)
            runs.append({"leave_one_out": recognizer.loo_accuracy,
                         "leave_one_out_unweighted": unweighted.loo_accuracy,
                         "test": float(np.mean([s == classes[t] for s, t in zip(said, test_y)])),
                         "test_unknown": float(np.mean([s == UNKNOWN for s in said])),
                         "unrelated_unknown": float(np.mean([a[0] == UNKNOWN for a in away])),
                         "threshold": recognizer.threshold,
                         "held_out_similarity_p5": float(np.percentile(nearest, 5)),
                         "unrelated_similarity_max": float(max(a[1] for a in away if a[0] == UNKNOWN)
                                                           if any(a[0] == UNKNOWN for a in away) else np.nan)})
        rows.append({"photos per class": shots, "draws": args.draws,
                     **{k: float(np.mean([r[k] for r in runs])) for k in runs[0]},
                     "unrelated_unknown_min": float(min(r["unrelated_unknown"] for r in runs))})
    log(f"{args.backbone}, {len(classes)} classes; held-out: {len(test_y)} course test photos; unrelated: "
        f"{len(unrelated)} scikit-image photos ({', '.join(UNRELATED)})")
    header = list(rows[0])
    table("recognizer from a few photos per class: mean over the draws", header,
          [[r[h] for h in header] for r in rows])
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": platform.processor() or platform.machine(),
                                         "cpus": os.cpu_count(), "load_average": load_average()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
