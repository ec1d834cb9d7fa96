"""Exercise self-checks: say whether a student's answer is right without showing the right answer.

Each exercise registers a function that computes its expected answer from the run's own
objects (the data, the fitted models), so the expected value follows the notebook's parameters
and never sits on screen beside ``answer = ...``. A check cell holds only the student's answer
and the objects the check needs::

    answer = ...
    checks.check("3.2", answer, deep_accuracy=deep_accuracy, raw_accuracy=raw_accuracy,
                 n_test=len(test))

Register an exercise next to the others with::

    @exercise("3.2", tolerance=0, hint="count images, not a fraction")
    def _(deep_accuracy, raw_accuracy, n_test):
        return round((deep_accuracy - raw_accuracy) * n_test)

When ``$DEEP_FEATURES_ANSWERS`` names a file (the course runner sets it for each notebook),
every check that computes its expected answer also appends it there as a JSON line
(``{"exercise": id, "expected": value, "tolerance": ...}``): the answer key of that run, which
the tests compare with what the notebook printed before each exercise.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..runtime import _ANSWERS_ENV_VAR, _CHECK_RESULTS_ENV_VAR


@dataclass(frozen=True)
class _Exercise:
    """One registered exercise: how to compute its expected answer and how close an answer must
    be."""

    exercise_id: str
    expected: Callable[..., Any]
    tolerance: float
    hint: str


_EXERCISES: dict[str, _Exercise] = {}


def exercise(exercise_id: str, tolerance: float = 1e-6,
             hint: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``function(**objects) -> expected answer`` as the check of
    ``exercise_id``.

    Used by the checks of every lesson (``utils/checks/lessonNN.py``).
    """
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        if exercise_id in _EXERCISES:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        _EXERCISES[exercise_id] = _Exercise(exercise_id, function, tolerance, hint)
        return function
    return register


def _expected_answer(exercise_id: str, **objects: Any) -> Any:
    """The expected answer of ``exercise_id`` for these objects (for tests and instructors, not for
    cells)."""
    _load(exercise_id)
    try:
        registered = _EXERCISES[exercise_id]
    except KeyError:
        raise KeyError(f"unknown exercise {exercise_id!r}; "
                       f"registered: {', '.join(sorted(load_all()))}") from None
    return registered.expected(**objects)


def _same(answer: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    try:
        return bool(np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                                atol=tolerance, rtol=0))
    except (TypeError, ValueError):
        return False


def _record_result(exercise_id: str, status: str, answer: Any) -> None:
    """Append this check's result to ``$DEEP_FEATURES_CHECK_RESULTS`` when the grader set it (else
    nothing)."""
    path = os.environ.get(_CHECK_RESULTS_ENV_VAR)
    if path:
        # 6, not np.int64(6)
        shown = repr(answer.item() if isinstance(answer, np.generic) else answer)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        with open(path, "a", encoding="utf-8") as results:
            results.write(json.dumps({"exercise": exercise_id, "status": status,
                                      "answer": shown}) + "\n")


def _record_expected(registered: _Exercise, expected: Any) -> None:
    """Append the expected answer to ``$DEEP_FEATURES_ANSWERS`` when it is set (never to the
    screen)."""
    path = os.environ.get(_ANSWERS_ENV_VAR)
    if path:
        value = expected.tolist() if isinstance(expected, (np.ndarray, np.generic)) else expected
        record = {"exercise": registered.exercise_id, "expected": value,
                  "tolerance": registered.tolerance}
        with open(path, "a", encoding="utf-8") as key:
            key.write(json.dumps(record, default=str) + "\n")


def check(exercise_id: str, answer: Any, **objects: Any) -> bool | None:
    """Print whether ``answer`` is right (never printing the expected value); None while it is still
    ``...``/None.

    Used in every lesson's exercises.
    """
    _load(exercise_id)
    registered = _EXERCISES.get(exercise_id)
    if registered is None:  # a typo in the id fails loudly, even before the student answers
        raise KeyError(f"unknown exercise {exercise_id!r}; "
                       f"registered: {', '.join(sorted(load_all()))}")
    if answer is None or answer is Ellipsis:
        _record_result(exercise_id, "not attempted", answer)
        print(f"[{exercise_id}] not answered yet: "
              "replace the ... with your answer and run the cell again.")
        return None
    expected = registered.expected(**objects)
    _record_expected(registered, expected)
    correct = _same(answer, expected, registered.tolerance)
    _record_result(exercise_id, "correct" if correct else "wrong", answer)
    if correct:
        print(f"[{exercise_id}] correct. Well done!")
        return True
    print(f"[{exercise_id}] not quite, try again."
          + (f" Hint: {registered.hint}" if registered.hint else ""))
    return False


def _load(exercise_id: str) -> None:
    """Import the checks of the exercise's lesson (``"3.2"`` -> :mod:`utils.checks.lesson03`)
    once."""
    number = exercise_id.split(".")[0]
    if number.isdigit():
        try:
            importlib.import_module(f"{__name__}.lesson{int(number):02d}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.lesson{int(number):02d}":
                raise


def load_all() -> dict[str, _Exercise]:
    """Every lesson's checks, imported (for tests and instructors): :data:`_EXERCISES`.

    Used by ``instructor grade`` and the tests; no lesson calls it.
    """
    for path in sorted(Path(__file__).parent.glob("lesson[0-9][0-9].py")):
        importlib.import_module(f"{__name__}.{path.stem}")
    return _EXERCISES
