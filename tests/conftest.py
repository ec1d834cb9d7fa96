"""Shared fixtures of the toolkit tests.

* Every test (and every ``deep-features`` subprocess, which inherits the environment) caches converted weights
  and features in one session-wide temporary ``DEEP_FEATURES_CACHE``, never in ``~/.cache``. ``load_backbone`` is
  ``lru_cache``-d per process, so the weights are converted at most once per session (per process).
* ``course_data_dir``: the full 4-class CIFAR-10 folders (``$DEEP_FEATURES_DATA``, else ``../shared`` beside the
  checkout). Skipped when missing on a developer machine; a failure in CI (``CI`` set), where the data must be there.
* ``small_data_dir``: the same images when present, else the committed fixture ``tests/data/cifar10-4class-small``
  (24 train / 12 test real images per class), so tests that need only a few images run on a fresh clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COURSE_DATA = Path(os.environ.get("DEEP_FEATURES_DATA") or REPO.parent / "shared/data/cifar10-4class")
SMALL_DATA = REPO / "tests" / "data" / "cifar10-4class-small"
COURSE_CLASSES = ("automobile", "bird", "cat", "dog")


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary cache root for the whole session (set in os.environ, so subprocesses use it too)."""
    root = tmp_path_factory.mktemp("deep-features-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEP_FEATURES_CACHE", str(root))
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        yield root


@pytest.fixture(scope="session")
def course_data_dir() -> Path:
    """The full course images (train/<class>/*.jpg, test/<class>/*.jpg)."""
    if not all((COURSE_DATA / split / c).is_dir() for split in ("train", "test") for c in COURSE_CLASSES):
        if os.environ.get("CI"):
            pytest.fail(f"course data missing in CI: {COURSE_DATA}")
        pytest.skip(f"course data not found at {COURSE_DATA}")
    return COURSE_DATA


@pytest.fixture(scope="session")
def skimage_data() -> Path:
    """The folder of scikit-image's sample photos (chelsea.png is a tabby cat, coffee.png an espresso)."""
    import skimage.data

    return Path(skimage.data.__file__).parent


@pytest.fixture(scope="session")
def small_data_dir() -> Path:
    """The full course images when present, else the committed 144-image fixture (always there)."""
    if all((COURSE_DATA / split / c).is_dir() for split in ("train", "test") for c in COURSE_CLASSES):
        return COURSE_DATA
    return SMALL_DATA
