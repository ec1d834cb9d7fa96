"""utils.features: batched featurization of arrays and files, and its disk cache (small 64 px images: fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import utils.features as features
from utils.data import load_image
from utils.features import _cache_path, featurize_files, featurize_images

SIZE = 64


@pytest.fixture(scope="module")
def crops(skimage_data: Path) -> np.ndarray:
    """8 different 64x64 crops of skimage's chelsea.png (a real photo), uint8."""
    photo = load_image(skimage_data / "chelsea.png")  # (300, 451, 3)
    corners = [(0, 0), (40, 60), (100, 200), (200, 380), (150, 30), (236, 100), (10, 300), (120, 250)]
    return np.stack([photo[y : y + SIZE, x : x + SIZE] for y, x in corners])


def _feature_files(cache: Path) -> set[Path]:
    return set((cache / "features").glob("*.npz")) if (cache / "features").is_dir() else set()


def test_shape_dtype_and_batching_does_not_change_results(crops: np.ndarray) -> None:
    by_3 = featurize_images(crops, image_size=SIZE, batch_size=3, use_cache=False)
    by_8 = featurize_images(crops, image_size=SIZE, batch_size=8, use_cache=False)
    assert by_3.shape == (8, 1280) and by_3.dtype == np.float32 and np.isfinite(by_3).all()
    np.testing.assert_allclose(by_3, by_8, rtol=1e-4, atol=1e-5)
    assert not np.allclose(by_8[0], by_8[1])  # different crops, different features


def test_resizing_on_the_fly(crops: np.ndarray) -> None:
    small = np.stack([np.asarray(Image.fromarray(c).resize((32, 32))) for c in crops[:2]])
    out = featurize_images(small, image_size=SIZE, use_cache=False)  # CIFAR-sized in, resized in the graph
    assert out.shape == (2, 1280) and np.isfinite(out).all()


def test_cache_hit_is_identical_and_does_not_rebuild(crops: np.ndarray, feature_cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    images = crops[:4]
    before = _feature_files(feature_cache)
    first = featurize_images(images, image_size=SIZE)
    new = _feature_files(feature_cache) - before
    assert len(new) == 1 and not list((feature_cache / "features").glob(".tmp-*"))  # atomic: no leftovers

    def no_model(*_args, **_kwargs):
        raise AssertionError("the backbone was loaded although the features are cached")

    monkeypatch.setattr(features, "load_backbone", no_model)
    again = featurize_images(images.copy(), image_size=SIZE)  # same content, another array
    np.testing.assert_array_equal(again, first)
    assert _feature_files(feature_cache) - before == new


def test_changed_pixels_size_or_backbone_use_another_cache_file(crops: np.ndarray, feature_cache: Path) -> None:
    images = crops[4:6].copy()
    before = _feature_files(feature_cache)
    a = featurize_images(images, image_size=SIZE)
    images[0, 0, 0, 0] ^= 1  # one pixel, one bit
    b = featurize_images(images, image_size=SIZE)
    assert len(_feature_files(feature_cache) - before) == 2
    assert not np.array_equal(a, b)
    paths = {_cache_path("array", "h", "efficientnet_lite0", SIZE), _cache_path("array", "h", "efficientnet_lite0", 96),
             _cache_path("array", "h", "efficientnet_lite1", SIZE), _cache_path("array", "h2", "efficientnet_lite0", SIZE),
             _cache_path("files", "h", "efficientnet_lite0", SIZE)}
    assert len(paths) == 5


def test_featurize_files_skips_bad_files_and_matches_arrays(crops: np.ndarray, tmp_path: Path,
                                                          feature_cache: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    good = []
    for i in range(3):
        Image.fromarray(crops[i]).save(folder / f"good{i}.png")
        good.append(folder / f"good{i}.png")
    (folder / "corrupt.png").write_bytes((folder / "good0.png").read_bytes()[:100])  # truncated PNG
    (folder / "notes.jpg").write_text("a text file with an image name")
    paths = [good[0], folder / "corrupt.png", good[1], folder / "notes.jpg", good[2]]
    result = featurize_files(paths, image_size=SIZE, batch_size=2)
    assert result.paths == good and result.features.shape == (3, 1280)
    reasons = dict(result.skipped)
    assert set(reasons) == {folder / "corrupt.png", folder / "notes.jpg"}
    assert "truncated" in reasons[folder / "corrupt.png"] or "corrupt" in reasons[folder / "corrupt.png"]
    assert "not an image" in reasons[folder / "notes.jpg"]
    direct = featurize_images(np.stack([load_image(p) for p in good]), image_size=SIZE, use_cache=False)
    np.testing.assert_allclose(result.features, direct, rtol=1e-4, atol=1e-4)
    cached = featurize_files(paths, image_size=SIZE, batch_size=2)  # from the cache: same answer, same report
    np.testing.assert_array_equal(cached.features, result.features)
    assert cached.paths == result.paths and cached.skipped == result.skipped
    assert not list((feature_cache / "features").glob(".tmp-*"))


@pytest.mark.parametrize("images, match", [
    (np.zeros((2, 32, 32, 3), np.float32), "uint8"),
    (np.zeros((32, 32, 3), np.uint8), "shape"),
    (np.zeros((2, 32, 32), np.uint8), "shape"),
    (np.zeros((2, 32, 32, 4), np.uint8), "shape"),
])
def test_bad_arguments(images: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        featurize_images(images, image_size=SIZE)


def test_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        featurize_images(np.zeros((1, 8, 8, 3), np.uint8), image_size=SIZE, batch_size=0)
