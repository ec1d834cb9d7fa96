"""Command line: ``python -m utils {predict,similar,featurize,index,backbones} ...``.

Running the whole course, its site and notebook hygiene are instructor tools: ``python -m instructor``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .backbones import DEFAULT_BACKBONE, REGISTRY, BackboneUnavailableError, UnknownBackboneError
from .data import DataNotFoundError, ImageLoadError
from .dask_features import DaskClusterError
from .fast_inference import PRECISION_ENV_VAR, PRECISIONS
from .index import EXACT_MAX_IMAGES, INDEX_KINDS, IndexBusyError, looks_like_index


def _predict(args: argparse.Namespace) -> int:
    from .backbones import predict_imagenet
    from .data import load_image

    image = load_image(args.image)
    for rank, (index, name, probability) in enumerate(predict_imagenet(image, args.backbone, args.top)[0], 1):
        print(f"{rank}. {index:4d} {name:<30s} {probability:6.1%}")
    return 0


def _similar(args: argparse.Namespace) -> int:
    from .features import report_skipped
    from .retrieval import find_similar, find_similar_in_index

    if looks_like_index(args.folder):
        for result in find_similar_in_index(args.query, args.folder, args.top, args.backbone, args.image_size,
                                            precision=args.precision):
            print(f"{result.distance:8.3f}  {result.path}")
        return 0
    results, skipped = find_similar(args.query, args.folder, args.top, args.backbone, args.image_size,
                                    precision=args.precision)
    for result in results:
        print(f"{result.distance:8.3f}  {result.path}")
    report_skipped(skipped)
    return 0


def _featurize(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import list_images
    from .features import featurize_files, report_skipped

    files = list_images(args.folder)
    if not files:
        raise ValueError(f"{args.folder}: no image files to featurize; nothing written")
    if args.workers or args.scheduler:
        from .dask_features import featurize_files_on_dask

        result = featurize_files_on_dask(files, args.backbone, args.image_size, args.precision,
                                         workers=args.workers, scheduler=args.scheduler, progress=True)
    else:
        result = featurize_files(files, args.backbone, args.image_size, progress=True,
                                 precision=args.precision)
    report_skipped(result.skipped)
    if not result.paths:
        raise ValueError(f"{args.folder}: none of the {len(files)} image files could be read; nothing "
                         f"written to {args.output}")
    np.savez(args.output, features=result.features, paths=np.asarray([str(p) for p in result.paths]))
    print(f"{len(result.paths)} images -> {result.features.shape} features in {args.output}; "
          f"{len(result.skipped)} skipped")
    return 0


def _index(args: argparse.Namespace) -> int:
    from .index import build_index

    update = build_index(args.folder, args.output, args.backbone, args.image_size, args.precision, args.kind,
                         workers=args.workers, scheduler=args.scheduler, progress=True, report=True)
    for note in update.notes:
        print(f"repaired: {note}", file=sys.stderr)
    index = update.index
    how = "built" if update.rebuilt else "updated in place"
    print(f"{len(index)} images in {index.folder} ({index.kind}, {how}): {update.added} added, "
          f"{update.removed} removed, {update.kept} unchanged; {len(update.skipped)} skipped; "
          f"{index.settings.describe()}")
    return 0


def _backbones(_: argparse.Namespace) -> int:
    from .backbones import available_backbones

    here = set(available_backbones())
    for name, spec in REGISTRY.items():
        mark = "ready" if name in here else ("not installed" if spec.offline else "needs download")
        print(f"{name:<20s} {spec.input_size:4d}px {spec.feature_dim:5d}-d  {mark:<15s} {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m utils``."""
    parser = argparse.ArgumentParser(prog="python -m utils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_backbone(p: argparse.ArgumentParser, backbone: str | None = DEFAULT_BACKBONE) -> argparse.ArgumentParser:
        default = backbone or f"{DEFAULT_BACKBONE}; an index folder's own"
        p.add_argument("--backbone", default=backbone, help=f"one of: {', '.join(REGISTRY)} (default: {default})")
        p.add_argument("--image-size", type=int, default=None, help="pixels (default: the backbone's own)")
        p.add_argument("--precision", choices=PRECISIONS, default=None,
                       help=f"inference precision (default: ${PRECISION_ENV_VAR} or float32); int8 is 2-3x faster "
                            "on CPUs with VNNI, falls back to float32 elsewhere")
        return p

    p = sub.add_parser("predict", help="top-K ImageNet classes of a photo")
    p.add_argument("image", type=Path)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"one of: {', '.join(REGISTRY)}")
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(run=_predict)

    def with_dask(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--workers", type=int, default=None,
                       help="featurize on a Dask LocalCluster of N worker processes (default: this process)")
        p.add_argument("--scheduler", default=None,
                       help="featurize on an existing Dask cluster at this address (e.g. tcp://host:8786)")
        return p

    p = with_backbone(sub.add_parser("similar", help="the images in a folder, or an index, closest to a query"),
                      backbone=None)
    p.add_argument("query", type=Path)
    p.add_argument("folder", type=Path, help="a folder of images, or an index folder (python -m utils index)")
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(run=_similar)

    p = with_dask(with_backbone(sub.add_parser("featurize",
                                               help="deep features of every image in a folder, to a .npz")))
    p.add_argument("folder", type=Path)
    p.add_argument("--output", type=Path, default=Path("features.npz"))
    p.set_defaults(run=_featurize)

    p = with_dask(with_backbone(sub.add_parser(
        "index", help="build or update a faiss index of a folder's images, for `similar QUERY INDEX_DIR`"),
        backbone=None))  # an update keeps the index's settings unless told otherwise
    p.add_argument("folder", type=Path)
    p.add_argument("--output", type=Path, required=True, help="the index folder (updated if it exists)")
    p.add_argument("--kind", choices=INDEX_KINDS, default=None,
                   help=f"exact (IndexFlatIP), hnsw (IndexHNSWFlat) or auto: exact up to {EXACT_MAX_IMAGES} "
                        "images, hnsw above (default: the index's own, else auto)")
    p.set_defaults(run=_index)

    sub.add_parser("backbones", help="list the backbones and whether they are ready here").set_defaults(run=_backbones)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        if args.command in {"featurize", "similar", "index"}:
            print("\ninterrupted: the finished chunks are cached, rerun the same command to resume", file=sys.stderr)
        else:
            print("\ninterrupted", file=sys.stderr)
        return 130
    except (UnknownBackboneError, BackboneUnavailableError, DataNotFoundError, ImageLoadError,
            FileNotFoundError, ValueError, IndexBusyError, DaskClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
