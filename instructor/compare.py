"""Compare the lesson figures of two course runs (``python -m instructor compare A/results.json B/results.json``).

A refactoring that must not change what the lessons compute is checked by running the course before and after
and comparing: every metric of the first run must be in the second with the same value. Wall and CPU times
differ from run to run and are listed apart, not compared, and so do the random parts of temporary folder names
(``/tmp/new-photos-kqnh0qjj``), which are compared without them; floats are compared to a relative 1e-9 of their size.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

#: Keys (at any depth) holding timings or other machine-dependent figures.
TIMING: Final = re.compile(r"seconds|ms_per|ms per|µs per|microseconds|build s|us per|_time|cpu", re.IGNORECASE)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, str(i)))
    else:
        yield path, value


#: A folder made by ``tempfile.mkdtemp(prefix=...)``: its random part differs from run to run.
TEMP_DIR = re.compile(r"(?P<prefix>[\w.-]+?)[-_]?(?P<random>[a-z0-9_]{8})(?=/|$)")


def _untemp(text: str) -> str:
    """``text`` with the random part of every temporary folder name in it made ``*``."""
    tmp = re.escape(tempfile.gettempdir())
    return re.sub(rf"{tmp}/[^/\s]+", lambda m: TEMP_DIR.sub(r"\g<prefix>-*", m.group(0)), text)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return _untemp(a) == _untemp(b)
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def compare(before: dict, after: dict) -> tuple[list[str], list[str], int]:
    """Differences (non-timing), timing keys skipped, and the number of figures compared."""
    differences, timings, compared = [], [], 0
    old, new = before.get("metrics") or {}, after.get("metrics") or {}
    for lesson in sorted(old):
        if not isinstance(old[lesson], dict):
            differences.append(f"{lesson}: no metrics in the first run")
            continue
        if not isinstance(new.get(lesson), dict):
            differences.append(f"{lesson}: no metrics in the second run")
            continue
        later = dict(_leaves(new[lesson]))
        for path, value in _leaves(old[lesson]):
            name = f"{lesson}: {'.'.join(path)}"
            if any(TIMING.search(part) for part in path):
                timings.append(name)
            elif path not in later:
                differences.append(f"{name}: missing in the second run")
            elif not _same(value, later[path]):
                differences.append(f"{name}: {value!r} -> {later[path]!r}")
            else:
                compared += 1
    return differences, timings, compared


def main(first: Path, second: Path) -> int:
    before, after = (json.loads(Path(p).read_text("utf-8")) for p in (first, second))
    differences, timings, compared = compare(before, after)
    print(f"{compared} figures equal; {len(timings)} timings not compared; {len(differences)} differences")
    for line in differences:
        print(f"  {line}")
    return 1 if differences else 0
