"""``DeepFeatures``: the cached deep-feature extractor as a scikit-learn transformer.

It puts "image -> pretrained network without its output layer -> feature vector" inside a
scikit-learn ``Pipeline``, so ``GridSearchCV`` can tune the input size like any other hyperparameter
and ``joblib`` can save a whole recognizer. The TensorFlow model is never part of the estimator: it
is loaded (once per process) when features are first needed, so a pickled pipeline holds only
numbers and parameter values::

    recognizer = Pipeline([("features", DeepFeatures(image_size=128)), ("classify",
    LogisticRegression())]) recognizer.fit(train.images, train.labels)
    joblib.dump(recognizer, "recognizer.joblib")
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .backbones import _DEFAULT_BACKBONE, _checked_weights, get_spec
from .data import _ImageLoadError
from .features import _DEFAULT_BATCH_SIZE, featurize_files, featurize_images

#: In-process memo: (backbone, size, weights) -> {image content hash: feature row}. Cross-validation
#: clones the transformer and feeds it subsets of the same images in every fold; each image is
#: computed once per size.
_MEMO: dict[tuple[str, int, str | None], "OrderedDict[bytes, np.ndarray]"] = {}
_MEMO_MAX_ROWS = 100_000  # per (backbone, size): ~0.5 GB of 1280-float features at most


def _row_hashes(images: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    shape = str(images.shape[1:]).encode()
    return [hashlib.blake2b(row.data, digest_size=16, key=shape[:64]).digest() for row in flat]


class DeepFeatures(TransformerMixin, BaseEstimator):
    """Images -> deep features of a pretrained backbone (its pooled output, before the ImageNet
    layer).

    ``transform`` accepts uint8 RGB arrays ``(N, H, W, 3)`` (resized on the fly to ``image_size``)
    or a list of image file paths. ``fit`` learns nothing (the network is pretrained); it only
    records the output width. Parameters are only stored here, as scikit-learn requires, so
    ``clone``/``set_params``/``GridSearchCV`` work.

    Used in lessons 3 and 6.
    """

    def __init__(self, backbone: str = _DEFAULT_BACKBONE, image_size: int | None = None,
                 batch_size: int = _DEFAULT_BATCH_SIZE, use_cache: bool = True,
                 progress: bool | None = None,
                 weights: str | None = "imagenet"):
        self.backbone = backbone
        self.image_size = image_size
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.progress = progress
        self.weights = weights

    def fit(self, X: Any, y: Any = None) -> "DeepFeatures":
        """Nothing to learn; checks the backbone name and records ``n_features_out_``."""
        spec = get_spec(self.backbone)  # an unknown name fails here, before any image is read
        _checked_weights(spec, self.weights)
        self.n_features_out_ = int(spec.feature_dim)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Deep features, shape (N, n_features_out_), float32."""
        check_is_fitted(self, "n_features_out_")
        return self._features(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``<backbone>_0`` ... ``<backbone>_<n-1>``: one name per feature (for pandas output and
        inspection)."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"{get_spec(self.backbone).name}_{i}"
                           for i in range(self.n_features_out_)], dtype=object)

    # ---- scikit-learn metadata: the input is images or file names, not a numeric 2-D table
    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.requires_fit = True
        tags.non_deterministic = False
        return tags

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"X_types": ["3darray", "string"], "stateless": True}

    # ---- helpers
    @property
    def _size(self) -> int:
        return int(self.image_size or get_spec(self.backbone).input_size)

    def _features(self, X: Any) -> np.ndarray:
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

    def _array_features(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8:
            if images.min(initial=0) < 0 or images.max(initial=0) > 255:
                raise ValueError("images must hold 0-255 pixel values (uint8)")
            images = images.astype(np.uint8)
        name, size = get_spec(self.backbone).name, self._size
        memo = _MEMO.setdefault((name, size, self.weights), OrderedDict())
        keys = _row_hashes(images)
        missing = [i for i, k in enumerate(keys) if k not in memo]
        if missing:
            # All new (the usual first call): one call, so the disk cache can serve a re-run of the
            # same array.
            subset = images if len(missing) == len(images) else images[missing]
            computed = featurize_images(subset, name, size, batch_size=self.batch_size,
                                        use_cache=self.use_cache,
                                        progress=self.progress, weights=self.weights)
            for i, row in zip(missing, computed):
                memo[keys[i]] = row
            while len(memo) > _MEMO_MAX_ROWS:
                memo.popitem(last=False)
        if not keys:
            return np.empty((0, self.n_features_out_), np.float32)
        return np.stack([memo[k] for k in keys]).astype(np.float32, copy=False)

    def _file_features(self, paths: Sequence[Path]) -> np.ndarray:
        found = featurize_files(paths, get_spec(self.backbone).name, self._size,
                                batch_size=self.batch_size,
                                use_cache=self.use_cache, progress=self.progress,
                                weights=self.weights)
        # a row per input is the transformer contract: name every bad file instead
        if found.skipped:
            names = "; ".join(f"{path}: {reason}" for path, reason in found.skipped[:5])
            more = f" (and {len(found.skipped) - 5} more)" if len(found.skipped) > 5 else ""
            raise _ImageLoadError(f"{len(found.skipped)} of {len(paths)} image files could not be "
                                 f"read: {names}{more}. Remove or fix them (data.load_image_folder "
                                 "lists only readable files).")
        return np.asarray(found.features, dtype=np.float32)
