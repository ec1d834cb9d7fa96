"""Fast CPU inference for the featurizer: the Keras feature model run as a float32 TFLite model by
XNNPACK.

On a small CPU, TensorFlow's graph executor spends much of EfficientNet-Lite's time in per-op
overhead and in its depthwise convolutions; the same network converted to a TFLite flatbuffer (batch
norms folded into the convolutions, no quantization: float32 in, float32 out) and run by the XNNPACK
delegate is about twice as fast and gives the same features to ~1e-5 (see ``benchmarks/README.md``).

The converted model takes the uint8 images as they come (cast and bilinear resize are inside it, as
in the Keras step). The conversion happens once per backbone, weights, model size, input image size
and precision: the flatbuffer is cached by :mod:`utils.cache` (``tflite/``, keyed also by the
TensorFlow version) and checked against the Keras model when it is made. Whenever TFLite is
unavailable or a conversion fails, the Keras path is used instead (:func:`_tflite_featurizer`
returns ``None``, or the featurizer falls back for that input size, with a warning);
``DEEP_FEATURES_FAST=0`` asks for the Keras path explicitly.

Start-up: every function here takes a built :class:`~utils.backbones._Backbone` or a
:class:`~utils.backbones._BackboneHandle`, which builds the Keras model only when something needs it
(a conversion, its check, or the Keras path). With the flatbuffer cached and ai-edge-litert
installed, a featurization imports neither TensorFlow nor Keras: the cache name needs only the
weights id (the checkpoint file's hash) and the installed TensorFlow version.

Reduced precision is an explicit choice (:func:`resolve_precision`: an argument,
``$DEEP_FEATURES_PRECISION``, or the commands' ``--precision``): ``"int8"`` converts the same
network with post-training int8 quantization, calibrated on fixed crops of scikit-image's sample
photos, and runs it with XNNPACK, whose int8 kernels use the CPU's VNNI dot products. Where the CPU
lacks them it falls back to float32 with one warning.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .cache import _entry_path, _read_entry, _write_entry
from .runtime import _cpu_flags, _native_stderr_silenced, _package_version

if TYPE_CHECKING:
    from .backbones import _Backbone, _BackboneHandle

_FAST_ENV_VAR = "DEEP_FEATURES_FAST"
_PRECISION_ENV_VAR = "DEEP_FEATURES_PRECISION"
_PRECISIONS = ("float32", "int8")
# CPU features that give int8 convolutions their speed (dot-product instructions); without them int8
# is no faster.
_INT8_CPU_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
_CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# an int8 model further than this from the Keras features (relative L2) is broken
_INT8_MAX_REL_DIFF = 0.5
# images per interpreter call: XNNPACK is fastest on small batches (cache-resident activations)
_CHUNK_SIZE = 8
_NUM_THREADS = min(os.cpu_count() or 1, 4)
# a converted model whose features differ more from the Keras model's is rejected
_MAX_ABS_DIFF = 1e-3


def _fast_path_enabled() -> bool:
    """Whether the TFLite fast path is on (``$DEEP_FEATURES_FAST``, default on).

    Used by :mod:`utils.fine_tuning` (lesson 8); no lesson calls it.
    """
    return os.environ.get(_FAST_ENV_VAR, "1").strip().lower() not in {"0", "false", "no", "off"}


def _int8_supported() -> bool:
    """Whether int8 inference is faster than float32 here: the CPU has dot-product instructions
    (e.g. VNNI)."""
    return bool(_cpu_flags() & _INT8_CPU_FLAGS)


_warned_fallback: set[str] = set()


def resolve_precision(precision: str | None = None) -> str:
    """The inference precision to use: ``precision``, else ``$DEEP_FEATURES_PRECISION``, else
    ``"float32"``.

    ``"int8"`` is the reduced-precision fast path (post-training quantization, run by XNNPACK),
    faster than float32 only on CPUs with int8 dot products (VNNI); its speed and accuracy:
    ``benchmarks/README.md``. Where the CPU lacks those instructions, or the float32 fast path is
    off, it falls back to ``"float32"`` with one warning. Features of each precision are cached
    under their own key.

    The featurizer's (every lesson's); the tool records the precision it resolves.
    """
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
    """Fixed natural images for int8 calibration: crops of scikit-image's sample photos, resized to
    ``input_hw``.

    The same images on every machine, so the int8 model (and its cached features) depends on the
    weights alone.
    """
    from PIL import Image
    from skimage import data as samples

    # RGB photos shipped inside scikit-image
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
        import tensorflow as tf  # not imported yet where a cached model needs no Keras
        # AttributeError once TensorFlow drops it: the caller falls back
        Interpreter = tf.lite.Interpreter
    return Interpreter


def _tflite_path(backbone: "_Backbone | _BackboneHandle", input_hw: tuple[int, int],
                precision: str = "float32") -> Path:
    """Where the converted model is cached: keyed by weights, model size, input size, precision and
    converter version (read from the installed package, so finding a cached model imports neither
    TensorFlow nor Keras)."""
    h, w = input_hw
    tf_version = _package_version("tensorflow")
    return _entry_path("tflite", backbone.name, backbone.weights_id, backbone.input_size, precision,
                      detail=[h, w, tf_version], label=f"in{h}x{w}-tf{tf_version}",
                      suffix=".tflite")


def _read_flatbuffer(path: Path) -> bytes:
    """A cached flatbuffer, checked by its file identifier and by loading it into an interpreter."""
    flatbuffer = path.read_bytes()
    if flatbuffer[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        _interpreter_class()(model_content=flatbuffer)
    return flatbuffer


def _keras_reference(backbone: "_Backbone | _BackboneHandle", images: np.ndarray) -> np.ndarray:
    """What the plain Keras step computes: cast, bilinear resize to the model's size, model."""
    import tensorflow as tf

    size = backbone.input_size
    x = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear")
    return np.asarray(backbone.feature_model(x, training=False))


def _convert_to_tflite(backbone: "_Backbone | _BackboneHandle", input_hw: tuple[int, int],
                      quantization: str = "none",
                      calibration: np.ndarray | None = None) -> bytes:
    """A TFLite flatbuffer: uint8 (N, h, w, 3) -> cast -> bilinear resize to the model's size ->
    features.

    The resize is inside the model, as in the Keras step, so only the small uint8 images cross into
    the interpreter. ``quantization="none"`` (the default) freezes the float32 weights in as they
    are; ``"int8"`` is post-training quantization of weights and activations, calibrated on
    ``calibration`` images (uint8, shaped like the input; features stay float32); ``"float16"``
    stores float16 weights.

    Used by :mod:`utils.fine_tuning` (lesson 8); no lesson calls it.
    """
    import contextlib
    import io

    import keras
    import tensorflow as tf

    size = backbone.input_size
    inputs = keras.Input((*input_hw, 3), dtype="uint8", name="rgb_uint8")
    x = keras.layers.Lambda(lambda t: tf.cast(t, tf.float32), name="to_float")(inputs)
    if tuple(input_hw) != (size, size):
        x = keras.layers.Lambda(lambda t: tf.image.resize(t, (size, size), method="bilinear"),
                                name="resize")(x)
    model = keras.Model(inputs, backbone.feature_model(x, training=False))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = []  # float32: features must stay the same
    if quantization == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 quantization needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i : i + 1]]
                                                     for i in range(len(calibration)))
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization != "none":
        raise ValueError(f"quantization must be 'none', 'int8' or 'float16', got {quantization!r}")
    # the export logs "INFO:tensorflow:Assets written to ..." into every notebook
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        # keras prints its export
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return converter.convert()
    finally:
        logger.setLevel(level)


class _TFLiteRunner:
    """One interpreter for one flatbuffer: uint8 (N, h, w, 3) -> features, ``chunk_size`` images per
    call.

    Used by :mod:`utils.fine_tuning` (lesson 8); no lesson calls it.
    """

    def __init__(self, flatbuffer: bytes, chunk_size: int = _CHUNK_SIZE,
                 num_threads: int = _NUM_THREADS) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            self._interpreter = _interpreter_class()(model_content=flatbuffer,
                                                     num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self.feature_dim = int(self._interpreter.get_output_details()[0]["shape"][-1])
        self._batch = 0
        self._lock = threading.Lock()  # an interpreter is not thread-safe
        self.chunk_size = chunk_size

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(x.shape), strict=False)
            # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            with _native_stderr_silenced():
                self._interpreter.allocate_tensors()
            self._batch = len(x)
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(x))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            parts = [self._invoke(images[s : s + self.chunk_size])
                     for s in range(0, len(images), self.chunk_size)]
        return np.concatenate(parts) if parts else np.empty((0, self.feature_dim), np.float32)


def _load_or_convert(backbone: "_Backbone | _BackboneHandle", input_hw: tuple[int, int],
                    precision: str = "float32") -> bytes:
    """The cached flatbuffer of ``backbone`` for uint8 inputs of ``input_hw``, converted and checked
    on first use.

    float32 must give the Keras model's features to :data:`_MAX_ABS_DIFF`; int8 to
    :data:`_INT8_MAX_REL_DIFF` (relative L2 distance, on natural images)."""
    path = _tflite_path(backbone, input_hw, precision)
    cached = _read_entry(path, _read_flatbuffer, "TFLite model")
    if cached is not None:
        return cached
    if precision == "int8":
        calibration = _calibration_images(input_hw)
        flatbuffer = _convert_to_tflite(backbone, input_hw, "int8", calibration=calibration)
        x = calibration[:8]
        got, want = _TFLiteRunner(flatbuffer)(x), _keras_reference(backbone, x)
        rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        if not rel <= _INT8_MAX_REL_DIFF:
            raise ValueError(f"int8 TFLite features differ from the Keras model's by {rel:.3f} "
                             f"relative (> {_INT8_MAX_REL_DIFF})")
    else:
        flatbuffer = _convert_to_tflite(backbone, input_hw)
        x = np.random.default_rng(0).integers(0, 256, (2, *input_hw, 3), dtype=np.uint8)
        diff = float(np.abs(_TFLiteRunner(flatbuffer)(x) - _keras_reference(backbone, x)).max())
        if not diff <= _MAX_ABS_DIFF:
            raise ValueError(f"TFLite features differ from the Keras model's by {diff:g} "
                             f"(> {_MAX_ABS_DIFF})")
    _write_entry(path, flatbuffer)
    return flatbuffer


class _TFLiteFeaturizer:
    """uint8 images (N, h, w, 3) -> float32 features (N, dim), resized to the model's size like the
    Keras step.

    One converted model (and interpreter) per input image size, made on first sight of that size.
    """

    def __init__(self, backbone: "_Backbone | _BackboneHandle", chunk_size: int = _CHUNK_SIZE,
                 num_threads: int = _NUM_THREADS, precision: str = "float32") -> None:
        self._backbone = backbone
        self.precision = precision
        self._runners: dict[tuple[int, int], Callable[[np.ndarray], np.ndarray]] = {}
        self._lock = threading.Lock()
        self.chunk_size = chunk_size
        self.num_threads = num_threads

    def runner(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        with self._lock:
            if input_hw not in self._runners:
                flatbuffer = _load_or_convert(self._backbone, input_hw, self.precision)
                self._runners[input_hw] = _TFLiteRunner(flatbuffer, self.chunk_size,
                                                       self.num_threads)
            return self._runners[input_hw]

    def _runner_or_keras(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        try:
            return self.runner(input_hw)
        except Exception as exc:  # this input size will not convert: the plain Keras path for it
            # never serve float32 features under a reduced-precision cache key
            if self.precision != "float32":
                raise
            warnings.warn(f"fast TFLite inference unavailable for {input_hw} images, using Keras "
                          f"({type(exc).__name__}: {exc})", stacklevel=3)
            fallback = _keras_step(self._backbone)
            with self._lock:
                self._runners[input_hw] = fallback
            return fallback

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        return self._runner_or_keras((int(images.shape[1]), int(images.shape[2])))(images)


def _keras_step(backbone: "_Backbone | _BackboneHandle") -> Callable[[np.ndarray], np.ndarray]:
    """The plain Keras path: a tf.function (cast, bilinear resize to the model's size, model) ->
    numpy features.

    Used when the fast path is off or fails; resizing an image already at the model's size changes
    nothing.

    Used by :mod:`utils.fine_tuning` (lesson 8); no lesson calls it.
    """
    import tensorflow as tf

    size, model = backbone.input_size, backbone.feature_model

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                 reduce_retracing=True)
    def step(images):
        return model(tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear"),
                     training=False)

    return lambda images: step(images).numpy()


def _tflite_featurizer(backbone: "_Backbone | _BackboneHandle",
                      precision: str = "float32") -> _TFLiteFeaturizer | None:
    """A :class:`_TFLiteFeaturizer` for ``backbone``, or ``None`` (use Keras) when the fast path is
    off or fails."""
    if not _fast_path_enabled():
        return None
    try:
        _interpreter_class()  # no interpreter, no conversion
        # converts per input size on first use; a failed float32 size falls back to Keras
        return _TFLiteFeaturizer(backbone, precision=precision)
    except Exception as exc:  # any failure of an optional accelerator means: the plain Keras path
        warnings.warn(f"fast TFLite inference unavailable, using Keras "
                      f"({type(exc).__name__}: {exc})", stacklevel=2)
        return None
