"""``DeepFeatures``, the cached featurizer as a scikit-learn transformer (lessons 3 and 6): in a
``Pipeline``, ``GridSearchCV`` tunes the image size and ``joblib`` saves a whole recognizer. The
network is loaded when features are first needed, never stored: a pickled pipeline holds numbers.
"""

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .backbones import _DEFAULT_BACKBONE, _spec, load_backbone
from .data import _ImageLoadError
from .features import _DEFAULT_BATCH_SIZE, featurize_files, featurize_images

#: Feature rows by (backbone, size, weights, image shape, pixel hash), in this process: the disk
#: cache is keyed by whole arrays, but cross-validation feeds the same images in other subsets in
#: every fold. First in, first out beyond _MEMO_MAX_ROWS (~0.5 GB of 1280-float rows).
_MEMO: dict[tuple, np.ndarray] = {}
_MEMO_MAX_ROWS = 100_000


class DeepFeatures(TransformerMixin, BaseEstimator):
    """Images -> the pooled features of a pretrained backbone (lessons 3 and 6): ``transform``
    takes uint8 RGB arrays (N, H, W, 3) or image files; ``fit`` learns nothing."""
    def __init__(self, backbone: str = _DEFAULT_BACKBONE, image_size: int | None = None,
                 batch_size: int = _DEFAULT_BATCH_SIZE, use_cache: bool = True,
                 progress: bool | None = None, weights: str | None = "imagenet"):
        self.backbone = backbone
        self.image_size = image_size
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.progress = progress
        self.weights = weights

    def fit(self, X: Any, y: Any = None) -> "DeepFeatures":
        # an unknown name or bad weights fail here, before any image is read
        self.n_features_out_ = load_backbone(self.backbone, weights=self.weights).feature_dim
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Deep features, shape (N, n_features_out_), float32."""
        check_is_fitted(self, "n_features_out_")
        if isinstance(X, (str, os.PathLike)):
            raise TypeError("DeepFeatures.transform takes a list of image files (or an image "
                            "array), not one path; wrap it in a list: [path]")
        if isinstance(X, np.ndarray) and X.dtype.kind in "ui" and X.ndim == 4:
            return self._array_features(X)
        if isinstance(X, np.ndarray) and X.ndim == 3 and X.shape[-1] == 3 and X.dtype.kind in "ui":
            raise ValueError(f"got one image of shape {X.shape}; pass a batch of shape "
                             "(N, H, W, 3), e.g. image[None]")
        items = list(X)
        if items and all(isinstance(p, (str, os.PathLike)) for p in items):
            return self._file_features([Path(p) for p in items])
        raise TypeError("DeepFeatures expects uint8 images of shape (N, H, W, 3) or a list of "
                        f"image file paths, got {type(X).__name__}"
                        + (f" of shape {X.shape}, dtype {X.dtype}"
                           if isinstance(X, np.ndarray) else ""))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``<backbone>_0`` ... ``<backbone>_<n-1>``."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"{_spec(self.backbone).name}_{i}"
                           for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # the input is images or file names, not a table
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags

    @property
    def _size(self) -> int:
        return int(self.image_size or _spec(self.backbone).input_size)

    def _array_features(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8:
            if images.min(initial=0) < 0 or images.max(initial=0) > 255:
                raise ValueError("images must hold 0-255 pixel values (uint8)")
            images = images.astype(np.uint8)
        name, size = _spec(self.backbone).name, self._size
        flat = np.ascontiguousarray(images).reshape(len(images), -1)
        keys = [(name, size, self.weights, images.shape[1:],
                 hashlib.blake2b(row.data, digest_size=16).digest()) for row in flat]
        missing = [i for i, k in enumerate(keys) if k not in _MEMO]
        if missing:
            # all new (the usual first call): the whole array, which the disk cache can serve
            subset = images if len(missing) == len(images) else images[missing]
            computed = featurize_images(subset, name, size, batch_size=self.batch_size,
                                        use_cache=self.use_cache, progress=self.progress,
                                        weights=self.weights)
            _MEMO.update(zip([keys[i] for i in missing], computed))
        out = np.asarray([_MEMO[k] for k in keys], np.float32).reshape(-1, self.n_features_out_)
        while len(_MEMO) > _MEMO_MAX_ROWS:
            del _MEMO[next(iter(_MEMO))]
        return out

    def _file_features(self, paths: Sequence[Path]) -> np.ndarray:
        found = featurize_files(paths, _spec(self.backbone).name, self._size,
                                batch_size=self.batch_size, use_cache=self.use_cache,
                                progress=self.progress, weights=self.weights)
        # a row per input is the transformer contract: name every bad file instead
        if found.skipped:
            names = "; ".join(f"{path}: {reason}" for path, reason in found.skipped[:5])
            more = f" (and {len(found.skipped) - 5} more)" if len(found.skipped) > 5 else ""
            raise _ImageLoadError(None, f"{len(found.skipped)} of {len(paths)} image files could "
                                        f"not be read: {names}{more}. Remove or fix them "
                                        "(data.load_image_folder lists only readable files).")
        return np.asarray(found.features, dtype=np.float32)
