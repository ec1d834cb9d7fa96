"""utils.features: batched featurization of arrays and files, and its disk cache (small 64 px images: fast)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import utils.backbones as backbones
import utils.fast_inference as fast_inference
import utils.features as features
from utils.data import load_image
from deep_features.dask_features import report_skipped
from utils.features import _array_cache_path, featurize_files, featurize_images

from _numerics import assert_close

SIZE = 64


@pytest.fixture(scope="module")
def crops(skimage_data: Path) -> np.ndarray:
    """8 different 64x64 crops of skimage's chelsea.png (a real photo), uint8."""
    photo = load_image(skimage_data / "chelsea.png")  # (300, 451, 3)
    corners = [(0, 0), (40, 60), (100, 200), (200, 380), (150, 30), (236, 100), (10, 300), (120, 250)]
    return np.stack([photo[y : y + SIZE, x : x + SIZE] for y, x in corners])


def _feature_files(cache: Path) -> set[Path]:
    return set((cache / "features").glob("*.npz")) if (cache / "features").is_dir() else set()


def _chunk_files(cache: Path) -> set[Path]:
    return set((cache / "features" / "chunks").glob("*.npz"))


@pytest.fixture()
def photo_files(crops: np.ndarray, tmp_path: Path) -> list[Path]:
    """The 8 crops as PNG files."""
    folder = tmp_path / "crops"
    folder.mkdir()
    paths = []
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(folder / f"crop{i}.png")
        paths.append(folder / f"crop{i}.png")
    return paths


class _Counting:
    """Wraps features._inference_step: counts the images the model really sees."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.images = 0
        original = features._inference_step

        def counted(backbone, precision="float32"):
            step = original(backbone, precision)

            def run(x):
                self.images += len(x)
                return step(x)
            return run

        monkeypatch.setattr(features, "_inference_step", counted)


def test_shape_dtype_and_batching_does_not_change_results(crops: np.ndarray) -> None:
    by_3 = featurize_images(crops, image_size=SIZE, batch_size=3, use_cache=False)
    by_8 = featurize_images(crops, image_size=SIZE, batch_size=8, use_cache=False)
    assert by_3.shape == (8, 1280) and by_3.dtype == np.float32 and np.isfinite(by_3).all()
    assert_close(by_3, by_8)
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

    backbones._backbone.cache_clear()  # a new backbone, not built yet
    monkeypatch.setattr(backbones, "_build_lite", no_model)
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
    handle = backbones.load_backbone
    paths = {_array_cache_path("h", handle("efficientnet_lite0", SIZE)), _array_cache_path("h", handle("efficientnet_lite0", 96)),
             _array_cache_path("h", handle("efficientnet_lite1", SIZE)), _array_cache_path("h2", handle("efficientnet_lite0", SIZE))}
    assert len(paths) == 4


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
    assert_close(result.features, direct)
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


def test_interrupted_run_resumes_with_the_same_features(photo_files: list[Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    reference = featurize_files(photo_files, image_size=SIZE, use_cache=False)

    def stop_after_two_chunks(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    counting = _Counting(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        featurize_files(photo_files, image_size=SIZE, chunk_files=2, on_chunk=stop_after_two_chunks)
    assert counting.images == 4
    progress: list[tuple[int, int]] = []
    resumed = featurize_files(photo_files, image_size=SIZE, chunk_files=2,
                              on_chunk=lambda done, total: progress.append((done, total)))
    assert counting.images == 8  # only the last two chunks were computed
    assert progress == [(2, 8), (4, 8), (6, 8), (8, 8)]  # resumed chunks count as done
    assert resumed.paths == photo_files and not resumed.skipped
    assert_close(resumed.features, reference.features)


def test_rerun_on_unchanged_files_reads_no_file(photo_files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    first = featurize_files(photo_files[:5], image_size=SIZE, chunk_files=2)

    def no_read(path: Path):
        raise AssertionError(f"{path} was read although its features are cached")

    monkeypatch.setattr(features, "_read_file", no_read)
    again = featurize_files(photo_files[:5], image_size=SIZE, chunk_files=2)
    np.testing.assert_array_equal(again.features, first.features)
    os.utime(photo_files[0], ns=(1, 1))  # a touched file is read again (and found by its content)
    with pytest.raises(AssertionError, match="was read"):
        featurize_files(photo_files[:5], image_size=SIZE, chunk_files=2)


def test_corrupt_cache_file_warns_once_and_is_recomputed(photo_files: list[Path], feature_cache: Path) -> None:
    before = _chunk_files(feature_cache)
    first = featurize_files(photo_files[5:8], image_size=SIZE, chunk_files=8)
    (chunk,) = _chunk_files(feature_cache) - before
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # a truncated write, e.g. a full disk
    with pytest.warns(UserWarning, match="unreadable.*recomputing") as caught:
        again = featurize_files(photo_files[5:8], image_size=SIZE, chunk_files=8)
    assert len([w for w in caught if "feature cache" in str(w.message)]) == 1
    assert_close(again.features, first.features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: no warning any more
        third = featurize_files(photo_files[5:8], image_size=SIZE, chunk_files=8)
    np.testing.assert_array_equal(third.features, again.features)


_CONCURRENT = """
import sys, numpy as np
from utils.features import featurize_files
paths = sys.argv[2:]
result = featurize_files(paths, image_size=64, chunk_files=2)
np.save(sys.argv[1], result.features)
"""


def test_two_processes_on_one_cache_both_succeed_with_identical_features(photo_files: list[Path],
                                                                         tmp_path: Path) -> None:
    env = {**os.environ, "DEEP_FEATURES_CACHE": str(tmp_path / "shared-cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    outputs = [tmp_path / "a.npy", tmp_path / "b.npy"]
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(out), *map(str, photo_files)], env=env,
                              stderr=subprocess.PIPE, text=True) for out in outputs]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    a, b = (np.load(out) for out in outputs)
    assert a.shape == (8, 1280)
    np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "shared-cache").rglob(".tmp-*"))  # no half-written file left behind


def test_every_skipped_file_is_named_with_its_reason(photo_files: list[Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture")
    (tmp_path / "cut.png").write_bytes(photo_files[0].read_bytes()[:200])
    paths = [tmp_path / "empty.png", photo_files[0], tmp_path / "gone.png", tmp_path / "text.jpg",
             tmp_path / "cut.png"]
    result = featurize_files(paths, image_size=SIZE, chunk_files=2)
    report_skipped(result.skipped)  # what the commands print
    assert result.paths == [photo_files[0]]
    reasons = dict(result.skipped)
    assert [p for p, _ in result.skipped] == [paths[0], paths[2], paths[3], paths[4]]  # in input order
    assert reasons[paths[0]].startswith("empty file") and reasons[paths[2]] == "no such file"
    assert reasons[paths[3]].startswith("not an image") and reasons[paths[4]].startswith("truncated/corrupt")
    err = capsys.readouterr().err.splitlines()
    assert f"skipped {paths[2]}: no such file" in err and err[-1] == "4 file(s) skipped"
    report_skipped([])
    assert capsys.readouterr().err == ""


def test_int8_has_its_own_cache_key_and_falls_back_without_vnni(photo_files: list[Path], feature_cache: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import utils.fast_inference as fast

    monkeypatch.setattr(fast, "_int8_supported", lambda: False)
    monkeypatch.setattr(fast, "_warned_fallback", set())
    with pytest.warns(UserWarning, match="int8.*using float32"):
        assert fast.resolve_precision("int8") == "float32"
    monkeypatch.setenv("DEEP_FEATURES_PRECISION", "int8")
    assert fast.resolve_precision() == "float32"  # the environment variable, warned once only
    with pytest.raises(ValueError, match="precision must be one of"):
        fast.resolve_precision("bf17")
    lite0 = backbones.load_backbone("efficientnet_lite0", SIZE)
    assert _array_cache_path("h", lite0, "int8") != _array_cache_path("h", lite0)


@pytest.mark.skipif(not __import__("utils.fast_inference").fast_inference._int8_supported(),
                    reason="no int8 dot-product instructions on this CPU: int8 falls back to float32")
def test_int8_features_are_close_to_float32(photo_files: list[Path]) -> None:
    f32 = featurize_files(photo_files, image_size=SIZE, precision="float32")
    i8 = featurize_files(photo_files, image_size=SIZE, precision="int8")
    rel = np.linalg.norm(i8.features - f32.features) / np.linalg.norm(f32.features)
    assert i8.features.shape == f32.features.shape and 0 < rel < 0.5, rel


@pytest.fixture()
def fresh_handles():
    """Per-process backbones (and the inference steps they hold) cleared before and after."""
    backbones._backbone.cache_clear()
    yield
    backbones._backbone.cache_clear()


def _no_keras(*_args, **_kwargs):
    raise AssertionError("the Keras model was built")


def test_cached_tflite_model_featurizes_without_building_keras(photo_files: list[Path], crops: np.ndarray,
                                                              fresh_handles, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fast_inference._fast_path_enabled():
        pytest.skip("DEEP_FEATURES_FAST is off: the Keras path is asked for")
    first = featurize_files(photo_files[:3], image_size=SIZE, use_cache=False)  # converts, unless cached
    arrays = featurize_images(crops[:2], image_size=SIZE, use_cache=False)
    handle = backbones.load_backbone("efficientnet_lite0", SIZE)
    assert fast_inference._tflite_path(handle, (SIZE, SIZE)).exists()
    backbones._backbone.cache_clear()  # a new backbone: nothing built or stepped in this process
    monkeypatch.setattr(backbones, "_build_lite", _no_keras)
    again = featurize_files(photo_files[:3], image_size=SIZE, use_cache=False)
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(featurize_images(crops[:2], image_size=SIZE, use_cache=False), arrays)


def test_keras_is_built_when_a_conversion_is_needed_or_the_fast_path_is_off(photo_files: list[Path], tmp_path: Path,
                                                                            fresh_handles,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "_build_lite", _no_keras)
    monkeypatch.setenv("DEEP_FEATURES_FAST", "0")
    with pytest.raises(AssertionError, match="Keras model was built"):
        featurize_files(photo_files[:1], image_size=SIZE, use_cache=False)
    backbones._backbone.cache_clear()
    monkeypatch.setenv("DEEP_FEATURES_FAST", "1")
    monkeypatch.setenv("DEEP_FEATURES_CACHE", str(tmp_path / "empty-cache"))  # no converted model to find
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the float32 fast path warns, then falls back to Keras: built too
        with pytest.raises(AssertionError, match="Keras model was built"):
            featurize_files(photo_files[:1], image_size=SIZE, use_cache=False)


def test_tflite_cache_name_needs_no_model_and_changes_with_weights_size_and_precision(fresh_handles) -> None:
    built = backbones._models.cache_info().currsize
    handle = backbones.load_backbone("efficientnet_lite0", SIZE)
    path = fast_inference._tflite_path(handle, (SIZE, SIZE))
    assert backbones._models.cache_info().currsize == built  # named without building the model
    import tensorflow as tf

    assert f"-tf{tf.__version__}-" in path.name  # the converter version, read without importing TensorFlow
    other_weights = backbones._Backbone(backbones.REGISTRY["efficientnet_lite0"], SIZE, "imagenet")
    other_weights.weights_id = "efficientnet_lite0-0123456789abcdef"  # what another checkpoint file would give
    names = {path, fast_inference._tflite_path(handle, (32, 32)), fast_inference._tflite_path(handle, (SIZE, SIZE), "int8"),
             fast_inference._tflite_path(backbones.load_backbone("efficientnet_lite0", 96), (SIZE, SIZE)),
             fast_inference._tflite_path(other_weights, (SIZE, SIZE))}
    assert len(names) == 5


def test_a_fresh_process_with_the_model_cached_imports_neither_tensorflow_nor_keras(photo_files: list[Path]) -> None:
    pytest.importorskip("ai_edge_litert", reason="without ai-edge-litert the interpreter comes from TensorFlow")
    if not fast_inference._fast_path_enabled():
        pytest.skip("DEEP_FEATURES_FAST is off: the Keras path is asked for")
    want = featurize_files(photo_files[:2], image_size=SIZE, use_cache=False).features  # model converted and cached
    code = ("import sys, numpy as np; from utils.features import featurize_files; "
            f"r = featurize_files({[str(p) for p in photo_files[:2]]!r}, image_size={SIZE}, use_cache=False); "
            "np.save(sys.argv[1], r.features); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = Path(photo_files[0]).parent / "features.npy"
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(features.__file__).parents[1])})
    assert done.stdout.strip() == "[]", done.stdout
    np.testing.assert_array_equal(np.load(out), want)


def test_without_ai_edge_litert_the_cached_model_runs_in_tensorflows_interpreter(
        photo_files: list[Path], fresh_handles, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fast_inference._fast_path_enabled():
        pytest.skip("DEEP_FEATURES_FAST is off: the Keras path is asked for")
    want = featurize_files(photo_files[:2], image_size=SIZE, use_cache=False).features
    backbones._backbone.cache_clear()
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails: tf.lite.Interpreter
    monkeypatch.setattr(backbones, "_build_lite", _no_keras)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        got = featurize_files(photo_files[:2], image_size=SIZE, use_cache=False).features
    assert_close(got, want)
