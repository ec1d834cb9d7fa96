"""Fine-tuning on a CPU: cut a pretrained EfficientNet-Lite in two and cache what the frozen part computes.

Fine-tuning only the top blocks of a network leaves the bottom blocks frozen: for a given image they always compute
the same activations. So compute them **once** (fast, with the TFLite machinery of :mod:`utils.fast_inference`),
keep them on disk, and train the top blocks + head on them for as many epochs as needed, in seconds rather than
minutes. Flipping an image flips its activations only approximately, so flipped images get their own cached
activations (``flip=True``).

* :func:`split_backbone` -> :class:`SplitBackbone`: ``bottom`` (images -> activations) and ``top`` (activations ->
  features), two Keras models holding a *copy* of the backbone's weights (training ``top`` never changes the
  backbone that :func:`utils.features.featurize_images` uses).
* :meth:`SplitBackbone.activations`: the bottom's activations of uint8 images, cached on disk as float16.
* :func:`cpu_has_bf16` / :func:`compute_dtype`: bfloat16 mixed precision only where the CPU computes it natively.
  Native is not enough to be faster: measured slower than float32 for these top blocks
  (``benchmarks/fine_tuning.py``, ``benchmarks/results/fine_tuning.json``), so lesson 7 uses float32.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import fast_inference
from .backbones import Backbone
from .cache import entry_path, read_entry, write_entry
from .features import array_hash
from .runtime import cpu_flags

if TYPE_CHECKING:
    import keras

_BLOCK = re.compile(r"^blocks_(\d+)_")


def block_count(model: "keras.Model") -> int:
    """Number of inverted-residual blocks (``blocks_<i>_...`` layers) of an EfficientNet-Lite model."""
    indices = {int(m.group(1)) for layer in model.layers if (m := _BLOCK.match(layer.name))}
    return max(indices) + 1 if indices else 0


def stage_starts(model: "keras.Model") -> list[int]:
    """Index of the first block of each stage (a run of blocks with the same output width) of EfficientNet-Lite."""
    widths = [int(model.get_layer(f"blocks_{i}_project_conv").kernel.shape[-1]) for i in range(block_count(model))]
    return [i for i, w in enumerate(widths) if i == 0 or w != widths[i - 1]]


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def compute_dtype(requested: str = "auto") -> str:
    """The Keras dtype policy for training: ``"mixed_bfloat16"`` when asked (or ``"auto"`` and the CPU has bf16),
    else ``"float32"``. Asking for bf16 on a CPU without it falls back to float32 with a warning (it would be
    emulated, slower than float32)."""
    if requested == "float32":
        return "float32"
    if requested not in {"auto", "mixed_bfloat16"}:
        raise ValueError(f"mixed precision must be 'auto', 'mixed_bfloat16' or 'float32', got {requested!r}")
    if cpu_has_bf16():
        return "mixed_bfloat16"
    if requested == "mixed_bfloat16":
        warnings.warn("this CPU has no native bfloat16 (avx512_bf16/amx_bf16): training in float32", stacklevel=2)
    return "float32"


def _clone(model: "keras.Model", dtype: str) -> "keras.Model":
    """A copy of ``model`` with fresh layers (same names and weights) computing in the ``dtype`` policy."""
    import keras

    def copy_layer(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = dtype
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=copy_layer)
    clone.set_weights(model.get_weights())
    return clone


def _apply(layers_by_name: dict, names: list[str], x):
    for name in names:
        x = layers_by_name[name](x)
    return x


@dataclass
class SplitBackbone:
    """A backbone cut before block ``first_top_block``: ``bottom`` (frozen, images -> activations) and ``top``."""

    backbone: Backbone
    first_top_block: int
    bottom: "keras.Model"
    top: "keras.Model"
    _step: Callable[[np.ndarray], np.ndarray] | None = dataclasses.field(default=None, repr=False)

    @property
    def activation_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.bottom.output.shape[1:])

    def _cache_path(self, images: np.ndarray, flip: bool) -> Path:
        bb = self.backbone
        return entry_path("activations", bb.name, bb.weights_id, bb.input_size, content=array_hash(images),
                          detail=[self.first_top_block, flip],
                          label=f"block{self.first_top_block}{'-flip' if flip else ''}", suffix=".npy")

    def _inference_step(self, input_hw: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 images -> bottom activations: the bottom converted to TFLite (XNNPACK), else plain Keras."""
        bottom_backbone = dataclasses.replace(self.backbone, feature_model=self.bottom,
                                              feature_dim=self.activation_shape[-1], classifier=None)
        if fast_inference.fast_path_enabled():
            try:
                runner = fast_inference.TFLiteRunner(fast_inference.convert_to_tflite(bottom_backbone, input_hw))
                probe = np.random.default_rng(0).integers(0, 256, (2, *input_hw, 3), dtype=np.uint8)
                reference = fast_inference.keras_step(bottom_backbone)(probe)
                diff = float(np.abs(runner(probe) - reference).max())
                if diff <= 1e-2 * max(1.0, float(np.abs(reference).max())):
                    return runner
                warnings.warn(f"TFLite activations differ from Keras by {diff:g}: using Keras", stacklevel=3)
            except Exception as exc:  # any failure of the optional fast path means: the plain Keras path
                warnings.warn(f"fast TFLite inference unavailable, using Keras ({type(exc).__name__}: {exc})",
                              stacklevel=3)
        return fast_inference.keras_step(bottom_backbone)

    def activations(self, images: np.ndarray, flip: bool = False, batch_size: int = 64,
                    use_cache: bool = True) -> np.ndarray:
        """The frozen bottom's activations of uint8 images (N, H, W, 3) -> float32 (N, h, w, c), cached on disk
        (as float16: half the space, and far below what training can tell apart). ``flip`` mirrors the images
        left-right first."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
        path = self._cache_path(images, flip)
        if use_cache:
            def read(p: Path) -> np.ndarray:
                found = np.load(p)
                if found.shape != (len(images), *self.activation_shape):
                    raise ValueError(f"shape {found.shape}, expected {(len(images), *self.activation_shape)}")
                return found.astype(np.float32)

            cached = read_entry(path, read, "activation")
            if cached is not None:
                return cached
        if flip:
            images = np.ascontiguousarray(images[:, :, ::-1])
        if self._step is None:
            self._step = self._inference_step((int(images.shape[1]), int(images.shape[2])))
        out = np.empty((len(images), *self.activation_shape), dtype=np.float16)
        for start in range(0, len(images), batch_size):
            out[start : start + batch_size] = self._step(images[start : start + batch_size])
        if use_cache:
            write_entry(path, lambda f: np.save(f, out))
        return out.astype(np.float32)


def split_backbone(backbone: Backbone, first_top_block: int | None = None, dtype: str = "float32") -> SplitBackbone:
    """Cut an EfficientNet-Lite backbone before block ``first_top_block`` (counting from 0; ``None``: the first
    block of the second-to-last stage, i.e. the top two stages are fine-tuned: block 11 of lite0, 15 of lite2).

    ``bottom`` maps [0, 255] images to the activations entering that block; ``top`` maps those activations to the
    pooled features, through the remaining blocks and the head convolution. Both hold a copy of the weights; ``top``
    computes in ``dtype`` (``"mixed_bfloat16"`` for bf16 mixed precision), ``bottom`` always in float32.
    ``top(bottom(x))`` equals ``backbone.feature_model(x)``.
    """
    import keras

    model = backbone.feature_model
    n_blocks = block_count(model)
    if n_blocks == 0:
        raise ValueError(f"{backbone.name} is not an EfficientNet-Lite backbone: it cannot be split into blocks "
                         f"here (use efficientnet_lite0/1/2)")
    if first_top_block is None:
        first_top_block = stage_starts(model)[-2]
    if not 0 <= first_top_block < n_blocks:
        raise ValueError(f"first_top_block must be between 0 and {n_blocks - 1} for {backbone.name}, "
                         f"got {first_top_block}")
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
