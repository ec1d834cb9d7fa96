"""Datasets and image loading for the lessons: the CIFAR-10 course split (:func:`load_course_data`
says from where), image folders, robust single images."""

import contextlib
import io
import os
import pickle
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .cache import _content_hash, _entry_path, _read_entry, _write_entry

with contextlib.suppress(ImportError):  # without pillow-heif a .heic file is "not an image"
    from pillow_heif import register_heif_opener  # iPhone photos (HEIC/HEIF) for Image.open
    register_heif_opener()

_COURSE_CLASSES: tuple[str, ...] = ("automobile", "bird", "cat", "dog")
# The classic course split: these training images, and all 1000 CIFAR-10 test images per class.
_COURSE_TRAIN_COUNTS: dict[str, int] = {"automobile": 509, "bird": 478, "cat": 509, "dog": 509}
_CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                                     "dog", "frog", "horse", "ship", "truck")
_DATA_ENV_VAR = "DEEP_FEATURES_DATA"
_REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "cifar10"
_IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                               ".ppm", ".pgm", ".heic", ".heif"})
# Refuse more pixels than this (decompression bombs); a 12000 x 12000 photo is still fine.
_MAX_IMAGE_PIXELS = 150_000_000
# The first words of every _ImageLoadError reason: what went wrong, in the user's terms.
_NO_SUCH_FILE = "no such file"
_EMPTY_FILE = "empty file"
_NOT_AN_IMAGE = "not an image"
_CORRUPT = "truncated/corrupt image"
_TOO_LARGE = "too large (decompression-bomb limit)"


class _DataNotFoundError(FileNotFoundError):
    """No course data locally and no way to download it."""


class _ImageLoadError(ValueError):
    """A file that is not a readable image: ``path`` (or None) and the ``reason``."""
    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")


@dataclass
class _ImageSet:
    """Labelled images: uint8 ``images`` (N, H, W, 3) and/or ``paths``, unreadable ``skipped``."""
    labels: np.ndarray
    class_names: list[str]
    images: np.ndarray | None = None
    paths: list[Path] | None = None
    source: str = ""
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode -> 8-bit RGB: 16-bit and float rescaled, transparency composited on white."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _opened(source: Path | bytes) -> Iterator[Image.Image]:
    """An image file (or bytes) opened, header only; any failure (or over :data:`_MAX_IMAGE_PIXELS`
    pixels) raises ``_ImageLoadError``. Pillow's process-wide limit is lifted, under a lock."""
    where = source if isinstance(source, Path) else "<bytes>"
    if isinstance(source, Path) and not source.is_file():
        raise _ImageLoadError(where, _NO_SUCH_FILE)
    if (source.stat().st_size if isinstance(source, Path) else len(source)) == 0:
        raise _ImageLoadError(where, f"{_EMPTY_FILE} (0 bytes)")
    try:
        with _PILLOW_LIMIT_LOCK:
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
            finally:
                Image.MAX_IMAGE_PIXELS = previous
        with image:
            if image.width * image.height > _MAX_IMAGE_PIXELS:
                raise _ImageLoadError(where, f"{_TOO_LARGE}: {image.width}x{image.height} pixels, "
                                             f"limit {_MAX_IMAGE_PIXELS:,}")
            yield image
    except _ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise _ImageLoadError(where, f"{_NOT_AN_IMAGE} (no image format Pillow can read)") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        too_large = isinstance(exc, Image.DecompressionBombError) or "too large" in str(exc).lower()
        raise _ImageLoadError(where, f"{_TOO_LARGE}: {exc}" if too_large
                              else f"{_CORRUPT} ({exc})") from exc


def load_image(path: str | Path | None = None, size: int | None = None, *,
               data: bytes | None = None) -> np.ndarray:
    """An image file (or its bytes, ``data=``) as upright uint8 RGB (H, W, 3), resized to ``size``
    x ``size`` if given; raises ``_ImageLoadError`` with the reason. Used in lessons 4, 6, 8, 9."""
    if (path is None) == (data is None):
        raise TypeError("load_image needs a path or data=bytes (not both)")
    source: Path | bytes = Path(path) if path is not None else bytes(data)  # type: ignore[arg-type]
    where = source if isinstance(source, Path) else "<bytes>"
    with _opened(source) as image:
        if size is not None and image.format == "JPEG":
            image.draft("RGB", (size, size))  # decode big JPEGs at a reduced scale: much faster
        image = ImageOps.exif_transpose(image)
        image.load()
        try:
            rgb = _to_rgb(image)
        except (ValueError, OSError) as exc:  # e.g. LAB, HSV or CMYK with alpha
            raise _ImageLoadError(where, f"unsupported mode {image.mode!r} ({exc})") from exc
    if min(rgb.size) < 1:
        raise _ImageLoadError(where, f"{_CORRUPT} (no pixels)")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8)


def resize_batch(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """RGB images (a batch or a list of arrays) resized to (N, size, size, 3) uint8 (lesson 1)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected RGB images of shape (H, W, 3), got {image.shape}")
        out[i] = image if image.shape[:2] == (size, size) else np.asarray(
            Image.fromarray(image.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))
    return out


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files (by extension) under ``folder``, sorted, hidden ones ignored (lesson 9)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    found: list[str] = []
    pending = [str(folder)]
    while pending:  # os.scandir and strings: 24,000 images list in a fraction of a second
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_file() and os.path.splitext(entry.name)[1].lower() in _IMAGE_EXTENSIONS:
                    found.append(entry.path)
                elif recursive and entry.is_dir():
                    pending.append(entry.path)
    return [Path(p) for p in sorted(found, key=lambda p: p.split(os.sep))]  # pathlib's order


def load_image_folder(root: str | Path, min_classes: int = 1,
                      check_images: bool = True) -> _ImageSet:
    """Index ``root/<class>/<image>`` files (lesson 6): unreadable ones (each opened with
    ``check_images``) in ``skipped``, empty classes left out with a warning."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder. Make one sub-folder per class with its "
                                f"images inside, e.g. {root}/cat/1.jpg, {root}/dog/1.jpg")
    paths, labels, class_names, skipped, empty = [], [], [], [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        good = []
        for f in sorted(class_dir.rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.suffix.lower() not in _IMAGE_EXTENSIONS:
                skipped.append((f, "not an image file extension"))
                continue
            try:
                if check_images:  # header, size and structure; decoding is the featurizer's
                    with _opened(f) as image:
                        image.verify()
                good.append(f)
            except _ImageLoadError as exc:
                skipped.append((f, exc.reason))
        if not good:
            empty.append(class_dir.name)
            continue
        labels += [len(class_names)] * len(good)
        class_names.append(class_dir.name)
        paths += good
    if empty:
        warnings.warn(f"{root}: skipped class folders with no readable images: {', '.join(empty)}",
                      stacklevel=2)
    if len(class_names) < min_classes:
        found = f"found {len(class_names)} ({', '.join(class_names) or 'none'})"
        raise ValueError(f"{root}: need at least {min_classes} class folders with images, "
                         f"{found}. Put each class's images in its own sub-folder, e.g. "
                         f"{root}/cat/, {root}/dog/")
    return _ImageSet(np.asarray(labels, dtype=np.int64), class_names, paths=paths,
                     source=f"image folder {root}", skipped=skipped)


def _find_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local CIFAR-10 source: ``data_dir``, $DEEP_FEATURES_DATA, data/cifar10/, or None."""
    from_env = os.environ.get(_DATA_ENV_VAR)
    if data_dir is not None or from_env:
        path = Path(data_dir if data_dir is not None else from_env).expanduser()  # type: ignore
        if not path.is_dir():
            name = f"data_dir {path}" if data_dir is not None else f"${_DATA_ENV_VAR}={from_env}"
            raise _DataNotFoundError(f"{name} does not exist")
        return path
    return _REPO_DATA_DIR if _REPO_DATA_DIR.is_dir() and any(_REPO_DATA_DIR.iterdir()) else None


def _python_batches_dir(path: Path) -> Path | None:
    return next((f for f in (path, path / "cifar-10-batches-py")
                 if (f / "data_batch_1").is_file() and (f / "test_batch").is_file()), None)


def _read_python_batches(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with (folder / name).open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return images.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype=np.int64)

    train = [read(f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    return [(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            read("test_batch")]


def _download_cifar10() -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        import keras
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        # no network, a proxy, a broken cache: all mean "put the data here instead"
        raise _DataNotFoundError(
            "No CIFAR-10 data found and the download failed "
            f"({type(exc).__name__}: {exc}).\nPut the data in one of these places:\n"
            f"  - {_REPO_DATA_DIR}/ as train/<class>/*.jpg and test/<class>/*.jpg, "
            "or the official Python batches (cifar-10-batches-py/)\n"
            f"  - any folder, then set {_DATA_ENV_VAR}=/that/folder or pass data_dir=...\n"
            "  - or connect to the internet once: keras.datasets.cifar10 caches it in "
            "~/.keras/datasets"
        ) from exc
    return [(x_train, y_train.reshape(-1)), (x_test, y_test.reshape(-1))]


def _sample_indices(labels: np.ndarray, classes: Sequence[str], counts: Sequence[int | None],
                    rng: np.random.Generator, split: str) -> np.ndarray:
    chosen = []
    for class_id, count in enumerate(counts):
        pool = np.flatnonzero(labels == class_id)
        if count is not None and count > len(pool):
            raise ValueError(f"{split}: asked for {count} images of class {classes[class_id]!r}, "
                             f"only {len(pool)} exist")
        every = count is None or count == len(pool)
        chosen.append(pool if every else np.sort(rng.choice(pool, size=count, replace=False)))
    return np.concatenate(chosen)


def _split_counts(n_per_class: int | dict[str, int] | None, default: dict[str, int],
                  classes: Sequence[str]) -> list[int | None]:
    if n_per_class is None or isinstance(n_per_class, dict):
        return [(n_per_class or default).get(c) for c in classes]
    if int(n_per_class) < 1:
        raise ValueError(f"images per class must be at least 1, got {n_per_class}")
    return [int(n_per_class)] * len(classes)


def _list_split(split_dir: Path, classes: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    """The image files of ``split_dir/<class>/`` and their labels."""
    paths, labels = [], []
    for i, name in enumerate(classes):
        class_dir = split_dir / name
        files = list_images(class_dir, recursive=False) if class_dir.is_dir() else []
        if not files:
            raise _DataNotFoundError(f"{class_dir}: no images for class {name!r}")
        paths += files
        labels += [i] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def load_course_data(data_dir: str | Path | None = None,
                     n_train_per_class: int | dict[str, int] | None = None,
                     n_test_per_class: int | dict[str, int] | None = None, seed: int = 0,
                     classes: Sequence[str] = _COURSE_CLASSES) -> tuple[_ImageSet, _ImageSet]:
    """The CIFAR-10 course data as (train, test) ``_ImageSet`` s of 32x32 uint8 images (every
    lesson): by default 2005 training and 4000 test images; ``n_*_per_class`` (an int, or a dict
    by class) samples other sizes with ``seed``. Labels index ``classes``. Read from ``data_dir``,
    else ``$DEEP_FEATURES_DATA``, else ``data/cifar10/`` (``train/<class>/*.jpg`` and
    ``test/<class>/*.jpg``, or the Python batches), else downloaded by ``keras.datasets``."""
    classes = list(classes)
    unknown = [c for c in classes if c not in _CIFAR10_CLASSES]
    if unknown:
        raise ValueError(f"not CIFAR-10 classes: {unknown}; choose from {_CIFAR10_CLASSES}")
    counts = [_split_counts(n_train_per_class, _COURSE_TRAIN_COUNTS, classes),
              _split_counts(n_test_per_class, dict.fromkeys(_COURSE_CLASSES, 1000), classes)]
    rng = np.random.default_rng(seed)
    source = _find_data_dir(data_dir)
    batches = _python_batches_dir(source) if source is not None else None
    folders = source is not None and batches is None
    if folders and not ((source / "train").is_dir() and (source / "test").is_dir()):
        raise _DataNotFoundError(f"{source} holds neither train/<class>/ and test/<class>/ image "
                                 "folders nor the CIFAR-10 Python batches (data_batch_1 ... "
                                 "test_batch)")
    if not folders:
        arrays = _read_python_batches(batches) if batches else _download_cifar10()
        origin = f"CIFAR-10 Python batches in {source}" if batches else "keras.datasets.cifar10"
        lookup = np.full(len(_CIFAR10_CLASSES), -1, dtype=np.int64)
        lookup[[_CIFAR10_CLASSES.index(c) for c in classes]] = np.arange(len(classes))
    sets = []
    for i, split in enumerate(("train", "test")):
        if folders:
            paths, labels = _list_split(source / split, classes)
            idx = _sample_indices(labels, classes, counts[i], rng, split)
            chosen = [paths[j] for j in idx]
            sets.append(_ImageSet(labels[idx], classes, _decoded_course_images(chosen), chosen,
                                  f"image folders in {source / split}"))
            continue
        images, labels = arrays[i]
        kept = lookup[labels] >= 0
        idx = _sample_indices(lookup[labels[kept]], classes, counts[i], rng, split)
        sets.append(_ImageSet(lookup[labels[kept]][idx], classes, images[kept][idx],
                              source=f"{origin} ({split})"))
    return sets[0], sets[1]


def _decoded_course_images(paths: Sequence[Path]) -> np.ndarray:
    """The 32x32 RGB decodes of ``paths``, cached by their paths, sizes and modification times."""
    stats = [f"{os.path.abspath(p)}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in paths]
    entry = _entry_path("images", "course", "decoded", 32, content=_content_hash("\n".join(stats)),
                        label=str(len(paths)), suffix=".npy")

    def read(path: Path) -> np.ndarray:
        images = np.load(path)
        if images.shape != (len(paths), 32, 32, 3) or images.dtype != np.uint8:
            raise ValueError(f"holds {images.dtype} {images.shape}")
        return images

    images = _read_entry(entry, read, "decoded images")
    if images is None:
        images = np.stack([load_image(p, size=32) for p in paths])
        _write_entry(entry, lambda f: np.save(f, images))
    return images


def take_per_class(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` images of every class (all of a smaller one). Used in lessons 2, 3, 6, 9."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
                           for pool in (np.flatnonzero(labels == c) for c in np.unique(labels))])
