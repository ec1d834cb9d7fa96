"""The command line: ``deep-features COMMAND ...``, also ``python -m deep_features COMMAND ...``."""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from utils.backbones import (REGISTRY, BackboneUnavailableError, UnknownBackboneError,
                             available_backbones, imagenet_class_names, load_backbone)
from utils.data import list_images, load_image, resize_batch

from . import DEFAULT_BACKBONE
from .dask_features import DaskClusterError, featurize, report_skipped
from .index import (EXACT_MAX_IMAGES, INDEX_KINDS, METRIC, METRICS, IndexBusyError, being_built,
                    build_index, looks_like_index)

PROG = "deep-features"
DEBUG_ENV_VAR = "DEEP_FEATURES_DEBUG"  # set: a command's unexpected error shows its traceback
# what the featurizer accepts (utils.backbones, utils.fast_inference: tests/test_layout.py checks)
MIN_IMAGE_SIZE = 32  # pixels
PRECISIONS = ("float32", "int8")
PRECISION_ENV_VAR = "DEEP_FEATURES_PRECISION"
IMAGENET_CLASSES = 1000


def _whole(minimum: int = 1, maximum: int | None = None, unit: str = ""):
    """An argparse ``type``: a whole number from ``minimum`` (to ``maximum``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"must be {bounds}{unit}, got {value}")
        return value

    return parse


def _checked_query(query: Path) -> Path:
    if not query.exists():
        raise FileNotFoundError(f"{query}: no such file")
    if not query.is_file():
        raise ValueError(f"{query} is a folder, not an image file (the query comes first)")
    return query


def _npz_output(output: Path) -> Path:
    """The file ``featurize --output`` writes (np.savez adds ``.npz``): not a folder, in one."""
    written = output if output.name.endswith(".npz") else output.with_name(output.name + ".npz")
    for path in dict.fromkeys((output, written)):
        if path.is_dir():
            example = path / "features.npz"
            raise ValueError(f"--output {path} is a folder; name a file, e.g. {example}")
    if not written.parent.is_dir():
        what = "is not a folder" if written.parent.exists() else "does not exist"
        raise FileNotFoundError(f"--output {output}: the folder {written.parent} {what}; "
                                "create it first")
    return written


def predict_imagenet(images, backbone: str = DEFAULT_BACKBONE,
                     top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``top`` ImageNet classes ``(index, name, probability)`` of each image (RGB arrays)."""
    if not 1 <= top <= IMAGENET_CLASSES:
        raise ValueError(f"top must be from 1 to {IMAGENET_CLASSES} (the classes), got {top}")
    bb = load_backbone(backbone)
    if bb.classifier is None:
        raise ValueError(f"{backbone} has no ImageNet classifier at this image size")
    batch = resize_batch(images, bb.input_size).astype("float32")
    probabilities = np.asarray(bb.classifier(batch, training=False))
    names = imagenet_class_names()
    return [[(int(i), names[i], float(row[i])) for i in np.argsort(row)[::-1][:top]]
            for row in probabilities]


def _predict(args: argparse.Namespace) -> None:
    image = load_image(args.image)  # a mistyped path fails here, before the model loads
    top = predict_imagenet(image, args.backbone, args.top)[0]
    for rank, (index, name, probability) in enumerate(top, 1):
        print(f"{rank}. {index:4d} {name:<30s} {probability:6.1%}")


def _similar(args: argparse.Namespace) -> None:
    from .retrieval import search_folder, search_index
    query, folder = _checked_query(args.query), args.folder
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder of images or an index folder")
    if looks_like_index(folder) or being_built(folder):  # the remains of one: says what is wrong
        search = search_index(query, folder, args.top, args.backbone, args.image_size,
                              args.precision, args.metric)  # no --metric: the index's own
    else:
        search = search_folder(query, folder, args.top, args.backbone, args.image_size,
                               precision=args.precision, metric=args.metric or METRIC)
    if args.json:
        print(json.dumps(search.as_json(), indent=2))
    else:
        print(search.header())
        for result in search.results:
            print(f"{result.distance:8.3f}  {result.path}")  # distances are >= 0: never -0.000
    report_skipped(search.skipped)
    if search.shortfall():
        print(f"note: {search.shortfall()}", file=sys.stderr)


def _featurize(args: argparse.Namespace) -> None:
    output = _npz_output(args.output)
    files = list_images(args.folder)
    if not files:
        raise ValueError(f"{args.folder}: no image files to featurize; nothing written")
    result = featurize(files, args.backbone, args.image_size, args.precision, workers=args.workers,
                       scheduler=args.scheduler, progress=True, report=True)
    if not result.paths:
        raise ValueError(f"{args.folder}: none of the {len(files)} image files could be read; "
                         f"nothing written to {output}")
    np.savez(output, features=result.features, paths=np.asarray([str(p) for p in result.paths]))
    print(f"{len(result.paths)} images -> {result.features.shape} features in {output}; "
          f"{len(result.skipped)} skipped")


def _index(args: argparse.Namespace) -> None:
    update = build_index(args.folder, args.output, args.backbone, args.image_size, args.precision,
                         args.kind, workers=args.workers, scheduler=args.scheduler, progress=True,
                         report=True, metric=args.metric)
    for note in update.notes:
        print(f"repaired: {note}", file=sys.stderr)
    index = update.index
    how = "built" if update.rebuilt else "updated in place"
    print(f"{len(index)} images in {index.folder} ({index.kind}, {how}): {update.added} added, "
          f"{update.removed} removed, {update.kept} unchanged; {len(update.skipped)} skipped; "
          f"{index.settings.describe()}")


def _train_recognizer(args: argparse.Namespace) -> None:
    from .recognizer import check_output_file, report_lines, train_recognizer
    output = check_output_file(args.output)  # before any photo is read
    recognizer = train_recognizer(args.folder, args.backbone, args.image_size, progress=None)
    for path, reason in recognizer.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for line in report_lines(recognizer):
        print(line)
    recognizer.save(output)
    print(f"saved to {output} ({recognizer.describe()})")


def _recognize(args: argparse.Namespace) -> int:
    from .recognizer import Recognizer, RecognizerError
    recognizer = Recognizer.load(args.recognizer)
    missing = [p for p in args.photos if not p.is_file()]
    if missing and len(missing) == len(args.photos):
        raise RecognizerError(f"{missing[0]}: no such photo file" if len(missing) == 1 else
                              f"none of the {len(missing)} photos exist (first: {missing[0]})")
    results, skipped = recognizer.recognize(args.photos)
    if args.json:
        rows = [{"path": str(r.path), "class": r.label, "similarity": round(r.similarity, 6),
                 "nearest": r.nearest} for r in results]
        print(json.dumps({"backbone": recognizer.backbone, "image_size": recognizer.image_size,
                          "score": "cosine similarity to the class centroid",
                          "threshold": recognizer.threshold, "classes": recognizer.class_names,
                          "results": rows,
                          "skipped": [{"path": str(p), "reason": why} for p, why in skipped]},
                         indent=2))
    else:
        print(f"# class, cosine similarity to its centroid (unknown below "
              f"{recognizer.threshold:.3f}), photo; {recognizer.backbone} at "
              f"{recognizer.image_size} px")
        width = max(len(c) for c in [*recognizer.class_names, "unknown"])
        for r in results:
            note = f"  (nearest: {r.nearest})" if r.label == "unknown" else ""
            print(f"{r.label:<{width}s}  {max(r.similarity, 0.0):5.3f}  {r.path}{note}")
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not results:
        print("error: none of the photos could be read", file=sys.stderr)
        return 2
    return 1 if skipped else 0


def _backbones(_: argparse.Namespace) -> None:
    here = set(available_backbones())
    for name, spec in REGISTRY.items():
        mark = "ready" if name in here else ("not installed" if spec.offline else "needs download")
        print(f"{name:<20s} {spec.input_size:4d}px {spec.feature_dim:5d}-d  {mark:<15s} "
              f"{spec.description}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``deep-features``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run, help: str, *options: str, backbone: str | None = DEFAULT_BACKBONE):
        """A subcommand running ``run`` with the shared ``options``: its ``add_argument``."""
        p = sub.add_parser(name, help=help)
        p.set_defaults(run=run)
        add = p.add_argument
        if "backbone" in options:
            default = backbone or f"{DEFAULT_BACKBONE}; an index folder's own"
            add("--backbone", default=backbone,
                help=f"one of: {', '.join(REGISTRY)} (default: {default})")
        if "image-size" in options:
            add("--image-size", type=_whole(MIN_IMAGE_SIZE, unit=" pixels"),
                help="pixels (default: the backbone's own)")
        if "precision" in options:
            add("--precision", choices=PRECISIONS,
                help=f"inference precision (default: ${PRECISION_ENV_VAR} or float32); int8 is "
                     "2-3x faster on CPUs with VNNI, falls back to float32 elsewhere")
        if "dask" in options:
            add("--workers", type=_whole(1), help="featurize on a Dask LocalCluster of N worker "
                "processes (default: this process)")
            add("--scheduler", help="featurize on an existing Dask cluster at this address (e.g. "
                "tcp://host:8786)")
        return add

    features = ("backbone", "image-size", "precision")
    add = command("predict", _predict, "top-K ImageNet classes of a photo", "backbone")
    add("image", type=Path)
    add("--top", type=_whole(1, IMAGENET_CLASSES), default=5,
        help=f"the number of classes shown, 1 to {IMAGENET_CLASSES} (default: 5)")

    add = command("similar", _similar, "the images in a folder, or an index, closest to a query",
                  *features, backbone=None)
    add("query", type=Path)
    add("folder", type=Path, help=f"a folder of images, or an index folder ({PROG} index)")
    add("--top", type=_whole(1), default=5, help="the number of results (default: 5)")
    add("--metric", choices=METRICS,
        help=f"the distance ranked by (default: {METRIC} on a folder, an index's own)")
    add("--json", action="store_true",
        help="print one JSON object (metric, backbone, image_size, query, results)")

    add = command("featurize", _featurize, "deep features of every image in a folder, to a .npz",
                  *features, "dask")
    add("folder", type=Path)
    add("--output", type=Path, default=Path("features.npz"),
        help="the .npz file (.npz is added to a name without it; its folder must exist)")

    add = command("index", _index, "build or update a faiss index of a folder's images, for "
                  "`similar QUERY INDEX_DIR`", *features, "dask", backbone=None)
    add("folder", type=Path)
    add("--output", type=Path, required=True, help="the index folder (updated if it exists)")
    add("--kind", choices=INDEX_KINDS,
        help=f"exact (IndexFlatIP, IndexFlatL2 for euclidean), hnsw (IndexHNSWFlat) or auto: exact "
             f"up to {EXACT_MAX_IMAGES} images, hnsw above (default: the index's own, else auto)")
    add("--metric", choices=METRICS, help=f"the distance the index ranks by, and `similar` on it "
        f"(default: an existing index's own, else {METRIC})")

    add = command("train-recognizer", _train_recognizer,
                  "a recognizer from FOLDER/<class>/<photos>, saved to a file",
                  "backbone", "image-size")
    add("folder", type=Path,
        help="one sub-folder per class with its photos (one photo per class works)")
    add("--output", type=Path, required=True,
        help="the recognizer file to write, e.g. my.recognizer")

    add = command("recognize", _recognize, "classify photos with a recognizer file")
    add("recognizer", type=Path, help="a file written by train-recognizer")
    add("photos", type=Path, nargs="+", help="photo files (JPEG, PNG, HEIC, ...)")
    add("--json", action="store_true", help="machine-readable results on stdout")

    command("backbones", _backbones, "list the backbones and whether they are ready here")
    return parser


RESUMABLE = {"featurize", "similar", "index", "train-recognizer"}  # features cached chunk by chunk


def main(argv: list[str] | None = None) -> int:
    """Run one command: 0 when it worked, 2 for a one-line error, 3 for a bug, 130 when
    interrupted."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        resume = ": the finished chunks are cached, rerun the same command to resume"
        print(f"\ninterrupted{resume if args.command in RESUMABLE else ''}", file=sys.stderr)
        return 130
    # unreadable images, missing files, a full disk: ValueError and OSError, in their own words
    except (UnknownBackboneError, BackboneUnavailableError, IndexBusyError, DaskClusterError,
            OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get(DEBUG_ENV_VAR):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (a bug: rerun with {DEBUG_ENV_VAR}=1 "
              "for the traceback, and report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
