"""Datasets and image loading: the 4-class CIFAR-10 course split, image folders, and robust
single-image loading.

Where the course data comes from, in order:

1. an explicit ``data_dir`` argument;
2. the environment variable ``DEEP_FEATURES_DATA``;
3. the repository's ``data/cifar10/`` folder;
4. ``keras.datasets.cifar10.load_data()`` (downloads once into ``~/.keras/datasets``; needs the
   internet).

A local source is either an image-folder tree (``train/<class>/*.jpg`` and ``test/<class>/*.jpg``)
or the official CIFAR-10 Python batches (``data_batch_1`` ... ``data_batch_5``, ``test_batch``,
optionally in ``cifar-10-batches-py/``).
"""

from __future__ import annotations

import io
import os
import pickle
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .cache import _content_hash, _entry_path, _read_entry, _write_entry

try:  # iPhone photos (HEIC/HEIF): pillow-heif adds the format to Pillow's Image.open (a dependency)
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover
    # without it a .heic file is "no image format Pillow can read"
    pass

_COURSE_CLASSES: tuple[str, ...] = ("automobile", "bird", "cat", "dog")
# The classic course's training split (2005 images) and its test split (all 4000 CIFAR-10 test
# images).
_COURSE_TRAIN_COUNTS: dict[str, int] = {"automobile": 509, "bird": 478, "cat": 509, "dog": 509}
_COURSE_TEST_COUNTS: dict[str, int] = {c: 1000 for c in _COURSE_CLASSES}
_CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                                    "dog", "frog", "horse", "ship", "truck")
_DATA_ENV_VAR = "DEEP_FEATURES_DATA"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_REPO_DATA_DIR = _REPO_ROOT / "data" / "cifar10"
# HEIC/HEIF: iPhone photos, read through pillow-heif
_IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".heic", ".heif"})
# Refuse images with more pixels than this (decompression bombs); a 12000 x 12000 photo is still
# fine.
_MAX_IMAGE_PIXELS = 150_000_000


class _DataNotFoundError(FileNotFoundError):
    """No course data locally and no way to download it."""


class _ImageLoadError(ValueError):
    """A file that cannot be read as an image: ``path`` and a ``reason`` that starts with one of
    :data:`_REASONS`.

    ``str(error)`` is ``"<path>: <reason>"``. ``_ImageLoadError(message)`` (no reason) is still
    accepted.
    """

    def __init__(self, path: str | Path | None, reason: str | None = None) -> None:
        if reason is None:  # the one-argument form: a whole message
            path, reason = None, str(path)
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


# The first words of every _ImageLoadError reason: what went wrong, in the user's terms.
_NO_SUCH_FILE = "no such file"
_EMPTY_FILE = "empty file"
_NOT_AN_IMAGE = "not an image"
_CORRUPT = "truncated/corrupt image"
_TOO_LARGE = "too large (decompression-bomb limit)"
_UNSUPPORTED_MODE = "unsupported mode"
_REASONS = (_NO_SUCH_FILE, _EMPTY_FILE, _NOT_AN_IMAGE, _CORRUPT, _TOO_LARGE, _UNSUPPORTED_MODE)


@dataclass
class _ImageSet:
    """Images with integer labels: ``images`` (N, H, W, 3) uint8, or ``paths`` when loaded lazily
    from files."""

    labels: np.ndarray
    class_names: list[str]
    images: np.ndarray | None = None
    paths: list[Path] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}


@dataclass
class _ImageFolder:
    """An image-folder tree ``root/<class>/<image>``: readable files, their labels, and what was
    skipped."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}


# --------------------------------------------------------------------------------------------------
# Single images
# --------------------------------------------------------------------------------------------------

def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit and float are rescaled, transparency is composited on
    white."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


_PILLOW_LIMIT_LOCK = threading.Lock()


def _open_image(source: Path | bytes, name: str | Path | None = None) -> Image.Image:
    """Open an image file (or its bytes) lazily, header only, refusing more than
    :data:`_MAX_IMAGE_PIXELS` pixels.

    Pillow's own decompression-bomb limit is one process-wide setting: it is switched off for the
    ``open`` alone, under a lock (files are opened from several threads), and replaced by our check
    of the header's size.
    """
    where = name if name is not None else (source if isinstance(source, Path) else "<bytes>")
    if isinstance(source, Path):
        if not source.is_file():
            raise _ImageLoadError(where, _NO_SUCH_FILE)
        if source.stat().st_size == 0:
            raise _ImageLoadError(where, f"{_EMPTY_FILE} (0 bytes)")
        opened: Path | io.BytesIO = source
    else:
        if len(source) == 0:
            raise _ImageLoadError(where, f"{_EMPTY_FILE} (0 bytes)")
        opened = io.BytesIO(source)
    try:
        with _PILLOW_LIMIT_LOCK:
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(opened)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except UnidentifiedImageError as exc:
        raise _ImageLoadError(where, f"{_NOT_AN_IMAGE} (no image format Pillow can read)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _decode_error(where, exc) from exc
    if image.width * image.height > _MAX_IMAGE_PIXELS:
        image.close()
        raise _ImageLoadError(where, f"{_TOO_LARGE}: {image.width}x{image.height} pixels, "
                                    f"limit {_MAX_IMAGE_PIXELS:,}")
    return image


def _decode_error(where: str | Path, exc: BaseException) -> _ImageLoadError:
    """The _ImageLoadError for an exception raised while Pillow reads a file."""
    text = str(exc)
    if isinstance(exc, Image.DecompressionBombError) or "too large" in text.lower():
        return _ImageLoadError(where, f"{_TOO_LARGE}: {text}")
    return _ImageLoadError(where, f"{_CORRUPT} ({text})")


def load_image(path: str | Path | None = None, size: int | None = None, *,
               data: bytes | None = None) -> np.ndarray:
    """Read an image file (or its bytes, ``data=``) as a uint8 RGB array (H, W, 3), upright (EXIF
    orientation).

    With ``size``, the image is resized to ``size`` x ``size`` (the whole image, aspect not kept, as
    the featurizer does with CIFAR images). Raises :class:`_ImageLoadError` with the reason for
    anything unreadable.

    Used in lessons 4, 6, 8 and 9.
    """
    if (path is None) == (data is None):
        raise TypeError("load_image needs a path or data=bytes (not both)")
    source: Path | bytes = Path(path) if path is not None else bytes(data)  # type: ignore[arg-type]
    where = source if isinstance(source, Path) else "<bytes>"
    try:
        with _open_image(source) as image:
            if size is not None and image.format == "JPEG":
                image.draft("RGB", (size, size))  # decode big JPEGs at a reduced scale: much faster
            image = ImageOps.exif_transpose(image)
            image.load()
            mode = image.mode
            try:
                rgb = _to_rgb(image)
            except (ValueError, OSError) as exc:
                # e.g. LAB, HSV or CMYK-with-alpha: no conversion to RGB
                raise _ImageLoadError(where, f"{_UNSUPPORTED_MODE} {mode!r} ({exc})") from exc
    except _ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # raised while decoding
        raise _decode_error(where, exc) from exc
    if min(rgb.size) < 1:
        raise _ImageLoadError(where, f"{_CORRUPT} (no pixels)")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8)


def resize_batch(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Resize RGB images (a batch array or a list of differently sized arrays) to (N, size, size, 3)
    uint8.

    Used in lesson 1.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected RGB images of shape (H, W, 3), got {image.shape}")
        if image.shape[:2] == (size, size):
            out[i] = image
        else:
            out[i] = np.asarray(Image.fromarray(image.astype(np.uint8))
                                .resize((size, size), Image.Resampling.BILINEAR))
    return out


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files (by extension) under ``folder``, sorted; hidden files and folders are ignored.

    Used in lesson 9.
    """
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
                      check_images: bool = True) -> _ImageFolder:
    """Index an image-folder tree ``root/<class>/<image>`` (e.g. ``data/my_images/``) for
    featurization.

    Each sub-folder is a class. Files that are not readable images are skipped and listed in
    ``skipped`` (with ``check_images``, every image is opened once to verify it); empty class
    folders are skipped with a warning. Raises ``ValueError`` when fewer than ``min_classes``
    classes have images.

    Used in lesson 6.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder. Make one sub-folder per class with its images inside, e.g. "
            f"{root}/cat/1.jpg, {root}/dog/1.jpg"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    class_names: list[str] = []
    skipped: list[tuple[Path, str]] = []
    empty: list[str] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*")
                       if p.is_file() and not p.name.startswith("."))
        good = []
        for f in files:
            if f.suffix.lower() not in _IMAGE_EXTENSIONS:
                skipped.append((f, "not an image file extension"))
                continue
            if check_images:
                try:
                    _verify_image(f)
                except _ImageLoadError as exc:
                    skipped.append((f, exc.reason))
                    continue
            good.append(f)
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
        raise ValueError(
            f"{root}: need at least {min_classes} class folders with images, {found}. "
            f"Put each class's images in its own sub-folder, e.g. {root}/cat/, {root}/dog/"
        )
    return _ImageFolder(root, paths, np.asarray(labels, dtype=np.int64), class_names, skipped)


def _verify_image(path: Path) -> None:
    """Cheap validity check: header, size limit and file structure (full decoding happens at
    featurization)."""
    with _open_image(path) as image:
        try:
            image.verify()
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
            raise _decode_error(path, exc) from exc


# --------------------------------------------------------------------------------------------------
# The CIFAR-10 course data
# --------------------------------------------------------------------------------------------------

def _find_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local CIFAR-10 source to use (argument, then $DEEP_FEATURES_DATA, then data/cifar10/), or
    None."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise _DataNotFoundError(f"data_dir {path} does not exist")
        return path
    from_env = os.environ.get(_DATA_ENV_VAR)
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_dir():
            raise _DataNotFoundError(f"${_DATA_ENV_VAR}={from_env} does not exist")
        return path
    return _REPO_DATA_DIR if _REPO_DATA_DIR.is_dir() and any(_REPO_DATA_DIR.iterdir()) else None


def _python_batches_dir(path: Path) -> Path | None:
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return candidate
    return None


def _read_python_batches(folder: Path) -> tuple[tuple[np.ndarray, np.ndarray],
                                                tuple[np.ndarray, np.ndarray]]:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with (folder / name).open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images = (np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                  .transpose(0, 2, 3, 1))
        return images, np.asarray(batch[b"labels"], dtype=np.int64)

    train_parts = [read(f"data_batch_{i}") for i in range(1, 6)
                   if (folder / f"data_batch_{i}").is_file()]
    train = (np.concatenate([p[0] for p in train_parts]),
             np.concatenate([p[1] for p in train_parts]))
    return train, read("test_batch")


def _download_cifar10() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
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
    return (x_train, y_train.reshape(-1)), (x_test, y_test.reshape(-1))


def _sample_indices(labels: np.ndarray, class_ids: Sequence[int], counts: Sequence[int | None],
                    rng: np.random.Generator, split: str) -> np.ndarray:
    chosen = []
    for class_id, count in zip(class_ids, counts):
        pool = np.flatnonzero(labels == class_id)
        if count is None or count == len(pool):
            chosen.append(pool)
            continue
        if count > len(pool):
            raise ValueError(f"{split}: asked for {count} images of class {class_id}, "
                             f"only {len(pool)} exist")
        chosen.append(np.sort(rng.choice(pool, size=count, replace=False)))
    return np.concatenate(chosen)


def _split_counts(n_per_class: int | dict[str, int] | None, default: dict[str, int],
                  classes: Sequence[str]) -> list[int | None]:
    if n_per_class is None:
        return [default.get(c) for c in classes]
    if isinstance(n_per_class, dict):
        return [n_per_class.get(c) for c in classes]
    if int(n_per_class) < 1:
        raise ValueError(f"images per class must be at least 1, got {n_per_class}")
    return [int(n_per_class)] * len(classes)


def load_course_data(data_dir: str | Path | None = None,
                     n_train_per_class: int | dict[str, int] | None = None,
                     n_test_per_class: int | dict[str, int] | None = None, seed: int = 0,
                     classes: Sequence[str] = _COURSE_CLASSES) -> tuple[_ImageSet, _ImageSet]:
    """The 4-class CIFAR-10 course data as (train, test) :class:`_ImageSet` s of 32x32 uint8 images.

    By default this is the classic course split: 2005 training images (automobile 509, bird 478, cat
    509, dog 509) and all 4000 test images of those classes. ``n_*_per_class`` picks other sizes (an
    int for every class, or a dict). Images are sampled reproducibly with ``seed``; labels index
    ``classes``.

    Used in every lesson.
    """
    classes = list(classes)
    unknown = [c for c in classes if c not in _CIFAR10_CLASSES]
    if unknown:
        raise ValueError(f"not CIFAR-10 classes: {unknown}; choose from {_CIFAR10_CLASSES}")
    train_counts = _split_counts(n_train_per_class, _COURSE_TRAIN_COUNTS, classes)
    test_counts = _split_counts(n_test_per_class, _COURSE_TEST_COUNTS, classes)
    rng = np.random.default_rng(seed)
    source = _find_data_dir(data_dir)
    if source is not None and _python_batches_dir(source) is None:
        if not (source / "train").is_dir() or not (source / "test").is_dir():
            raise _DataNotFoundError(
                f"{source} holds neither train/<class>/ and test/<class>/ image folders "
                "nor the CIFAR-10 Python batches (data_batch_1 ... test_batch)"
            )
        return tuple(  # type: ignore[return-value]
            _load_split_from_folders(source / split, classes, counts, rng, split)
            for split, counts in (("train", train_counts), ("test", test_counts))
        )
    if source is not None:
        (x_train, y_train), (x_test, y_test) = _read_python_batches(
            _python_batches_dir(source))  # type: ignore[arg-type]
        origin = f"CIFAR-10 Python batches in {source}"
    else:
        (x_train, y_train), (x_test, y_test) = _download_cifar10()
        origin = "keras.datasets.cifar10"
    class_ids = [_CIFAR10_CLASSES.index(c) for c in classes]
    remap = {cid: i for i, cid in enumerate(class_ids)}
    sets = []
    for split, x, y, counts in (("train", x_train, y_train, train_counts),
                                ("test", x_test, y_test, test_counts)):
        idx = _sample_indices(y, class_ids, counts, rng, split)
        labels = np.asarray([remap[int(v)] for v in y[idx]], dtype=np.int64)
        sets.append(_ImageSet(labels, classes, images=x[idx], source=f"{origin} ({split})"))
    return sets[0], sets[1]


def _load_split_from_folders(split_dir: Path, classes: Sequence[str], counts: Sequence[int | None],
                             rng: np.random.Generator, split: str) -> _ImageSet:
    all_paths, all_labels = [], []
    for i, name in enumerate(classes):
        class_dir = split_dir / name
        files = list_images(class_dir, recursive=False) if class_dir.is_dir() else []
        if not files:
            raise _DataNotFoundError(f"{class_dir}: no images for class {name!r}")
        all_paths += files
        all_labels += [i] * len(files)
    labels = np.asarray(all_labels, dtype=np.int64)
    idx = _sample_indices(labels, range(len(classes)), counts, rng, split)
    paths = [all_paths[i] for i in idx]
    images = _decoded_course_images(paths)
    return _ImageSet(labels[idx], list(classes), images=images, paths=paths,
                    source=f"image folders in {split_dir}")


def _decoded_course_images(paths: Sequence[Path]) -> np.ndarray:
    """The 32x32 RGB decodes of ``paths``, cached on disk by the files' paths, sizes and times:
    every lesson loads the same 6,005 images, read back in milliseconds instead of decoded again."""
    stats = []
    for p in paths:
        st = p.stat()
        stats.append(f"{os.path.abspath(p)}\t{st.st_size}\t{st.st_mtime_ns}")
    entry = _entry_path("images", "course", "decoded", 32, content=_content_hash("\n".join(stats)),
                       label=str(len(paths)), suffix=".npy")

    def read(path: Path) -> np.ndarray:
        images = np.load(path)
        if images.shape != (len(paths), 32, 32, 3) or images.dtype != np.uint8:
            raise ValueError(f"holds {images.dtype} {images.shape}")
        return images

    cached = _read_entry(entry, read, "decoded images")
    if cached is not None:
        return cached
    images = np.stack([load_image(p, size=32) for p in paths])
    _write_entry(entry, lambda f: np.save(f, images))
    return images


def take_per_class(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` examples of every class (sampled with ``seed``; all of a class if it has
    fewer).

    Used in lessons 2, 3, 6 and 9.
    """
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        picks.append(np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False)))
    return np.concatenate(picks)
