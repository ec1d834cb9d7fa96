"""Fine-tuning on a CPU: the frozen bottom of a pretrained network, computed once and cached.

Fine-tuning only the top blocks of a network leaves the bottom blocks frozen: for a given image they
always compute the same activations. So compute them **once** (fast, with the TFLite machinery of
:mod:`utils.fast_inference`), keep them on disk, and train the top blocks + head on them for as many
epochs as needed. Lesson 8 cuts the network itself with ``keras.Model``; this module holds what a
student need not read:

* :func:`activations`: the activations of any frozen Keras ``bottom`` model for uint8 images, cached
  on disk by content (the bottom's weights and shapes, the images, the flip). Flipping an image
  flips its activations only approximately, so flipped images get their own cached activations
  (``flip=True``).
* :func:`split_backbone` -> :class:`SplitBackbone`: the same cut as lesson 8's cells, as a function
  (for the benchmark and the tests): ``bottom`` and ``top`` holding a *copy* of the backbone's
  weights.
* :func:`pointwise_as_dense`: the same model with its 1x1 convolutions as ``Dense`` layers (same
  weights, same outputs): TensorFlow's CPU gradient of a 1x1 ``Conv2D`` is several times slower than
  the same matrix product's.
* :func:`batches`: a shuffled ``tf.data`` pipeline for ``fit`` (or an ordered one for ``predict``)
  with tf.data's autotuning off: on a 2-core CPU, ``fit`` on NumPy arrays (autotuning on) often left
  a core idle, at half the speed (``benchmarks/README.md``).
* :func:`cpu_has_bf16` / :func:`compute_dtype`: bfloat16 mixed precision only where the CPU computes
  it natively. Native is not enough to be faster: measured slower than float32 for these top blocks
  (``benchmarks/fine_tuning.py``, ``benchmarks/README.md``), so lesson 8 uses float32.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import fast_inference
from .backbones import Backbone
from .cache import content_hash, entry_path, read_entry, write_entry
from .features import array_hash
from .runtime import cpu_flags

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_BLOCK = re.compile(r"^blocks_(\d+)_")


def block_count(model: "keras.Model") -> int:
    """Number of inverted-residual blocks (``blocks_<i>_...`` layers) of an EfficientNet-Lite
    model."""
    indices = {int(m.group(1)) for layer in model.layers if (m := _BLOCK.match(layer.name))}
    return max(indices) + 1 if indices else 0


def stage_starts(model: "keras.Model") -> list[int]:
    """Index of the first block of each stage (a run of blocks with the same output width) of
    EfficientNet-Lite."""
    widths = [int(model.get_layer(f"blocks_{i}_project_conv").kernel.shape[-1])
              for i in range(block_count(model))]
    return [i for i, w in enumerate(widths) if i == 0 or w != widths[i - 1]]


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def compute_dtype(requested: str = "auto") -> str:
    """The Keras dtype policy for training: ``"mixed_bfloat16"`` when asked (or ``"auto"`` and the
    CPU has bf16), else ``"float32"``. Asking for bf16 on a CPU without it falls back to float32
    with a warning (it would be emulated, slower than float32)."""
    if requested == "float32":
        return "float32"
    if requested not in {"auto", "mixed_bfloat16"}:
        raise ValueError(f"mixed precision must be 'auto', 'mixed_bfloat16' or 'float32', "
                         f"got {requested!r}")
    if cpu_has_bf16():
        return "mixed_bfloat16"
    if requested == "mixed_bfloat16":
        warnings.warn("this CPU has no native bfloat16 (avx512_bf16/amx_bf16): training in float32",
                      stacklevel=2)
    return "float32"


def _clone(model: "keras.Model", dtype: str) -> "keras.Model":
    """A copy of ``model`` with fresh layers (same names and weights) computing in the ``dtype``
    policy."""
    import keras

    def copy_layer(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = dtype
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=copy_layer)
    clone.set_weights(model.get_weights())
    return clone


def pointwise_as_dense(model: "keras.Model") -> "keras.Model":
    """A copy of the functional ``model`` in which every 1x1, stride-1 ``Conv2D`` is a ``Dense``
    layer with the same name and weights. A 1x1 convolution is a Dense layer applied at every
    position, so the outputs are the same; the gradients are computed as matrix products, several
    times faster on a CPU than TensorFlow's ``Conv2DBackpropInput``. Other layers are copied with
    their weights."""
    import keras

    def is_pointwise(layer) -> bool:
        return (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
                and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
                and layer.groups == 1)

    def copy_layer(layer):
        if is_pointwise(layer):
            return keras.layers.Dense(layer.filters, activation=layer.activation,
                                      use_bias=layer.use_bias,
                                      name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=copy_layer)
    for source, target in zip(model.layers, clone.layers):
        weights = source.get_weights()
        if is_pointwise(source):
            weights[0] = weights[0].reshape(weights[0].shape[2:])  # (1, 1, in, out) -> (in, out)
        target.set_weights(weights)
    clone.trainable = model.trainable
    return clone


def batches(x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 32, shuffle: bool = True,
            seed: int = 0) -> "tf.data.Dataset":
    """``(x, y)`` (``x`` alone when ``y`` is None, for ``predict``) as a ``tf.data.Dataset`` of
    batches for ``fit``/``evaluate``/``predict``, reshuffled every epoch when ``shuffle`` (seeded),
    with tf.data's autotuning off. ``fit`` and ``predict`` on NumPy arrays build such a pipeline
    with autotuning on; on a 2-core CPU that left a core idle in many ``fit`` calls (5 of 6 in one
    measured run, 6 of 20 in another), at half the speed (``benchmarks/training_step.py``)."""
    import tensorflow as tf

    if y is None and len(x) == 0:
        raise ValueError("x must hold at least one row, got 0")
    if y is not None and (len(x) != len(y) or len(x) == 0):
        raise ValueError(f"x and y must hold the same, non-zero number of rows, "
                         f"got {len(x)} and {len(y)}")
    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).prefetch(1).with_options(options)


def _apply(layers_by_name: dict, names: list[str], x):
    for name in names:
        x = layers_by_name[name](x)
    return x


def _weights_digest(model: "keras.Model") -> str:
    shapes = json.dumps([tuple(map(int, model.input.shape[1:])),
                         tuple(map(int, model.output.shape[1:]))])
    return content_hash(shapes, *(np.ascontiguousarray(w).tobytes() for w in model.get_weights()))


def _cached_array(path: Path, compute: Callable[[], np.ndarray],
                  use_cache: bool = True) -> np.ndarray:
    """``compute()`` stored as float16 at the cache entry ``path`` and read back as float32 on the
    next call."""
    if use_cache:
        cached = read_entry(path, lambda p: np.load(p).astype(np.float32), "activation")
        if cached is not None:
            return cached
    # half the space, far below what training can tell apart
    out = np.asarray(compute(), dtype=np.float16)
    if use_cache:
        write_entry(path, lambda f: np.save(f, out))
    return out.astype(np.float32)


_STEPS: dict[tuple[str, tuple[int, int]], Callable[[np.ndarray], np.ndarray]] = {}


def _inference_step(bottom: "keras.Model", digest: str,
                    input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images -> bottom activations: the bottom converted to TFLite (XNNPACK), else plain
    Keras."""
    if (digest, input_hw) in _STEPS:
        return _STEPS[digest, input_hw]
    handle = Backbone(name=bottom.name, input_size=int(bottom.input.shape[1]),
                      feature_dim=int(bottom.output.shape[-1]), feature_model=bottom,
                      classifier=None,
                      weights_id=digest)
    step = fast_inference.keras_step(handle)
    if fast_inference.fast_path_enabled():
        try:
            runner = fast_inference.TFLiteRunner(fast_inference.convert_to_tflite(handle, input_hw))
            probe = np.random.default_rng(0).integers(0, 256, (2, *input_hw, 3), dtype=np.uint8)
            reference = step(probe)
            diff = float(np.abs(runner(probe) - reference).max())
            if diff <= 1e-2 * max(1.0, float(np.abs(reference).max())):
                step = runner
            else:
                warnings.warn(f"TFLite activations differ from Keras by {diff:g}: using Keras",
                              stacklevel=3)
        # any failure of the optional fast path means: the plain Keras path
        except Exception as exc:
            warnings.warn(f"fast TFLite inference unavailable, using Keras "
                          f"({type(exc).__name__}: {exc})", stacklevel=3)
    _STEPS[digest, input_hw] = step
    return step


def activations(bottom: "keras.Model", images: np.ndarray, flip: bool = False, batch_size: int = 64,
                use_cache: bool = True) -> np.ndarray:
    """The activations of the frozen Keras model ``bottom`` ([0, 255] RGB images at its input size
    -> a feature map) for uint8 images (N, H, W, 3), resized to its input size: float32 (N, h, w,
    c), cached on disk by content (the bottom's weights and shapes, the images, ``flip``). ``flip``
    mirrors the images left-right first."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), "
                         f"got {images.dtype} {images.shape}")
    if len(bottom.output.shape) != 4:
        raise ValueError(f"bottom must output a feature map (N, h, w, c), "
                         f"got {bottom.output.shape}")
    digest = _weights_digest(bottom)

    def compute() -> np.ndarray:
        x = np.ascontiguousarray(images[:, :, ::-1]) if flip else images
        step = _inference_step(bottom, digest, (int(x.shape[1]), int(x.shape[2])))
        return np.concatenate([step(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    shape = "x".join(str(d) for d in bottom.output.shape[1:])
    path = entry_path("activations", "bottom", digest, int(bottom.input.shape[1]),
                      content=array_hash(images),
                      detail=[flip], label=f"{shape}-{len(images)}{'-flip' if flip else ''}",
                      suffix=".npy")
    return _cached_array(path, compute, use_cache)


@dataclass
class SplitBackbone:
    """A backbone cut before block ``first_top_block``: ``bottom`` (frozen, images -> activations)
    and ``top``."""

    backbone: Backbone
    first_top_block: int
    bottom: "keras.Model"
    top: "keras.Model"

    @property
    def activation_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.bottom.output.shape[1:])

    def activations(self, images: np.ndarray, flip: bool = False, batch_size: int = 64,
                    use_cache: bool = True) -> np.ndarray:
        """:func:`activations` of ``self.bottom``."""
        return activations(self.bottom, images, flip, batch_size, use_cache)


def split_backbone(backbone: Backbone, first_top_block: int | None = None,
                   dtype: str = "float32") -> SplitBackbone:
    """Cut an EfficientNet-Lite backbone before block ``first_top_block`` (counting from 0;
    ``None``: the first block of the second-to-last stage, i.e. the top two stages are fine-tuned:
    block 11 of lite0, 15 of lite2).

    ``bottom`` maps [0, 255] images to the activations entering that block; ``top`` maps those
    activations to the pooled features, through the remaining blocks and the head convolution. Both
    hold a copy of the weights; ``top`` computes in ``dtype`` (``"mixed_bfloat16"`` for bf16 mixed
    precision), ``bottom`` always in float32. ``top(bottom(x))`` equals
    ``backbone.feature_model(x)``.
    """
    import keras

    model = backbone.feature_model
    n_blocks = block_count(model)
    if n_blocks == 0:
        raise ValueError(f"{backbone.name} is not an EfficientNet-Lite backbone: it cannot be "
                         f"split into blocks here (use efficientnet_lite0/1/2)")
    if first_top_block is None:
        first_top_block = stage_starts(model)[-2]
    if not 0 <= first_top_block < n_blocks:
        raise ValueError(f"first_top_block must be between 0 and {n_blocks - 1} "
                         f"for {backbone.name}, got {first_top_block}")
    bottom_source, top_source = _clone(model, "float32"), _clone(model, dtype)
    names = [layer.name for layer in model.layers]
    cut = next(i for i, n in enumerate(names) if n.startswith(f"blocks_{first_top_block}_"))
    bottom = keras.Model(bottom_source.input, bottom_source.get_layer(names[cut - 1]).output,
                         name=f"{backbone.name}_bottom")

    layers = {layer.name: layer for layer in top_source.layers}
    inputs = keras.Input(tuple(bottom.output.shape[1:]), name="activations")
    x = inputs
    for index in range(first_top_block, n_blocks):
        prefix = f"blocks_{index}_"
        block = [n for n in names if n.startswith(prefix) and n != prefix + "add"]
        shortcut = x
        x = _apply(layers, block, x)
        if prefix + "add" in layers:
            x = layers[prefix + "add"]([shortcut, x])
    x = _apply(layers, [n for n in names[names.index(f"blocks_{n_blocks - 1}_project_conv"):]
                        if not n.startswith("blocks_")], x)
    top = keras.Model(inputs, x, name=f"{backbone.name}_top")
    return SplitBackbone(backbone, first_top_block, bottom, top)
