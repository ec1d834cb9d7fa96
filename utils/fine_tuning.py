"""Fine-tuning on a CPU: the frozen bottom of a pretrained network, computed once and cached.

Fine-tuning only the top blocks of a network leaves the bottom blocks frozen: for a given image they
always compute the same activations. So compute them **once** (fast, with the TFLite machinery of
:mod:`utils.fast_inference`), keep them on disk, and train the top blocks + head on them for as many
epochs as needed. Lesson 8 cuts the network itself with ``keras.Model``; this module holds what a
student need not read:

* :func:`block_count`: the number of blocks of an EfficientNet-Lite model.
* :func:`activations`: the activations of any frozen Keras ``bottom`` model for uint8 images, cached
  on disk by content (the bottom's weights and shapes, the images).
* :func:`predict_images`: what a Keras model's ``predict`` returns for uint8 images, computed by the
  model converted to TFLite: the whole network on thousands of images, several times faster on a
  CPU than Keras.
* :func:`pointwise_as_dense`: the same model with its 1x1 convolutions as ``Dense`` layers (same
  weights, same outputs): TensorFlow's CPU gradient of a 1x1 ``Conv2D`` is several times slower than
  the same matrix product's.
* :func:`batches`: a shuffled ``tf.data`` pipeline for ``fit`` (or an ordered one for ``predict``)
  with tf.data's autotuning off: on a 2-core CPU, ``fit`` on NumPy arrays (autotuning on) often left
  a core idle, at half the speed (``benchmarks/README.md``).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import fast_inference
from .backbones import _Backbone
from .cache import _content_hash, _entry_path, _read_entry, _write_entry
from .features import _array_hash

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_BLOCK = re.compile(r"^blocks_(\d+)_")


def block_count(model: "keras.Model") -> int:
    """Number of inverted-residual blocks (``blocks_<i>_...`` layers) of an EfficientNet-Lite
    model."""
    indices = {int(m.group(1)) for layer in model.layers if (m := _BLOCK.match(layer.name))}
    return max(indices) + 1 if indices else 0


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


def _weights_digest(model: "keras.Model") -> str:
    shapes = json.dumps([[None if d is None else int(d) for d in model.input.shape[1:]],
                         [int(d) for d in model.output.shape[1:]]])
    return _content_hash(shapes, *(np.ascontiguousarray(w).tobytes() for w in model.get_weights()))


def _cached_array(path: Path, compute: Callable[[], np.ndarray],
                  use_cache: bool = True) -> np.ndarray:
    """``compute()`` stored as float16 at the cache entry ``path`` and read back as float32 on the
    next call."""
    if use_cache:
        cached = _read_entry(path, lambda p: np.load(p).astype(np.float32), "activation")
        if cached is not None:
            return cached
    # half the space, far below what training can tell apart
    out = np.asarray(compute(), dtype=np.float16)
    if use_cache:
        _write_entry(path, lambda f: np.save(f, out))
    return out.astype(np.float32)


_STEPS: dict[tuple[str, tuple[int, int]], Callable[[np.ndarray], np.ndarray]] = {}


def _inference_step(bottom: "keras.Model", digest: str,
                    input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images -> bottom activations: the bottom converted to TFLite (XNNPACK), else plain
    Keras."""
    if (digest, input_hw) in _STEPS:
        return _STEPS[digest, input_hw]
    # a model of any input size (None) resizes its inputs itself: the step feeds them as they are
    handle = _Backbone(name=bottom.name, input_size=int(bottom.input.shape[1] or input_hw[0]),
                      feature_dim=int(bottom.output.shape[-1]), feature_model=bottom,
                      classifier=None,
                      weights_id=digest)
    step = fast_inference._keras_step(handle)
    if fast_inference._fast_path_enabled():
        try:
            flatbuffer = fast_inference._convert_to_tflite(handle, input_hw)
            runner = fast_inference._TFLiteRunner(flatbuffer)
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


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), "
                         f"got {images.dtype} {images.shape}")
    return images


def _in_batches(step: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                batch_size: int) -> np.ndarray:
    return np.concatenate([step(images[i : i + batch_size])
                           for i in range(0, len(images), batch_size)])


def predict_images(model: "keras.Model", images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``model.predict(images)`` for a Keras model taking [0, 255] RGB images (lesson 8: the
    assembled image model on the test images), computed by the model converted to TFLite (XNNPACK),
    as the featurizer does: on a CPU several times faster than Keras for a whole network. The
    conversion (a few seconds, once per weights and image size) is checked against Keras on two
    images; without TFLite, or for non-square images fed to a model of any input size, Keras."""
    images = _check_images(images)
    hw = (int(images.shape[1]), int(images.shape[2]))
    if model.input.shape[1] is None and hw[0] != hw[1]:
        return model.predict(images, batch_size=batch_size, verbose=0)
    return _in_batches(_inference_step(model, _weights_digest(model), hw), images, batch_size)


def activations(bottom: "keras.Model", images: np.ndarray, batch_size: int = 64,
                use_cache: bool = True) -> np.ndarray:
    """The activations of the frozen Keras model ``bottom`` ([0, 255] RGB images at its input size
    -> a feature map) for uint8 images (N, H, W, 3), resized to its input size: float32 (N, h, w,
    c), cached on disk by content (the bottom's weights and shapes, the images)."""
    images = _check_images(images)
    if len(bottom.output.shape) != 4:
        raise ValueError(f"bottom must output a feature map (N, h, w, c), "
                         f"got {bottom.output.shape}")
    digest = _weights_digest(bottom)

    def compute() -> np.ndarray:
        step = _inference_step(bottom, digest, (int(images.shape[1]), int(images.shape[2])))
        return _in_batches(step, images, batch_size)

    shape = "x".join(str(d) for d in bottom.output.shape[1:])
    path = _entry_path("activations", "bottom", digest, int(bottom.input.shape[1]),
                      content=_array_hash(images), label=f"{shape}-{len(images)}", suffix=".npy")
    return _cached_array(path, compute, use_cache)

