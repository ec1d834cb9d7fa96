"""utils.data: robust single-image loading, image-folder indexing and the course data sources."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import utils.data as data
from utils.data import (_CIFAR10_CLASSES, _COURSE_CLASSES, _DataNotFoundError, _ImageLoadError, load_course_data,
                        load_image, load_image_folder)


def _gradient(w: int = 24, h: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 77)], -1).astype(np.uint8)


def _check_rgb(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.uint8 and array.shape == (*shape, 3)


# ----------------------------------------------------------------------------------------------------------------
# load_image
# ----------------------------------------------------------------------------------------------------------------

def test_rgb_png_round_trip_and_resize(tmp_path: Path) -> None:
    pixels = _gradient()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), pixels)
    _check_rgb(load_image(tmp_path / "a.png", size=32), (32, 32))


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    _check_rgb(out, (12, 10))
    assert (out == gray[..., None]).all()


def test_rgba_is_blended_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    _check_rgb(out, (4, 4))
    assert (out[:2] == [200, 0, 0]).all()
    assert (out[2:] == 255).all()  # transparent -> white, not black


def test_palette_without_and_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (6, 5))
    image.putpalette([10, 20, 30, 250, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 3, 5))  # left half: palette entry 1 (red), right half: entry 0
    image.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    _check_rgb(out, (5, 6))
    assert (out[:, :3] == [250, 0, 0]).all() and (out[:, 3:] == [10, 20, 30]).all()
    image.save(tmp_path / "pt.png", transparency=0)  # entry 0 transparent
    out = load_image(tmp_path / "pt.png")
    assert (out[:, :3] == [250, 0, 0]).all() and (out[:, 3:] == 255).all()
    image.save(tmp_path / "pt.gif", transparency=0)
    assert (load_image(tmp_path / "pt.gif")[:, 3:] == 255).all()


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    _check_rgb(out, (16, 24))
    assert np.abs(out.astype(int) - _gradient().astype(int)).mean() < 20  # roughly the same colours


def test_16_bit_png_is_rescaled_to_8_bit(tmp_path: Path) -> None:
    deep = (np.arange(8 * 8, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")  # uint16 -> mode I;16
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = load_image(tmp_path / "d.png")
    _check_rgb(out, (8, 8))
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out[..., 0].ravel().astype(int)) >= 0).all()  # order kept


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = _gradient(40, 20)  # stored 40 wide, 20 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": upright it is 20 wide, 40 tall
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg")
    _check_rgb(out, (40, 20))
    expected = np.rot90(pixels, k=-1)  # clockwise
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 10


def test_one_pixel_image(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "one.png")
    out = load_image(tmp_path / "one.png")
    _check_rgb(out, (1, 1))
    assert out[0, 0].tolist() == [1, 2, 3]
    _check_rgb(load_image(tmp_path / "one.png", size=32), (32, 32))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims ``width`` x ``height`` (no big allocation anywhere)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr : ihdr + 17])))
    return bytes(raw)


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_claiming(30000, 30000))
    with pytest.raises(_ImageLoadError, match="too large"):
        load_image(tmp_path / "bomb.png")


def test_image_over_the_pixel_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "a.png")  # 384 pixels
    monkeypatch.setattr(data, "_MAX_IMAGE_PIXELS", 300)
    with pytest.raises(_ImageLoadError, match="too large"):
        load_image(tmp_path / "a.png")
    monkeypatch.setattr(data, "_MAX_IMAGE_PIXELS", 100)
    with pytest.raises(_ImageLoadError, match="too large"):
        load_image(tmp_path / "a.png")
    assert Image.MAX_IMAGE_PIXELS != 100  # Pillow's global limit restored


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, reason", [
    ("truncated.jpg", _jpeg_bytes()[:600], "truncated"),
    ("corrupt.jpg", b"\xff\xd8\xff\xe0" + b"\x00garbage" * 40, "not an image|corrupt"),
    ("empty.jpg", b"", "empty"),
    ("text.jpg", b"this is a text file, not a JPEG\n" * 3, "not an image"),
])
def test_unreadable_files_raise_image_load_error(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(_ImageLoadError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(_ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("name, content, words", [
    ("gone.png", None, data._NO_SUCH_FILE),
    ("empty.png", b"", data._EMPTY_FILE),
    ("text.jpg", b"a text file\n", data._NOT_AN_IMAGE),
    ("cut.jpg", _jpeg_bytes()[:600], data._CORRUPT),
    ("bomb.png", _png_claiming(30000, 30000), data._TOO_LARGE),
])
def test_reasons_start_with_the_words_of_the_cause(tmp_path: Path, name: str, content: bytes | None,
                                                   words: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(_ImageLoadError) as info:
        load_image(path)
    assert info.value.path == path and info.value.reason.startswith(words), info.value.reason
    assert str(info.value) == f"{path}: {info.value.reason}"
    if content is not None:  # the same reason from the bytes
        with pytest.raises(_ImageLoadError) as from_bytes:
            load_image(data=content)
        assert from_bytes.value.reason.split(" (")[0].split(":")[0] == info.value.reason.split(" (")[0].split(":")[0]


def test_unsupported_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "a.png")

    def no_conversion(image: Image.Image) -> Image.Image:
        raise ValueError(f"conversion from {image.mode} to RGB not supported")

    monkeypatch.setattr(data, "_to_rgb", no_conversion)
    with pytest.raises(_ImageLoadError, match="unsupported mode 'RGB'"):
        load_image(tmp_path / "a.png")


def test_load_image_from_bytes_matches_the_file(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(data=(tmp_path / "a.png").read_bytes(), size=8),
                                  load_image(tmp_path / "a.png", size=8))
    with pytest.raises(TypeError):
        load_image()
    assert str(_ImageLoadError(None, "a whole message")) == "a whole message"  # no path: the reason alone


# ----------------------------------------------------------------------------------------------------------------
# load_image_folder
# ----------------------------------------------------------------------------------------------------------------

def _image_tree(root: Path, spec: dict[str, int]) -> Path:
    for class_name, n in spec.items():
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_gradient(8 + i, 8)).save(root / class_name / f"{i}.png")
    return root


def test_image_folder_skips_empty_classes_and_non_images(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs", {"cat": 2, "dog": 3, "empty": 0})
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "cat" / ".hidden.png").write_bytes(b"ignored")
    (root / "only_junk").mkdir()
    (root / "only_junk" / "readme.md").write_text("# hi")
    with pytest.warns(UserWarning, match="empty.*only_junk|only_junk.*empty"):
        folder = load_image_folder(root)
    assert folder.class_names == ["cat", "dog"]
    assert folder.counts() == {"cat": 2, "dog": 3}
    assert [folder.class_names[label] for label in folder.labels] == [p.parent.name for p in folder.paths]
    skipped = {p.name: reason for p, reason in folder.skipped}
    assert set(skipped) == {"notes.txt", "broken.jpg", "readme.md"}
    assert "extension" in skipped["notes.txt"] and "not an image" in skipped["broken.jpg"]


def test_image_folder_single_class_with_min_classes(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs", {"cat": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image_folder(root).class_names == ["cat"]
    with pytest.raises(ValueError, match="at least 2 class"):
        load_image_folder(root, min_classes=2)


def test_image_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sub-folder per class"):
        load_image_folder(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------------------------
# load_course_data
# ----------------------------------------------------------------------------------------------------------------

def test_cifar4_default_split_from_shared_folder(course_data_dir: Path) -> None:
    train, test = load_course_data(course_data_dir)
    assert train.counts() == {"automobile": 509, "bird": 478, "cat": 509, "dog": 509}
    assert test.counts() == {c: 1000 for c in _COURSE_CLASSES}
    for split in (train, test):
        assert split.images.shape == (len(split), 32, 32, 3) and split.images.dtype == np.uint8
        assert [p.parent.name for p in split.paths] == [split.class_names[i] for i in split.labels]
    assert len(set(train.paths)) == len(train.paths)


def test_cifar4_sampling_is_seeded(course_data_dir: Path) -> None:
    a, a_test = load_course_data(course_data_dir, n_train_per_class=10, n_test_per_class=3, seed=1)
    b, _ = load_course_data(course_data_dir, n_train_per_class=10, n_test_per_class=3, seed=1)
    c, _ = load_course_data(course_data_dir, n_train_per_class=10, n_test_per_class=3, seed=2)
    assert a.counts() == {cl: 10 for cl in _COURSE_CLASSES} and a_test.counts() == {cl: 3 for cl in _COURSE_CLASSES}
    assert a.paths == b.paths and np.array_equal(a.images, b.images)
    assert a.paths != c.paths
    with pytest.raises(ValueError, match="only"):
        load_course_data(course_data_dir, n_train_per_class=5001, n_test_per_class=1)


def _fake_cifar_batches(folder: Path, n_per_class: int = 3, n_test_per_class: int = 2) -> Path:
    """The official python format: pickled dicts with bytes keys; every pixel of an image = 10 * its label + k."""
    folder.mkdir(parents=True)

    def batch(n: int, start: int) -> dict:
        labels = [label for label in range(10) for _ in range(n)]
        images = np.stack([np.full(3072, 10 * label + (start + i) % 3, dtype=np.uint8)
                           for i, label in enumerate(labels)])
        return {b"batch_label": b"fake", b"labels": labels, b"data": images}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_per_class, i), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test_per_class, 0), protocol=2))
    return folder


def test_official_python_batches(tmp_path: Path) -> None:
    root = tmp_path / "cifar"
    _fake_cifar_batches(root / "cifar-10-batches-py")
    train, test = load_course_data(root, n_train_per_class=4, n_test_per_class=2, classes=("dog", "automobile"))
    assert train.class_names == ["dog", "automobile"] and train.counts() == {"dog": 4, "automobile": 4}
    assert test.counts() == {"dog": 2, "automobile": 2}
    for split in (train, test):
        assert split.images.shape[1:] == (32, 32, 3)
        cifar_label = split.images[:, 0, 0, 0] // 10  # what the fake pixels say
        assert [_CIFAR10_CLASSES[v] for v in cifar_label] == [split.class_names[i] for i in split.labels]
    assert "Python batches" in train.source


def test_explicit_path_beats_environment_beats_repo_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env, repo = (_fake_cifar_batches(tmp_path / n) for n in ("explicit", "env", "repo"))
    monkeypatch.setattr(data, "_REPO_DATA_DIR", repo)
    monkeypatch.setenv("DEEP_FEATURES_DATA", str(env))
    kwargs = dict(n_train_per_class=1, n_test_per_class=1)
    assert str(explicit) in load_course_data(explicit, **kwargs)[0].source
    assert str(env) in load_course_data(**kwargs)[0].source
    monkeypatch.delenv("DEEP_FEATURES_DATA")
    assert str(repo) in load_course_data(**kwargs)[0].source
    with pytest.raises(_DataNotFoundError):
        load_course_data(tmp_path / "does-not-exist", **kwargs)


@pytest.fixture
def no_local_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "repo-data"
    empty.mkdir()
    monkeypatch.setattr(data, "_REPO_DATA_DIR", empty)
    monkeypatch.delenv("DEEP_FEATURES_DATA", raising=False)
    return empty


def test_no_data_and_failed_download_says_where_to_put_it(no_local_data: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def offline():
        raise OSError("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(_DataNotFoundError) as info:
        load_course_data()
    message = str(info.value)
    assert str(no_local_data) in message and "DEEP_FEATURES_DATA" in message and "data_dir" in message
    assert "name resolution" in message


def test_download_path_selects_and_remaps_classes(no_local_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def fake_load_data():
        y_train = np.repeat(np.arange(10), 6)[:, None]  # keras gives (N, 1) labels
        y_test = np.repeat(np.arange(10), 2)[:, None]
        make = lambda y: np.broadcast_to((y[:, 0] * 10)[:, None, None, None], (len(y), 32, 32, 3)).astype(np.uint8)
        return (make(y_train), y_train), (make(y_test), y_test)

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake_load_data)
    train, test = load_course_data(n_train_per_class=5, n_test_per_class=2)
    assert train.counts() == {c: 5 for c in _COURSE_CLASSES} and test.counts() == {c: 2 for c in _COURSE_CLASSES}
    for split in (train, test):
        named = [split.class_names[i] for i in split.labels]
        assert [_CIFAR10_CLASSES[v // 10] for v in split.images[:, 0, 0, 0]] == named
    assert train.source.startswith("keras.datasets")


def test_image_folder_uses_the_same_size_limit_as_load_image(tmp_path: Path) -> None:
    """A 12000 x 12000 photo is within _MAX_IMAGE_PIXELS (only headers are read here: nothing big is allocated)."""
    root = tmp_path / "imgs"
    (root / "big").mkdir(parents=True)
    (root / "big" / "photo.png").write_bytes(_png_claiming(12000, 12000))
    (root / "big" / "bomb.png").write_bytes(_png_claiming(30000, 30000))
    folder = load_image_folder(root)
    assert [p.name for p in folder.paths] == ["photo.png"]
    (path, reason), = folder.skipped
    assert path.name == "bomb.png" and "too large" in reason
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own limit restored


def test_course_images_are_decoded_once_then_read_from_the_cache(tmp_path: Path, feature_cache: Path) -> None:
    """Every lesson loads the course images: the decodes are cached, keyed by the files' paths, sizes and times."""
    import os

    root = tmp_path / "course"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in _COURSE_CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.png")
    first, _ = load_course_data(root, n_train_per_class=2, n_test_per_class=1)
    entries = set((feature_cache / "images").glob("*.npy"))
    assert entries
    again, _ = load_course_data(root, n_train_per_class=2, n_test_per_class=1)
    assert np.array_equal(again.images, first.images) and set((feature_cache / "images").glob("*.npy")) == entries
    changed = first.paths[0]  # another image under the same name: decoded anew, never the stale decode
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    fresh, _ = load_course_data(root, n_train_per_class=2, n_test_per_class=1)
    assert not fresh.images[0].any() and np.array_equal(fresh.images[1:], first.images[1:])
    for entry in set((feature_cache / "images").glob("*.npy")) - entries:
        entry.write_bytes(b"damaged")  # a damaged entry warns once and is decoded again
    with pytest.warns(Warning, match="decoded images"):
        damaged, _ = load_course_data(root, n_train_per_class=2, n_test_per_class=1)
    assert np.array_equal(damaged.images, fresh.images)
