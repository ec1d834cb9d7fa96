"""``python -m instructor course | site | student-copies | check | clean-notebooks | sync-notebooks | grade |
compare``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import NOTEBOOK_DIR, REPO


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _log(message: str) -> None:
    print(message, flush=True)


def _run_parameters(args: argparse.Namespace, small: dict[str, Any]) -> dict[str, Any]:
    """The notebooks' parameters from --small, --data-dir and -p NAME VALUE (course and grade alike)."""
    parameters: dict[str, Any] = dict(small) if args.small else {}
    if args.data_dir is not None:
        parameters["data_dir"] = str(args.data_dir.resolve())
    parameters.update({name: _parse_value(value) for name, value in args.parameter})
    return parameters


def course(args: argparse.Namespace) -> int:
    """Run every notebook, write the report, the student copies and (unless --no-site) the site."""
    from . import notebooks, run

    parameters = _run_parameters(args, run.SMALL_PARAMETERS)
    try:
        run.run_course(args.out, parameters, notebooks=args.notebooks, kernel_name=args.kernel, log=_log)
    except run.CourseRunError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    student = notebooks.write_student_copies(args.out / "student", args.notebooks)
    _log(f"Student copies (no solutions): {len(student)} notebooks in {args.out / 'student'}")
    if not args.no_site:
        return build_site(args)
    return 0


def build_site(args: argparse.Namespace) -> int:
    """Build the site from an earlier run's build folder."""
    from . import site

    tick = time.perf_counter()
    folder = site.build_site(args.out)
    _log(f"Site built in {time.perf_counter() - tick:.1f} s: {(folder / 'index.html').resolve().as_uri()}")
    return 0


def student_copies(args: argparse.Namespace) -> int:
    from .notebooks import write_student_copies

    written = write_student_copies(args.out / "student", args.notebooks)
    _log(f"{len(written)} student notebooks (cells tagged 'solution' removed) in {args.out / 'student'}")
    return 0


def check(args: argparse.Namespace) -> int:
    """Report what a run shows that it must not (C++ log lines, answers before their exercise, long code lines)."""
    from .hygiene import check_build

    if not (args.out / "notebooks").is_dir():
        print(f"error: no executed notebooks in {args.out / 'notebooks'}: run `python -m instructor course` first",
              file=sys.stderr)
        return 2
    problems = check_build(args.out)
    for problem in problems:
        print(problem)
    if not problems:
        _log(f"{args.out}: no C++ log line, no answer on screen before its exercise, no code line too long")
    return 1 if problems else 0


def _report(paths: list[Path], check: bool, words: tuple[str, str], command: str, all_good: str) -> int:
    """Print each file found (``words``: as --check says it, as a fix says it); 1 when --check found any."""
    for path in paths:
        print(f"{words[0] if check else words[1]}: {path}")
    if check and paths:
        print(f"run: python -m instructor {command}", file=sys.stderr)
        return 1
    if not paths:
        print(all_good)
    return 0


def clean(args: argparse.Namespace) -> int:
    """Clean (or with --check, check) the notebooks; 1 when --check finds a dirty one."""
    from .notebooks import clean_notebooks

    dirty = clean_notebooks(args.folder, check_only=args.check)
    return _report(dirty, args.check, ("not clean", "cleaned"), "clean-notebooks", "notebooks are clean")


def sync(args: argparse.Namespace) -> int:
    """Write the install cells and README launch links (with --check, fail when they are stale)."""
    from .notebooks import repository_url, sync_notebooks

    readme = REPO / "README.md" if args.folder.resolve() == NOTEBOOK_DIR else None  # another folder: its own cells only
    changed = sync_notebooks(args.folder, readme=readme, check_only=args.check)
    return _report(changed, args.check, ("out of date", "updated"), "sync-notebooks",
                   f"install cells and launch links are up to date (repository: {repository_url() or 'not set'})")


def grade(args: argparse.Namespace) -> int:
    """Execute every student's submitted notebooks and write the gradebook."""
    from . import grade as grading, run

    parameters = _run_parameters(args, run.SMALL_PARAMETERS)
    try:
        grading.grade(args.submissions, args.out, parameters, notebooks=args.notebooks, timeout=args.timeout,
                      jobs=args.jobs, memory_gb=args.memory_gb, log=_log)
    except grading.GradeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the running notebooks were stopped; no gradebook written", file=sys.stderr, flush=True)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m instructor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_out(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--out", type=Path, default=Path("build"), help="build folder (default: build)")
        return p

    def with_notebooks(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR,
                       help="folder of the NN_name.ipynb notebooks (default: %(default)s)")
        return p

    from .run import SMALL_PARAMETERS

    p = with_notebooks(with_out(sub.add_parser(
        "course", help="run every notebook with papermill; write results, student copies and the site")))
    p.add_argument("--small", action="store_true",
                   help="quick run: " + ", ".join(f"{k}={v}" for k, v in SMALL_PARAMETERS.items()))
    p.add_argument("--no-site", action="store_true", help="skip the site")
    p.add_argument("--data-dir", type=Path, default=None, help="folder of the course images")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: each notebook's own)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="extra notebook parameter, VALUE parsed as JSON when it can be (e.g. -p seed 1)")
    p.set_defaults(run=course)

    with_out(sub.add_parser("site", help="build the site from BUILD/notebooks and BUILD/results.json")
             ).set_defaults(run=build_site)
    with_notebooks(with_out(sub.add_parser("student-copies", help="notebooks without solution cells, to BUILD/student"))
                   ).set_defaults(run=student_copies)
    with_out(sub.add_parser("check", help="in a run's BUILD: C++ log lines, answers shown before their exercise, "
                                          "code lines over 88 characters; exit 1 if any")).set_defaults(run=check)
    for name, helptext, function in (
            ("clean-notebooks", "strip outputs and volatile metadata (nbstripout)", clean),
            ("sync-notebooks", "write every notebook's install cell and the README's launch links", sync)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
        p.add_argument("folder", nargs="?", type=Path, default=NOTEBOOK_DIR,
                       help="folder of notebooks (default: %(default)s)")
        p.set_defaults(run=function)

    p = sub.add_parser("compare", help="the lesson figures of two runs' results.json: exit 1 if any differ "
                                       "(timings listed apart)")
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.set_defaults(run=lambda args: __import__("instructor.compare").compare.main(args.first, args.second))

    from .grade import DEFAULT_MEMORY_GB, DEFAULT_TIMEOUT

    p = with_notebooks(sub.add_parser(
        "grade", help="execute the students' notebooks (SUBMISSIONS/<student>/NN_name.ipynb); write a gradebook"))
    p.add_argument("submissions", type=Path, help="one folder per student, with the lesson notebooks they submit")
    p.add_argument("--out", type=Path, default=Path("build/gradebook"),
                   help="gradebook folder: gradebook.csv, gradebook.md, notebooks/ (default: %(default)s)")
    p.add_argument("--small", action="store_true", help="grade at the small course size, as course --small")
    p.add_argument("--data-dir", type=Path, default=None, help="folder of the course images")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="extra notebook parameter, VALUE parsed as JSON when it can be")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                   help="seconds per notebook before it is stopped (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (default: %(default)s)")
    p.add_argument("--memory-gb", type=float, default=DEFAULT_MEMORY_GB,
                   help="address-space limit of each kernel in GB, 0 for none (default: %(default)s)")
    p.set_defaults(run=grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
