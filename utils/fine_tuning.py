"""Fine-tuning on a CPU (lesson 8): the frozen bottom's outputs computed once (TFLite), cached."""

import functools
import json
import re
import warnings
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import fast_inference
from .cache import _content_hash, _entry_path, _read_entry, _write_entry
from .features import _array_hash

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_BLOCK = re.compile(r"^blocks_(\d+)_")


def block_count(model: "keras.Model") -> int:
    """Number of blocks (``blocks_<i>_`` layers) of an EfficientNet-Lite model. Used by lesson 8."""
    indices = {int(m.group(1)) for layer in model.layers if (m := _BLOCK.match(layer.name))}
    return max(indices) + 1 if indices else 0


def pointwise_as_dense(model: "keras.Model") -> "keras.Model":
    """A copy of ``model`` with every 1x1, stride-1 ``Conv2D`` a ``Dense`` layer (same name,
    weights and outputs; its gradient is several times faster on a CPU). Used by lesson 8."""
    import keras
    def is_pointwise(layer) -> bool:
        return (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
                and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
                and layer.groups == 1)

    def copy_layer(layer):
        if is_pointwise(layer):
            return keras.layers.Dense(layer.filters, activation=layer.activation,
                                      use_bias=layer.use_bias, name=layer.name,
                                      dtype=layer.dtype_policy)
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
    """``(x, y)`` (``x`` for ``predict``) in batches, reshuffled each epoch, tf.data's autotuning
    off (faster on 2 cores: ``benchmarks/training_step.py``). Used by lesson 8."""
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


@functools.lru_cache(maxsize=8)
def _inference_step(model: "keras.Model", digest: str,
                    input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images -> ``model``'s outputs (``digest``: its weights): TFLite, else Keras."""
    # a model of any input size (None) takes the images at their size
    size = int(model.input.shape[1] or input_hw[0])
    if fast_inference._fast_path_enabled():
        try:
            return fast_inference._TFLiteRunner(
                fast_inference._checked_conversion(model, size, input_hw))
        except Exception as exc:  # any failure of the optional fast path means: Keras
            warnings.warn(f"fast TFLite inference unavailable, using Keras "
                          f"({type(exc).__name__}: {exc})", stacklevel=3)
    return fast_inference._keras_step(model, size)


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
    """``model.predict(images)`` for uint8 images, by TFLite where it can (several times faster on
    a CPU). Used by lesson 8."""
    images = _check_images(images)
    hw = (int(images.shape[1]), int(images.shape[2]))
    if model.input.shape[1] is None and hw[0] != hw[1]:
        return model.predict(images, batch_size=batch_size, verbose=0)
    return _in_batches(_inference_step(model, _weights_digest(model), hw), images, batch_size)


def activations(bottom: "keras.Model", images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The outputs (N, h, w, c) of the frozen ``bottom`` for uint8 images, float32, cached on disk
    by content (the bottom's weights and shapes, the images). Used by lesson 8."""
    images = _check_images(images)
    if len(bottom.output.shape) != 4:
        raise ValueError(f"bottom must output a feature map (N, h, w, c), "
                         f"got {bottom.output.shape}")
    digest = _weights_digest(bottom)
    shape = "x".join(str(d) for d in bottom.output.shape[1:])
    path = _entry_path("activations", "bottom", digest, int(bottom.input.shape[1]),
                      content=_array_hash(images), label=f"{shape}-{len(images)}", suffix=".npy")
    cached = _read_entry(path, lambda p: np.load(p).astype(np.float32), "activation")
    if cached is not None:
        return cached
    step = _inference_step(bottom, digest, (int(images.shape[1]), int(images.shape[2])))
    out = _in_batches(step, images, batch_size).astype(np.float16)  # half the space, as good
    _write_entry(path, lambda f: np.save(f, out))
    return out.astype(np.float32)
