"""Exercise self-checks: say whether a student's answer is right without showing the right answer.

Each ``lessonNN.py`` registers (:func:`exercise`) a function that computes an exercise's expected
answer from the run's own objects, never on screen. Files named by ``$DEEP_FEATURES_ANSWERS`` and
``$DEEP_FEATURES_CHECK_RESULTS`` receive each expected answer and each result as JSON lines.
"""

import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from ..runtime import _ANSWERS_ENV_VAR, _CHECK_RESULTS_ENV_VAR


class _Exercise(NamedTuple):
    expected: Callable[..., Any]
    tolerance: float
    hint: str


_EXERCISES: dict[str, _Exercise] = {}


def exercise(exercise_id: str, hint: str = "", tolerance: float = 1e-6) -> Callable:
    """Decorator: register ``function(**objects) -> expected answer`` for ``exercise_id`` (with the
    ``hint`` a wrong answer shows). Used by every lesson's checks, ``checks/lessonNN.py``."""
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        if exercise_id in _EXERCISES:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        _EXERCISES[exercise_id] = _Exercise(function, tolerance, hint)
        return function
    return register


def _registered(exercise_id: str) -> _Exercise:
    """The exercise, its lesson's checks imported first (``"3.2"`` -> ``lesson03``)."""
    number = exercise_id.split(".")[0]
    module = f"lesson{int(number):02d}" if number.isdigit() else ""
    if (Path(__file__).parent / f"{module}.py").is_file():
        importlib.import_module(f"{__name__}.{module}")
    if exercise_id not in _EXERCISES:  # a typo in the id fails loudly, even before an answer
        raise KeyError(f"unknown exercise {exercise_id!r}; "
                       f"registered: {', '.join(sorted(load_all()))}")
    return _EXERCISES[exercise_id]


def _expected_answer(exercise_id: str, **objects: Any) -> Any:
    """The expected answer (for tests and instructors, never printed in a cell)."""
    return _registered(exercise_id).expected(**objects)


def _same(answer: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    try:
        return bool(np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                                atol=tolerance, rtol=0))
    except (TypeError, ValueError):
        return False


def _append(env_var: str, record: dict[str, Any]) -> None:
    """Append ``record`` as a JSON line to the file ``$env_var`` names, if it is set."""
    path = os.environ.get(env_var)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")


def check(exercise_id: str, answer: Any, **objects: Any) -> bool | None:
    """Print whether ``answer`` is right, never the expected value (None while unanswered).
    Used in every lesson's exercises."""
    registered = _registered(exercise_id)
    correct = None
    if answer is not None and answer is not Ellipsis:
        expected = registered.expected(**objects)
        value = expected.tolist() if isinstance(expected, (np.ndarray, np.generic)) else expected
        _append(_ANSWERS_ENV_VAR, {"exercise": exercise_id, "expected": value,
                                   "tolerance": registered.tolerance})
        correct = _same(answer, expected, registered.tolerance)
    shown = repr(answer.item() if isinstance(answer, np.generic) else answer)  # 6, not np.int64(6)
    status = {None: "not attempted", True: "correct", False: "wrong"}[correct]
    _append(_CHECK_RESULTS_ENV_VAR, {"exercise": exercise_id, "status": status,
                                     "answer": shown if len(shown) <= 80 else shown[:77] + "..."})
    if correct is None:
        print(f"[{exercise_id}] not answered yet: "
              "replace the ... with your answer and run the cell again.")
    elif correct:
        print(f"[{exercise_id}] correct. Well done!")
    else:
        print(f"[{exercise_id}] not quite, try again."
              + (f" Hint: {registered.hint}" if registered.hint else ""))
    return correct


def load_all() -> dict[str, _Exercise]:
    """Every lesson's checks imported: the registry (for ``instructor grade`` and the tests)."""
    for path in sorted(Path(__file__).parent.glob("lesson[0-9][0-9].py")):
        importlib.import_module(f"{__name__}.{path.stem}")
    return _EXERCISES
