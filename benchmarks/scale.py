"""Featurization at scale: images/s and peak memory for 1k / 4k / 16k files, and the resume-after-kill time.

    python benchmarks/scale.py [--data-dir DIR] scale  [--sizes 1000 4000 16000] [--json out.json]
    python benchmarks/scale.py [--data-dir DIR] resume [--files 4000] [--kill-at 0.7] [--json out.json]
    python benchmarks/scale.py [--data-dir DIR] startup [--files 1000] [--kill-at 0.7] [--before DIR] [--repeats 2]
    python benchmarks/scale.py --tiny [--data-dir DIR]   # all three on 8 files at 64 px: checks the script runs

Every run is a fresh Python process featurizing a folder of real course JPEGs (symlinks to distinct files of the
course's image folders, found as the course finds them: ``--data-dir``, ``$DEEP_FEATURES_DATA``, ``data/cifar10/``;
test images first, then training images) with ``utils.features.featurize_files`` at the backbone's own size
(``--image-size``), into an empty feature cache (the converted weights and TFLite model are copied in beforehand,
so no run pays the one-time conversion). A run reports its featurization seconds, process CPU seconds and peak
resident memory (``ru_maxrss``), and the wall time of the whole process (start-up included, as a user waits).

``resume``: the same folder plus three broken files (empty, text, truncated JPEG); a full run; then, into another
empty cache, a run SIGKILLed as soon as it reports ``--kill-at`` of the files done, and its rerun. The rerun's
time is given as a fraction of the full run's, its features are compared with the full run's, and the skipped
files it names are listed.

``startup``: what a user of ``deep-features featurize FOLDER`` waits for on a small folder, where start-up
dominates. Per code version (this checkout, and ``--before DIR``: another checkout, e.g. ``git archive <commit>``
unpacked), round-robin ``--repeats`` times: a full run into an empty feature cache, the same command again (warm:
every chunk cached), a run SIGKILLed at ``--kill-at`` and the CLI's rerun, and the time to the first feature of
one new file in a fresh process. Each figure is the whole process: wall seconds and CPU seconds (user + system,
from the children's rusage) and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, add_common_arguments, data_dir

DATA_DIR = Path()  # set by main() from --data-dir / $DEEP_FEATURES_DATA / data/cifar10/
IMAGE_SIZE_ENV = "SCALE_IMAGE_SIZE"  # the children's image size ("": the backbone's own)


def image_size_option() -> list[str]:
    size = os.environ.get(IMAGE_SIZE_ENV)
    return ["--image-size", size] if size else []


def child(list_file: Path, output: Path) -> None:
    """Featurize the files listed in ``list_file``; progress lines on stdout, a JSON summary line at the end."""
    sys.path.insert(0, os.environ.get("SCALE_CODE", str(REPO)))
    from utils.features import featurize_files

    paths = list_file.read_text().splitlines()
    start_cpu, start = time.process_time(), time.perf_counter()
    result = featurize_files(paths, image_size=int(os.environ.get(IMAGE_SIZE_ENV) or 0) or None, progress=False,
                             on_chunk=lambda done, total: print(f"progress {done} {total}", flush=True))
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    np.save(output, result.features)
    print("result " + json.dumps({
        "files": len(paths), "kept": len(result.paths), "seconds": seconds, "cpu_seconds": cpu,
        "images_per_s": len(paths) / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "skipped": [[str(p), r] for p, r in result.skipped]}), flush=True)


def course_files(n: int) -> list[Path]:
    files = sorted((DATA_DIR / "test").glob("*/*.jpg")) + sorted((DATA_DIR / "train").glob("*/*.jpg"))
    if n > len(files):
        raise SystemExit(f"only {len(files)} course images, asked for {n}")
    return files[:n]


def make_folder(root: Path, n: int, broken: bool = False) -> list[Path]:
    folder = root / f"images-{n}"
    folder.mkdir(parents=True)
    paths = []
    for i, src in enumerate(course_files(n)):
        link = folder / f"{i:05d}-{src.parent.name}.jpg"
        link.symlink_to(src)
        paths.append(link)
    if broken:
        (folder / "00000-empty.jpg").write_bytes(b"")
        (folder / "02000-notes.jpg").write_text("not an image")
        (folder / "03999-cut.jpg").write_bytes(course_files(1)[0].read_bytes()[:300])
        paths += [folder / "00000-empty.jpg", folder / "02000-notes.jpg", folder / "03999-cut.jpg"]
    return sorted(paths)


def fresh_cache(root: Path, warm: Path, name: str) -> Path:
    cache = root / name
    for sub in ("weights", "tflite"):
        if (warm / sub).is_dir():
            shutil.copytree(warm / sub, cache / sub)
    return cache


def run_child(paths: list[Path], cache: Path, work: Path, kill_at: float | None = None, code: Path = REPO) -> dict:
    list_file = work / f"list-{len(paths)}.txt"
    list_file.write_text("\n".join(map(str, paths)))
    output = work / f"features-{cache.name}.npy"
    env = {**os.environ, "DEEP_FEATURES_CACHE": str(cache), "PYTHONPATH": str(code), "SCALE_CODE": str(code),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "child", str(list_file), str(output)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    summary: dict = {}
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("progress ") and kill_at is not None:
            done, total = map(int, line.split()[1:])
            if done >= kill_at * total:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return {"killed_at_files": done, "of": total, "wall_seconds": time.perf_counter() - start}
        elif line.startswith("result "):
            summary = json.loads(line[len("result "):])
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"featurization child failed with exit code {proc.returncode}")
    summary["wall_seconds"] = time.perf_counter() - start
    summary["features"] = str(output)
    return summary


def warm_cache() -> Path:
    """A cache with the converted weights and the TFLite model (made once here if missing)."""
    from _common import cache_root

    warm = cache_root()
    list_file = Path(tempfile.mkstemp(suffix=".txt")[1])
    list_file.write_text(str(course_files(1)[0]))
    subprocess.run([sys.executable, __file__, "child", str(list_file), str(list_file) + ".npy"], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return warm


def scale(args: argparse.Namespace) -> dict:
    warm = warm_cache()
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            paths = make_folder(work, n)
            row = run_child(paths, fresh_cache(work, warm, f"cache-{n}"), work)
            row.pop("skipped"), row.pop("features")
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            shutil.rmtree(work / f"cache-{n}")
    by_n = {r["files"]: r for r in rows}
    doc = {"rows": rows, "load_average": os.getloadavg()[0]}
    if 4000 in by_n and 16000 in by_n:
        doc["peak_rss_16k_over_4k"] = by_n[16000]["peak_rss_mb"] / by_n[4000]["peak_rss_mb"]
    return doc


def resume(args: argparse.Namespace) -> dict:
    warm = warm_cache()
    with tempfile.TemporaryDirectory(prefix="resume-") as tmp:
        work = Path(tmp)
        paths = make_folder(work, args.files, broken=True)
        full = run_child(paths, fresh_cache(work, warm, "cache-full"), work)
        print("full", json.dumps({k: v for k, v in full.items() if k != "skipped"}), file=sys.stderr, flush=True)
        cache = fresh_cache(work, warm, "cache-killed")
        killed = run_child(paths, cache, work, kill_at=args.kill_at)
        print("killed", json.dumps(killed), file=sys.stderr, flush=True)
        rerun = run_child(paths, cache, work)
        a, b = np.load(full["features"]), np.load(rerun["features"])
        doc = {
            "files": len(paths), "full": {k: v for k, v in full.items() if k not in ("features", "skipped")},
            "killed": killed, "rerun": {k: v for k, v in rerun.items() if k not in ("features", "skipped")},
            "rerun_over_full_wall": rerun["wall_seconds"] / full["wall_seconds"],
            "rerun_over_full_featurize": rerun["seconds"] / full["seconds"],
            "identical_features": bool(a.shape == b.shape and np.array_equal(a, b)),
            "max_abs_diff": float(np.abs(a - b).max(initial=0.0)) if a.shape == b.shape else None,
            "skipped_named_by_rerun": rerun["skipped"], "load_average": os.getloadavg()[0],
        }
    return doc


def _timed(command: list[str], env: dict[str, str], code: Path, marker: str | None = None) -> dict:
    """Run ``command`` to its end: wall, CPU (user + system) and peak RSS of that process (``wait4``); with
    ``marker``, also the wall time until it prints a line starting with ``marker``. It runs in ``code``: ``-m`` and
    ``-c`` put the working folder first on ``sys.path``, so that checkout's ``utils`` is the one imported."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, env=env, cwd=code, stdout=subprocess.PIPE, stderr=err, text=True)
        row: dict = {}
        for line in proc.stdout:  # type: ignore[union-attr]
            if marker and line.startswith(marker) and "first_feature_s" not in row:
                row["first_feature_s"] = time.perf_counter() - start
            elif line.startswith("modules "):
                row["heavy_modules_imported"] = line.split(" ", 1)[1].strip()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        row["wall_s"] = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{command} failed: {err.read()[-2000:]}")
    row["cpu_s"] = usage.ru_utime + usage.ru_stime
    row["peak_rss_mb"] = usage.ru_maxrss / 1024
    return row


FIRST_FEATURE = """
import sys
from utils.features import featurize_files
r = featurize_files([sys.argv[1]], image_size=int(sys.argv[2]) if len(sys.argv) > 2 else None, use_cache=False,
                    progress=False)
print("first", r.features.shape, flush=True)
print("modules", sorted(m for m in ("tensorflow", "keras") if m in sys.modules), flush=True)
"""


def startup(args: argparse.Namespace) -> dict:
    warm = warm_cache()
    versions = {"after": REPO} | ({"before": args.before.resolve()} if args.before else {})
    rows: dict[str, list[dict]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        work = Path(tmp)
        paths = make_folder(work, args.files)
        folder = paths[0].parent
        one_new = work / "one-new.jpg"  # a file no run has featurized: the first feature is computed
        shutil.copy(course_files(args.files + 1)[-1], one_new)
        features: dict[str, np.ndarray] = {}
        for rep in range(args.repeats):
            for name, code in versions.items():
                env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2"}
                tag = f"{name}-{rep}"
                tool = "deep_features" if (code / "deep_features").is_dir() else "utils"  # --before: older
                cli = [sys.executable, "-m", tool, "featurize", str(folder), *image_size_option()]
                cache = fresh_cache(work, warm, f"cache-full-{tag}")
                env_full = {**env, "DEEP_FEATURES_CACHE": str(cache)}
                full = _timed(cli + ["--output", str(work / f"full-{tag}.npz")], env_full, code)
                warm_run = _timed(cli + ["--output", str(work / f"warm-{tag}.npz")], env_full, code)
                killed_cache = fresh_cache(work, warm, f"cache-killed-{tag}")
                killed = run_child(paths, killed_cache, work, kill_at=args.kill_at, code=code)
                rerun = _timed(cli + ["--output", str(work / f"rerun-{tag}.npz")],
                               {**env, "DEEP_FEATURES_CACHE": str(killed_cache)}, code)
                first = _timed([sys.executable, "-c", FIRST_FEATURE, str(one_new), *image_size_option()[1:]],
                               {**env, "DEEP_FEATURES_CACHE": str(cache)}, code, marker="first")
                outputs = {k: np.load(work / f"{k}-{tag}.npz")["features"] for k in ("full", "warm", "rerun")}
                features.setdefault(name, outputs["full"])
                row = {"full": full, "warm": warm_run, "killed_at_files": killed["killed_at_files"],
                       "rerun": rerun, "first_feature": first,
                       "rerun_over_full_wall": rerun["wall_s"] / full["wall_s"],
                       "rerun_over_full_cpu": rerun["cpu_s"] / full["cpu_s"],
                       "warm_and_rerun_features_identical_to_full": bool(
                           np.array_equal(outputs["warm"], outputs["full"])
                           and np.array_equal(outputs["rerun"], outputs["full"])),
                       "load_average": os.getloadavg()[0]}
                rows[name].append(row)
                print(name, json.dumps(row), file=sys.stderr, flush=True)
                for sub in (cache, killed_cache):
                    shutil.rmtree(sub)

    def median(name: str, *keys: str) -> float:
        values = []
        for r in rows[name]:
            v = r
            for k in keys:
                v = v[k]
            values.append(v)
        return float(np.median(values))

    measures = {"full_wall": ("full", "wall_s"), "full_cpu": ("full", "cpu_s"),
                "warm_wall": ("warm", "wall_s"), "warm_cpu": ("warm", "cpu_s"),
                "rerun_wall": ("rerun", "wall_s"), "rerun_cpu": ("rerun", "cpu_s"),
                "first_feature_wall": ("first_feature", "first_feature_s"),
                "first_feature_process_cpu": ("first_feature", "cpu_s"),
                "first_feature_peak_rss_mb": ("first_feature", "peak_rss_mb"),
                "rerun_over_full_wall": ("rerun_over_full_wall",), "rerun_over_full_cpu": ("rerun_over_full_cpu",)}
    summary = {name: {m: median(name, *keys) for m, keys in measures.items()} for name in versions}
    doc: dict = {"files": args.files, "repeats": args.repeats, "kill_at": args.kill_at, "median": summary,
                 "rows": rows}
    if "before" in versions:
        doc["after_over_before"] = {m: summary["after"][m] / summary["before"][m] for m in measures}
        a, b = features["after"], features["before"]
        doc["features_identical_after_vs_before"] = bool(a.shape == b.shape and np.array_equal(a, b))
        doc["max_abs_diff_after_vs_before"] = float(np.abs(a - b).max(initial=0.0)) if a.shape == b.shape else None
    return doc


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    global DATA_DIR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--image-size", type=int, default=None, help="pixels (default: the backbone's own)")
    sub = parser.add_subparsers(dest="what")
    p = sub.add_parser("scale")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--json", type=Path)
    p = sub.add_parser("resume")
    p.add_argument("--files", type=int, default=4000)
    p.add_argument("--kill-at", type=float, default=0.7)
    p.add_argument("--json", type=Path)
    p = sub.add_parser("startup")
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--kill-at", type=float, default=0.7)
    p.add_argument("--before", type=Path, help="another checkout to compare with (its utils/ is imported)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = parser.parse_args()
    DATA_DIR = data_dir(args)
    commands = {"scale": scale, "resume": resume, "startup": startup}
    if args.tiny:
        args.image_size = args.image_size or 64
        args.sizes, args.files, args.kill_at, args.repeats, args.before = [8], 8, 0.5, 1, None
        args.json = getattr(args, "json", None)
    elif args.what is None:
        parser.error("choose scale, resume or startup (or --tiny)")
    if args.image_size:
        os.environ[IMAGE_SIZE_ENV] = str(args.image_size)
    doc = ({name: run(args) for name, run in commands.items()} if args.tiny and args.what is None
           else commands[args.what](args))
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
