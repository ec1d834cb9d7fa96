"""``deep-features``: similar-image search on real course photos (and its cache), and one-line errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deep_features.__main__ import main

REPO = Path(__file__).resolve().parents[1]
SIZE = "64"  # small images keep the search fast; the copy of the query is still found at distance 0


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deep_features", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def search_folder(course_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A query (a training cat) and a folder of 8 test photos (2 per class) plus a renamed copy of the query."""
    root = tmp_path_factory.mktemp("similar")
    query = sorted((course_data_dir / "train" / "cat").glob("*.jpg"))[0]
    folder = root / "photos"
    for class_name in ("automobile", "bird", "cat", "dog"):
        (folder / class_name).mkdir(parents=True)
        for path in sorted((course_data_dir / "test" / class_name).glob("*.jpg"))[:2]:
            shutil.copy(path, folder / class_name / path.name)
    shutil.copy(query, folder / "cat" / "copy_of_query.jpg")
    (folder / "README.txt").write_text("not an image, not listed")
    return query, folder


def _results(stdout: str) -> list[tuple[float, Path]]:
    rows = re.findall(r"^\s*([\d.]+)\s+(\S.*)$", stdout, flags=re.M)
    return [(float(d), Path(p)) for d, p in rows]


def test_similar_finds_the_copy_first_then_serves_from_cache(search_folder, feature_cache: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    query, folder = search_folder
    result = _run("similar", str(query), str(folder), "--top", "3", "--image-size", SIZE)
    assert result.returncode == 0, result.stderr[-2000:]
    header = "# cosine distance, efficientnet_lite0 at 64 px, folder of 9 images\n"
    assert result.stdout.startswith(header)
    assert "-0.000" not in result.stdout
    rows = _results(result.stdout)
    assert len(rows) == 3 and rows[0][1].name == "copy_of_query.jpg" and rows[0][0] < 1e-3
    assert rows[0][0] <= rows[1][0] <= rows[2][0] and rows[1][0] > 0.1
    cached = sorted((feature_cache / "features" / "chunks").glob("*.npz"))
    stamps = {p: p.stat().st_mtime_ns for p in cached}

    # Second search against the same folder: in-process (no second TensorFlow start-up), same answer,
    # and the folder's features come from the cache (no new or rewritten cache file).
    assert main(["similar", str(query), str(folder), "--top", "3", "--image-size", SIZE]) == 0
    again = _results(capsys.readouterr().out)
    assert [p for _, p in again] == [p for _, p in rows]
    assert [d for d, _ in again] == pytest.approx([d for d, _ in rows], abs=2e-3)
    assert sorted((feature_cache / "features" / "chunks").glob("*.npz")) == cached
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_unknown_backbone_exits_2_in_a_subprocess(search_folder) -> None:
    query, folder = search_folder
    result = _run("similar", str(query), str(folder), "--backbone", "alexnet")
    assert result.returncode == 2
    line = _one_line_error(result.stderr)
    assert "alexnet" in line and "efficientnet_lite0" in line


@pytest.mark.parametrize("case", ["missing folder", "non-image query", "missing query", "predict missing"])
def test_errors_exit_2_with_one_line(case: str, search_folder, tmp_path: Path, capsys) -> None:
    query, folder = search_folder
    text_query = tmp_path / "query.jpg"
    text_query.write_text("I am text")
    argv, expected = {
        "missing folder": (["similar", str(query), str(tmp_path / "nowhere")], "no such folder"),
        "non-image query": (["similar", str(text_query), str(folder), "--image-size", SIZE], "not an image"),
        "missing query": (["similar", str(tmp_path / "gone.jpg"), str(folder), "--image-size", SIZE],
                          "no such file"),
        "predict missing": (["predict", str(tmp_path / "gone.png")], "no such file"),
    }[case]
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert expected in line


def test_backbones_command_lists_the_registry(capsys) -> None:
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^efficientnet_lite0\s+224px\s+1280-d\s+ready", out, flags=re.M), out
    assert "vgg16" in out and "4096-d" in out


def test_featurize_names_every_skipped_file_on_stderr(search_folder, tmp_path: Path) -> None:
    _, photos = search_folder
    folder = tmp_path / "with-broken"
    shutil.copytree(photos, folder)
    (folder / "cat" / "empty.jpg").write_bytes(b"")
    (folder / "cat" / "text.png").write_text("hello")
    good = next((folder / "dog").glob("*.jpg"))
    (folder / "dog" / "cut.jpg").write_bytes(good.read_bytes()[:300])
    out = tmp_path / "f.npz"
    result = _run("featurize", str(folder), "--output", str(out), "--image-size", SIZE, "--precision", "float32")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert sorted(lines) == sorted([f"skipped {folder / 'cat' / 'empty.jpg'}: empty file (0 bytes)",
                                    *[line for line in lines if "text.png" in line or "cut.jpg" in line]])
    assert len(lines) == 3 and "3 file(s) skipped" in result.stderr
    assert any("text.png: not an image" in line for line in lines)
    assert any("cut.jpg: truncated/corrupt image" in line for line in lines)
    import numpy as np

    saved = np.load(out)
    assert saved["features"].shape == (9, 1280) and len(saved["paths"]) == 9


def test_ctrl_c_exits_130_and_says_rerun_resumes(search_folder, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from deep_features import dask_features

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dask_features, "featurize_files", interrupted)
    _, folder = search_folder
    assert main(["featurize", str(folder), "--image-size", SIZE]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err


def test_no_traceback_reaches_the_user_even_for_a_bug(search_folder, monkeypatch: pytest.MonkeyPatch,
                                                      capsys, tmp_path: Path) -> None:
    from deep_features import dask_features

    _, folder = search_folder

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "f.npz"))

    monkeypatch.setattr(dask_features, "featurize_files", disk_full)
    assert main(["featurize", str(folder), "--output", str(tmp_path / "f.npz"), "--image-size", SIZE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [Errno 28] No space left on device") and "Traceback" not in err

    def bug(*_args, **_kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(dask_features, "featurize_files", bug)
    assert main(["featurize", str(folder), "--output", str(tmp_path / "f.npz"), "--image-size", SIZE]) == 3
    err = capsys.readouterr().err
    assert "unexpected TypeError: a bug" in err and "DEEP_FEATURES_DEBUG=1" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("DEEP_FEATURES_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["featurize", str(folder), "--output", str(tmp_path / "f.npz"), "--image-size", SIZE])


def test_similar_on_an_index_folder_still_being_built_says_so(search_folder, tmp_path: Path, capsys) -> None:
    query, _ = search_folder
    (tmp_path / "ix").mkdir()
    (tmp_path / "ix" / ".lock").touch()  # what a first `index` run holds before it writes anything
    assert main(["similar", str(query), str(tmp_path / "ix")]) == 2
    assert "an `index` run may be building it" in capsys.readouterr().err
