"""utils.cache: one key function and one version for every cache kind; a damaged entry of each kind (features of
an array, a chunk of files, converted weights, a TFLite model, fine-tuning activations) is recomputed with one
warning and gives what the first computation gave."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from utils import backbones, cache, fast_inference, features, fine_tuning
from _numerics import assert_close

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)


def _damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a truncated write, e.g. a full disk


def _new_files(folder: Path, before: set[Path], pattern: str) -> list[Path]:
    return sorted(set(folder.glob(pattern)) - before)


def _recomputed_once(compute, what: str):
    with pytest.warns(cache._CacheWarning) as caught:
        result = compute()
    damaged = [w for w in caught if issubclass(w.category, cache._CacheWarning)]
    assert len(damaged) == 1 and f"{what} cache file" in str(damaged[0].message), [str(w.message) for w in damaged]
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache._CacheWarning)  # repaired: read without a warning now
        compute()
    return result


def test_one_version_constant_and_one_key_function() -> None:
    folders = ("utils", "deep_features", "benchmarks", "instructor")
    sources = {p.relative_to(REPO).as_posix(): p.read_text() for folder in folders
               for p in sorted((REPO / folder).glob("*.py"))}
    versions = [n for n, text in sources.items() if re.search(r"^\w*FORMAT\w* = \d", text, re.M)]
    keys = [n for n, text in sources.items() if re.search(r"hashlib\.sha256\(json\.dumps", text)]
    assert versions == ["utils/cache.py"] and keys == ["utils/cache.py"]


def test_the_key_changes_with_every_part() -> None:
    base = dict(kind="features", model="m", weights_id="w", size=96, precision="float32", content="c", detail=[1])
    keys = {cache._cache_key(**base)}
    for name, other in [("kind", "tflite"), ("model", "n"), ("weights_id", "v"), ("size", 128),
                        ("precision", "int8"), ("content", "d"), ("detail", [2])]:
        keys.add(cache._cache_key(**{**base, name: other}))
    assert len(keys) == 8
    path = cache._entry_path(**base, label="array", suffix=".npz")
    assert path.parent.name == "features" and re.fullmatch(r"m-96px-array-[0-9a-f]{32}\.npz", path.name)
    assert "-int8-" in cache._entry_path(**{**base, "precision": "int8"}).name


def test_damaged_array_features_are_recomputed(images, feature_cache: Path) -> None:
    before = set((feature_cache / "features").glob("*.npz"))
    first = features.featurize_images(images, image_size=SIZE)
    (entry,) = _new_files(feature_cache / "features", before, "*.npz")
    _damage(entry)
    again = _recomputed_once(lambda: features.featurize_images(images, image_size=SIZE), "feature")
    assert_close(again, first)


def test_damaged_file_chunk_is_recomputed(images, tmp_path: Path, feature_cache: Path) -> None:
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    before = set((feature_cache / "features" / "chunks").glob("*.npz"))
    first = features.featurize_files(paths, image_size=SIZE)
    (entry,) = _new_files(feature_cache / "features" / "chunks", before, "*.npz")
    _damage(entry)
    again = _recomputed_once(lambda: features.featurize_files(paths, image_size=SIZE), "feature")
    assert_close(again.features, first.features)


def test_damaged_tflite_model_is_converted_again(images, feature_cache: Path) -> None:
    handle = backbones.load_backbone("efficientnet_lite0", SIZE)
    path = fast_inference._tflite_path(handle, (SIZE, SIZE))
    first = fast_inference._load_or_convert(handle, (SIZE, SIZE))
    assert path.is_file() and path.parent == feature_cache / "tflite"
    _damage(path)
    again = _recomputed_once(lambda: fast_inference._load_or_convert(handle, (SIZE, SIZE)), "TFLite model")
    runner = fast_inference._TFLiteRunner
    assert_close(runner(again)(images), runner(first)(images))


def test_damaged_converted_weights_are_converted_again(images, feature_cache: Path) -> None:
    backbones._backbone.cache_clear()
    first = np.asarray(backbones.load_backbone("efficientnet_lite0", SIZE).feature_model(images.astype("float32")))
    (weights,) = (feature_cache / "weights").glob("efficientnet_lite0-*.weights.h5")
    blocks = weights.with_name(weights.name.replace(".weights.h5", ".blocks.json"))
    for damaged in (weights, blocks):
        _damage(damaged)
        backbones._backbone.cache_clear()

        def load():
            backbones._backbone.cache_clear()
            return backbones.load_backbone("efficientnet_lite0", SIZE).feature_model  # built here

        again = _recomputed_once(load, "converted weights")
        assert_close(np.asarray(again(images.astype("float32"))), first)
    assert not list((feature_cache / "weights").glob(".tmp-*"))


def test_damaged_activations_are_recomputed(images, feature_cache: Path) -> None:
    import keras

    network = backbones.load_backbone("efficientnet_lite0", SIZE).feature_model
    bottom = keras.Model(network.input, network.get_layer("blocks_10_add").output)  # before block 11
    before = set((feature_cache / "activations").glob("*.npy"))
    first = fine_tuning.activations(bottom, images)
    (entry,) = _new_files(feature_cache / "activations", before, "*.npy")
    _damage(entry)
    again = _recomputed_once(lambda: fine_tuning.activations(bottom, images), "activation")
    np.testing.assert_array_equal(again, first)
