"""Fast CPU inference for the featurizer: the Keras feature model run as a float32 TFLite model by XNNPACK.

On a small CPU, TensorFlow's graph executor spends much of EfficientNet-Lite's time in per-op overhead and in its
depthwise convolutions; the same network converted to a TFLite flatbuffer (batch norms folded into the convolutions,
no quantization: float32 in, float32 out) and run by the XNNPACK delegate is about twice as fast and gives the same
features to ~1e-5 (see ``benchmarks/README.md``).

The conversion (~5-8 s) happens once per backbone, weights and image size: the flatbuffer is cached under
``cache_root()/tflite`` with the weights id in its name, written atomically, and checked against the Keras model
when it is made. Whenever TFLite is unavailable or the conversion fails, :func:`tflite_featurizer` returns ``None``
and the caller keeps the plain Keras path; ``DEEP_FEATURES_FAST=0`` asks for that path explicitly.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .backbones import cache_root

if TYPE_CHECKING:
    from .backbones import Backbone

FAST_ENV_VAR = "DEEP_FEATURES_FAST"
TFLITE_FORMAT = 1  # bump when the conversion changes, to invalidate cached flatbuffers
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


def tflite_path(backbone: "Backbone") -> Path:
    import tensorflow as tf

    name = f"{backbone.weights_id}-{backbone.input_size}px-tf{tf.__version__}-f{TFLITE_FORMAT}.tflite"
    return cache_root() / "tflite" / name


def convert_to_tflite(backbone: "Backbone") -> bytes:
    """The feature model as a float32 TFLite flatbuffer: (N, size, size, 3) float32 [0, 255] -> (N, dim)."""
    import contextlib
    import io

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(backbone.feature_model)  # weights frozen in
    converter.optimizations = []  # float32 only: no quantization, features must stay the same
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # keras prints its export
        warnings.simplefilter("ignore")
        return converter.convert()


class TFLiteFeaturizer:
    """uint8 images (N, H, W, 3) -> float32 features (N, dim), resized to the model's size like the Keras step."""

    def __init__(self, flatbuffer: bytes, input_size: int, resize: bool, chunk_size: int = CHUNK_SIZE,
                 num_threads: int = NUM_THREADS) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            self._interpreter = _interpreter_class()(model_content=flatbuffer, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0
        self._lock = threading.Lock()  # an interpreter is not thread-safe
        self.input_size = input_size
        self.resize = resize
        self.chunk_size = chunk_size

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        size = self.input_size
        if self.resize or images.shape[1:3] != (size, size):
            import tensorflow as tf  # the very resize of the Keras step, so features match

            return tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear").numpy()
        return images.astype(np.float32)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(x.shape), strict=False)
            self._interpreter.allocate_tensors()
            self._batch = len(x)
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(x))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()

    def __call__(self, images) -> np.ndarray:
        x = self._prepare(np.asarray(images))
        with self._lock:
            parts = [self._invoke(x[s : s + self.chunk_size]) for s in range(0, len(x), self.chunk_size)]
        return np.concatenate(parts) if parts else np.empty((0, self._feature_dim()), np.float32)

    def _feature_dim(self) -> int:
        return int(self._interpreter.get_output_details()[0]["shape"][-1])


def _check_against_keras(backbone: "Backbone", flatbuffer: bytes) -> float:
    size = backbone.input_size
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    expected = np.asarray(backbone.feature_model(x, training=False))
    got = TFLiteFeaturizer(flatbuffer, size, resize=False)(x.astype(np.float32))
    return float(np.abs(got - expected).max())


def load_or_convert(backbone: "Backbone") -> bytes:
    """The cached flatbuffer of ``backbone``, converting (and checking) it on first use."""
    path = tflite_path(backbone)
    if path.exists():
        return path.read_bytes()
    flatbuffer = convert_to_tflite(backbone)
    diff = _check_against_keras(backbone, flatbuffer)
    if not diff <= MAX_ABS_DIFF:
        raise ValueError(f"TFLite features differ from the Keras model's by {diff:g} (> {MAX_ABS_DIFF})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    tmp.write_bytes(flatbuffer)
    os.replace(tmp, path)
    return flatbuffer


def tflite_featurizer(backbone: "Backbone", resize: bool) -> TFLiteFeaturizer | None:
    """A :class:`TFLiteFeaturizer` for ``backbone``, or ``None`` (use Keras) when the fast path is off or fails."""
    if not fast_path_enabled():
        return None
    try:
        _interpreter_class()  # no interpreter, no conversion
        return TFLiteFeaturizer(load_or_convert(backbone), backbone.input_size, resize)
    except Exception as exc:  # any failure of an optional accelerator means: the plain Keras path
        warnings.warn(f"fast TFLite inference unavailable, using Keras ({type(exc).__name__}: {exc})", stacklevel=2)
        return None
