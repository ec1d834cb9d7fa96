"""Fast CPU inference: a Keras model converted to TFLite (uint8 images in, cast and resize inside),
run by XNNPACK, about twice as fast (``benchmarks/README.md``). Each conversion is checked against
Keras and cached; a cached one runs without TensorFlow imported. Without TFLite, or where a
conversion fails, the Keras path, with a warning (``DEEP_FEATURES_FAST=0`` asks for it).
"""

import functools
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .cache import _entry_path, _read_entry, _write_entry
from .runtime import _cpu_flags, _native_stderr_silenced, _package_version

if TYPE_CHECKING:
    import keras

    from .backbones import _Backbone

_FAST_ENV_VAR = "DEEP_FEATURES_FAST"
_PRECISION_ENV_VAR = "DEEP_FEATURES_PRECISION"
_PRECISIONS = ("float32", "int8")
# CPU features that give int8 convolutions their speed: without them int8 is no faster
_INT8_CPU_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
_CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
_INT8_MAX_REL_DIFF = 0.5  # an int8 model further than this from Keras (relative L2) is broken
_CHUNK_SIZE = 8  # images per interpreter call: XNNPACK is fastest on small batches
_NUM_THREADS = min(os.cpu_count() or 1, 4)
_warned_fallback: set[str] = set()


def _fast_path_enabled() -> bool:
    return os.environ.get(_FAST_ENV_VAR, "1").strip().lower() not in {"0", "false", "no", "off"}


def _int8_supported() -> bool:
    return bool(_cpu_flags() & _INT8_CPU_FLAGS)


def resolve_precision(precision: str | None = None) -> str:
    """``precision``, else ``$DEEP_FEATURES_PRECISION``, else float32 (int8: only where faster)."""
    chosen = (precision or os.environ.get(_PRECISION_ENV_VAR) or "float32").strip().lower()
    chosen = {"fp32": "float32", "f32": "float32", "i8": "int8"}.get(chosen, chosen)
    if chosen not in _PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    if chosen == "int8":
        why = ("this CPU has no int8 dot-product instructions (VNNI)" if not _int8_supported()
               else f"the TFLite fast path is off ({_FAST_ENV_VAR}=0)" if not _fast_path_enabled()
               else None)
        if why:
            if why not in _warned_fallback:
                _warned_fallback.add(why)
                warnings.warn(f"int8 inference would not be faster here: {why}; using float32",
                              stacklevel=2)
            return "float32"
    return chosen


def _calibration_images(input_hw: tuple[int, int], count: int = 64) -> np.ndarray:
    """Fixed crops of scikit-image's photos: the same int8 calibration on every machine."""
    from PIL import Image
    from skimage import data as samples
    photos = [getattr(samples, name)() for name in _CALIBRATION_PHOTOS]
    rng = np.random.default_rng(0)
    out = np.empty((count, *input_hw, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(np.ascontiguousarray(photo[y : y + side, x : x + side, :3]))
        out[i] = np.asarray(crop.resize((input_hw[1], input_hw[0]), Image.Resampling.BILINEAR))
    return out


def _interpreter_class():
    try:  # TensorFlow's own tf.lite.Interpreter is deprecated in favour of this package
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter  # AttributeError once TensorFlow drops it: Keras path
    return Interpreter


def _interpreter(flatbuffer: bytes, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return _interpreter_class()(model_content=flatbuffer, **kwargs)


def _tflite_path(backbone: "_Backbone", input_hw: tuple[int, int],
                precision: str = "float32") -> Path:
    """The converted model's cache entry: by weights, sizes, precision and TensorFlow version."""
    h, w = input_hw
    tf_version = _package_version("tensorflow")  # read without importing TensorFlow
    return _entry_path("tflite", backbone.name, backbone.weights_id, backbone.input_size, precision,
                      detail=[h, w, tf_version], label=f"in{h}x{w}-tf{tf_version}",
                      suffix=".tflite")


def _read_flatbuffer(path: Path) -> bytes:
    flatbuffer = path.read_bytes()
    if flatbuffer[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer")
    _interpreter(flatbuffer)
    return flatbuffer


def _resized(images, size: int):
    import tensorflow as tf
    return tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear")


def _keras_step(model: "keras.Model", size: int) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images -> a tf.function (cast, bilinear resize to ``size``, ``model``) -> numpy."""
    import tensorflow as tf
    step = tf.function(lambda images: model(_resized(images, size), training=False),
                       input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                       reduce_retracing=True)
    return lambda images: step(images).numpy()


def _convert_to_tflite(model: "keras.Model", size: int, input_hw: tuple[int, int],
                      quantization: str = "none",
                      calibration: np.ndarray | None = None) -> bytes:
    """A flatbuffer: uint8 images -> cast -> bilinear resize to ``size`` -> ``model``."""
    import contextlib
    import io

    import keras
    import tensorflow as tf
    inputs = keras.Input((*input_hw, 3), dtype="uint8", name="rgb_uint8")
    same = tuple(input_hw) == (size, size)
    x = keras.layers.Lambda(lambda t: tf.cast(t, tf.float32) if same else _resized(t, size))(inputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(
        keras.Model(inputs, model(x, training=False)))
    converter.optimizations = []  # float32: features must stay the same
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i : i + 1]]
                                                     for i in range(len(calibration)))
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization != "none":
        raise ValueError(f"quantization must be 'none', 'int8' or 'float16', got {quantization!r}")
    logger = tf.get_logger()  # "INFO:tensorflow:Assets written to ..." in every notebook
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return converter.convert()
    finally:
        logger.setLevel(level)


class _TFLiteRunner:
    """One interpreter: uint8 (N, h, w, 3) -> outputs, ``chunk_size`` images per call."""
    def __init__(self, flatbuffer: bytes, chunk_size: int = _CHUNK_SIZE,
                 num_threads: int = _NUM_THREADS) -> None:
        self._interpreter = _interpreter(flatbuffer, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        output = self._interpreter.get_output_details()[0]
        self._output, self._shape = output["index"], tuple(output["shape"][1:])
        self._batch = 0
        self._lock = threading.Lock()  # an interpreter is not thread-safe
        self.chunk_size = chunk_size

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(x.shape), strict=False)
            with _native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                self._interpreter.allocate_tensors()
            self._batch = len(x)
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(x))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            parts = [self._invoke(images[s : s + self.chunk_size])
                     for s in range(0, len(images), self.chunk_size)]
        return np.concatenate(parts) if parts else np.empty((0, *self._shape), np.float32)


def _checked_conversion(model: "keras.Model", size: int, input_hw: tuple[int, int],
                        precision: str = "float32") -> bytes:
    """The flatbuffer, if its outputs are ``model``'s (float32: to 1e-3 * max(1, |output|))."""
    if precision == "int8":
        calibration = _calibration_images(input_hw)
        flatbuffer = _convert_to_tflite(model, size, input_hw, "int8", calibration)
        x = calibration[:8]
    else:
        flatbuffer = _convert_to_tflite(model, size, input_hw)
        x = np.random.default_rng(0).integers(0, 256, (2, *input_hw, 3), dtype=np.uint8)
    want = np.asarray(model(_resized(x, size), training=False))
    got = _TFLiteRunner(flatbuffer)(x)
    if precision == "int8":
        diff, limit = float(np.linalg.norm(got - want) / np.linalg.norm(want)), _INT8_MAX_REL_DIFF
    else:
        diff, limit = float(np.abs(got - want).max()), 1e-3 * max(1.0, float(np.abs(want).max()))
    if not diff <= limit:
        raise ValueError(f"{precision} TFLite outputs differ from the Keras model's by {diff:g} "
                         f"(> {limit:g})")
    return flatbuffer


def _load_or_convert(backbone: "_Backbone", input_hw: tuple[int, int],
                    precision: str = "float32") -> bytes:
    """The cached flatbuffer for uint8 images of ``input_hw``, converted and checked first."""
    path = _tflite_path(backbone, input_hw, precision)
    flatbuffer = _read_entry(path, _read_flatbuffer, "TFLite model")
    if flatbuffer is None:
        flatbuffer = _checked_conversion(backbone.feature_model, backbone.input_size, input_hw,
                                         precision)
        _write_entry(path, flatbuffer)
    return flatbuffer


def _tflite_featurizer(backbone: "_Backbone",
                      precision: str = "float32") -> Callable[[np.ndarray], np.ndarray] | None:
    """uint8 images -> features, a TFLite model per input size; None when the fast path is off."""
    if not _fast_path_enabled():
        return None
    try:
        _interpreter_class()  # no interpreter, no conversion
    except Exception as exc:  # any failure of an optional accelerator means: the Keras path
        warnings.warn(f"fast TFLite inference unavailable, using Keras "
                      f"({type(exc).__name__}: {exc})", stacklevel=2)
        return None
    lock = threading.Lock()  # one conversion at a time

    @functools.lru_cache(maxsize=None)
    def runner(input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        try:
            return _TFLiteRunner(_load_or_convert(backbone, input_hw, precision))
        except Exception as exc:
            if precision != "float32":  # never float32 features under an int8 key
                raise
            warnings.warn(f"fast TFLite inference unavailable for {input_hw} images, using "
                          f"Keras ({type(exc).__name__}: {exc})", stacklevel=4)
            return _keras_step(backbone.feature_model, backbone.input_size)

    def featurize(images: np.ndarray) -> np.ndarray:
        with lock:
            step = runner((int(images.shape[1]), int(images.shape[2])))
        return step(images)

    return featurize
