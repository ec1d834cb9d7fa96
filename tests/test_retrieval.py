"""deep_features.retrieval (the folder search of `similar`) on real photo files, and its nearest-neighbour core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.data import load_image
from deep_features.retrieval import _nearest, search_folder


def test_nearest_known_answer() -> None:
    collection = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [10.0, 10.0]], np.float32)
    distances, indices = _nearest(np.array([0.2, 0.0]), collection, k=3, metric="euclidean")
    assert indices.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(distances, [[0.2, 0.8, np.hypot(2.8, 4.0)]], rtol=1e-5)
    # k capped at the collection size:
    distances, indices = _nearest(collection[:2], collection, k=10, metric="euclidean")
    assert indices.shape == (2, 4) and indices[:, 0].tolist() == [0, 1] and np.allclose(distances[:, 0], 0)
    # Cosine (the default) compares directions: 1 - cos of the angle to (1, 0), (10, 10), (3, 4).
    distances, indices = _nearest(np.array([5.0, 0.0]), collection[1:], k=3)
    assert indices.tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(distances, [[0.0, 1 - np.sqrt(0.5), 1 - 0.6]], atol=1e-6)


@pytest.fixture
def folder(tmp_path: Path, skimage_data: Path) -> Path:
    """Crops of the cat photo and of the coffee photo as files, plus one broken file."""
    for name in ("chelsea", "coffee"):
        photo = load_image(skimage_data / f"{name}.png")
        for k in range(3):
            Image.fromarray(photo[30 * k : 30 * k + 150, 40 * k : 40 * k + 150]).save(tmp_path / f"{name}_{k}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


def test_search_folder_ranks_the_same_photo_first_and_reports_skipped(folder: Path, skimage_data: Path) -> None:
    search = search_folder(skimage_data / "chelsea.png", folder, top=3, image_size=64, progress=False)
    assert [r.path.name.split("_")[0] for r in search.results][:2] == ["chelsea", "chelsea"]
    assert [r.distance for r in search.results] == sorted(r.distance for r in search.results)
    assert [p.name for p, _ in search.skipped] == ["broken.jpg"]


def test_search_folder_errors(tmp_path: Path, skimage_data: Path) -> None:
    with pytest.raises(ValueError, match="no image files"):
        search_folder(skimage_data / "chelsea.png", tmp_path, image_size=64)
    (tmp_path / "a.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="could be read"):
        search_folder(skimage_data / "chelsea.png", tmp_path, image_size=64)
    (tmp_path / "b.png").write_bytes(Path(skimage_data / "coffee.png").read_bytes())
    with pytest.raises(ValueError, match="a.png: not an image"):  # as load_image says it
        search_folder(tmp_path / "a.png", tmp_path, image_size=64)
