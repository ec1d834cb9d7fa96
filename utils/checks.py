"""Exercise self-checks: say whether a student's answer is right without showing the right answer.

Each exercise registers a function that computes its expected answer from the run's own objects (the data,
the fitted models), so the expected value follows the notebook's parameters and never sits on screen beside
``answer = ...``. A check cell holds only the student's answer and the objects the check needs::

    answer = ...
    checks.check("3.2", answer, deep_accuracy=deep_accuracy, raw_accuracy=raw_accuracy, n_test=len(test))

Register an exercise next to the others with::

    @exercise("3.2", tolerance=0, hint="count images, not a fraction")
    def _(deep_accuracy, raw_accuracy, n_test):
        return round((deep_accuracy - raw_accuracy) * n_test)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Exercise:
    """One registered exercise: how to compute its expected answer and how close an answer must be."""

    exercise_id: str
    expected: Callable[..., Any]
    tolerance: float
    hint: str


EXERCISES: dict[str, Exercise] = {}


def exercise(exercise_id: str, tolerance: float = 1e-6, hint: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``function(**objects) -> expected answer`` as the check of ``exercise_id``."""
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        EXERCISES[exercise_id] = Exercise(exercise_id, function, tolerance, hint)
        return function
    return register


def expected_answer(exercise_id: str, **objects: Any) -> Any:
    """The expected answer of ``exercise_id`` for these objects (for tests and instructors, not for cells)."""
    try:
        registered = EXERCISES[exercise_id]
    except KeyError:
        raise KeyError(f"unknown exercise {exercise_id!r}; registered: {', '.join(sorted(EXERCISES))}") from None
    return registered.expected(**objects)


def _same(answer: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    try:
        return bool(np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                                atol=tolerance, rtol=0))
    except (TypeError, ValueError):
        return False


def check(exercise_id: str, answer: Any, *legacy_expected: Any, **objects: Any) -> bool | None:
    """Print whether ``answer`` is right (never printing the expected value); None while it is still ``...``/None."""
    if answer is None or answer is Ellipsis:
        print(f"[{exercise_id}] not answered yet: replace the ... with your answer and run the cell again.")
        return None
    if legacy_expected:  # TEMPORARY: the old check(name, answer, expected) form, until every lesson is registered
        registered = Exercise(exercise_id, lambda **_: legacy_expected[0], objects.pop("tolerance", 1e-6), "")
    else:
        registered = EXERCISES.get(exercise_id)
    if registered is None:
        raise KeyError(f"unknown exercise {exercise_id!r}; registered: {', '.join(sorted(EXERCISES))}")
    if _same(answer, registered.expected(**objects), registered.tolerance):
        print(f"[{exercise_id}] correct. Well done!")
        return True
    print(f"[{exercise_id}] not quite, try again." + (f" Hint: {registered.hint}" if registered.hint else ""))
    return False


# ---- Exercises, one block per lesson (lesson 7's block goes at the end). ----


# ---- Lesson 7: fine-tuning ----

@exercise("7.1", tolerance=0, hint="multiply the height, width and channels of the activation shape")
def _(activation_shape):
    return int(np.prod(activation_shape))


@exercise("7.2", tolerance=0, hint="count images where fine_tuned_predicted == y_test and probe_predicted != y_test")
def _(fine_tuned_predicted, probe_predicted, labels):
    if fine_tuned_predicted is None or probe_predicted is None:
        raise ValueError("the test set was not scored: run with score_test = True")
    labels = np.asarray(labels)
    return int(((np.asarray(fine_tuned_predicted) == labels) & (np.asarray(probe_predicted) != labels)).sum())
