"""Fast CPU inference for the featurizer: the Keras feature model run as a float32 TFLite model by XNNPACK.

On a small CPU, TensorFlow's graph executor spends much of EfficientNet-Lite's time in per-op overhead and in its
depthwise convolutions; the same network converted to a TFLite flatbuffer (batch norms folded into the convolutions,
no quantization: float32 in, float32 out) and run by the XNNPACK delegate is about twice as fast and gives the same
features to ~1e-5 (see ``benchmarks/README.md``).

The converted model takes the uint8 images as they come (cast and bilinear resize are inside it, as in the Keras
step). The conversion (~6-9 s) happens once per backbone, weights, model size and input image size: the flatbuffer
is cached under ``cache_root()/tflite`` with the weights id in its name, written atomically, and checked against the
Keras model when it is made. Whenever TFLite is unavailable or a conversion fails, the Keras path is used instead
(:func:`tflite_featurizer` returns ``None``, or the featurizer falls back for that input size, with a warning);
``DEEP_FEATURES_FAST=0`` asks for the Keras path explicitly.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .runtime import atomic_write, cache_root, native_stderr_silenced

if TYPE_CHECKING:
    from .backbones import Backbone

FAST_ENV_VAR = "DEEP_FEATURES_FAST"
TFLITE_FORMAT = 2  # bump when the conversion changes, to invalidate cached flatbuffers
CHUNK_SIZE = 8  # images per interpreter call: XNNPACK is fastest on small batches (cache-resident activations)
NUM_THREADS = min(os.cpu_count() or 1, 4)
MAX_ABS_DIFF = 1e-3  # a converted model whose features differ more from the Keras model's is rejected


def fast_path_enabled() -> bool:
    return os.environ.get(FAST_ENV_VAR, "1").strip().lower() not in {"0", "false", "no", "off"}


def _interpreter_class():
    try:  # TensorFlow's own tf.lite.Interpreter is deprecated in favour of this package
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # AttributeError once TensorFlow drops it: the caller falls back
    return Interpreter


def tflite_path(backbone: "Backbone", input_hw: tuple[int, int]) -> Path:
    import tensorflow as tf

    h, w = input_hw
    name = (f"{backbone.weights_id}-{backbone.input_size}px-in{h}x{w}-tf{tf.__version__}-f{TFLITE_FORMAT}.tflite")
    return cache_root() / "tflite" / name


def _keras_reference(backbone: "Backbone", images: np.ndarray) -> np.ndarray:
    """What the plain Keras step computes: cast, bilinear resize to the model's size, model."""
    import tensorflow as tf

    size = backbone.input_size
    x = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear")
    return np.asarray(backbone.feature_model(x, training=False))


def convert_to_tflite(backbone: "Backbone", input_hw: tuple[int, int], quantization: str = "none",
                      calibration: np.ndarray | None = None) -> bytes:
    """A TFLite flatbuffer: uint8 (N, h, w, 3) -> cast -> bilinear resize to the model's size -> features.

    The resize is inside the model, as in the Keras step, so only the small uint8 images cross into the
    interpreter. ``quantization="none"`` (the default) freezes the float32 weights in as they are; ``"int8"`` is
    post-training quantization of weights and activations, calibrated on ``calibration`` images (uint8, shaped
    like the input; features stay float32); ``"float16"`` stores float16 weights.
    """
    import contextlib
    import io

    import keras
    import tensorflow as tf

    size = backbone.input_size
    inputs = keras.Input((*input_hw, 3), dtype="uint8", name="rgb_uint8")
    x = keras.layers.Lambda(lambda t: tf.cast(t, tf.float32), name="to_float")(inputs)
    if tuple(input_hw) != (size, size):
        x = keras.layers.Lambda(lambda t: tf.image.resize(t, (size, size), method="bilinear"), name="resize")(x)
    model = keras.Model(inputs, backbone.feature_model(x, training=False))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = []  # float32: features must stay the same
    if quantization == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 quantization needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization != "none":
        raise ValueError(f"quantization must be 'none', 'int8' or 'float16', got {quantization!r}")
    logger = tf.get_logger()  # the export logs "INFO:tensorflow:Assets written to ..." into every notebook
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # keras prints its export
            warnings.simplefilter("ignore")
            return converter.convert()
    finally:
        logger.setLevel(level)


class TFLiteRunner:
    """One interpreter for one flatbuffer: uint8 (N, h, w, 3) -> features, ``chunk_size`` images per call."""

    def __init__(self, flatbuffer: bytes, chunk_size: int = CHUNK_SIZE, num_threads: int = NUM_THREADS) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            self._interpreter = _interpreter_class()(model_content=flatbuffer, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self.feature_dim = int(self._interpreter.get_output_details()[0]["shape"][-1])
        self._batch = 0
        self._lock = threading.Lock()  # an interpreter is not thread-safe
        self.chunk_size = chunk_size

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(x.shape), strict=False)
            with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self._interpreter.allocate_tensors()
            self._batch = len(x)
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(x))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            parts = [self._invoke(images[s : s + self.chunk_size]) for s in range(0, len(images), self.chunk_size)]
        return np.concatenate(parts) if parts else np.empty((0, self.feature_dim), np.float32)


def load_or_convert(backbone: "Backbone", input_hw: tuple[int, int]) -> bytes:
    """The cached flatbuffer of ``backbone`` for uint8 inputs of ``input_hw``, converted and checked on first use."""
    path = tflite_path(backbone, input_hw)
    if path.exists():
        return path.read_bytes()
    flatbuffer = convert_to_tflite(backbone, input_hw)
    x = np.random.default_rng(0).integers(0, 256, (2, *input_hw, 3), dtype=np.uint8)
    diff = float(np.abs(TFLiteRunner(flatbuffer)(x) - _keras_reference(backbone, x)).max())
    if not diff <= MAX_ABS_DIFF:
        raise ValueError(f"TFLite features differ from the Keras model's by {diff:g} (> {MAX_ABS_DIFF})")
    atomic_write(path, flatbuffer)
    return flatbuffer


class TFLiteFeaturizer:
    """uint8 images (N, h, w, 3) -> float32 features (N, dim), resized to the model's size like the Keras step.

    One converted model (and interpreter) per input image size, made on first sight of that size.
    """

    def __init__(self, backbone: "Backbone", chunk_size: int = CHUNK_SIZE, num_threads: int = NUM_THREADS) -> None:
        self._backbone = backbone
        self._runners: dict[tuple[int, int], Callable[[np.ndarray], np.ndarray]] = {}
        self._lock = threading.Lock()
        self.chunk_size = chunk_size
        self.num_threads = num_threads

    def runner(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        with self._lock:
            if input_hw not in self._runners:
                flatbuffer = load_or_convert(self._backbone, input_hw)
                self._runners[input_hw] = TFLiteRunner(flatbuffer, self.chunk_size, self.num_threads)
            return self._runners[input_hw]

    def _runner_or_keras(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        try:
            return self.runner(input_hw)
        except Exception as exc:  # this input size will not convert: the plain Keras path for it
            warnings.warn(f"fast TFLite inference unavailable for {input_hw} images, using Keras "
                          f"({type(exc).__name__}: {exc})", stacklevel=3)
            fallback = keras_step(self._backbone)
            with self._lock:
                self._runners[input_hw] = fallback
            return fallback

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        return self._runner_or_keras((int(images.shape[1]), int(images.shape[2])))(images)


def keras_step(backbone: "Backbone") -> Callable[[np.ndarray], np.ndarray]:
    """The plain Keras path: a tf.function (cast, bilinear resize to the model's size, model) -> numpy features.

    Used when the fast path is off or fails; resizing an image already at the model's size changes nothing."""
    import tensorflow as tf

    size, model = backbone.input_size, backbone.feature_model

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], reduce_retracing=True)
    def step(images):
        return model(tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear"), training=False)

    return lambda images: step(images).numpy()


def tflite_featurizer(backbone: "Backbone") -> TFLiteFeaturizer | None:
    """A :class:`TFLiteFeaturizer` for ``backbone``, or ``None`` (use Keras) when the fast path is off or fails."""
    if not fast_path_enabled():
        return None
    try:
        _interpreter_class()  # no interpreter, no conversion
        return TFLiteFeaturizer(backbone)  # converts per input size on first use; a failed size falls back to Keras
    except Exception as exc:  # any failure of an optional accelerator means: the plain Keras path
        warnings.warn(f"fast TFLite inference unavailable, using Keras ({type(exc).__name__}: {exc})", stacklevel=2)
        return None
