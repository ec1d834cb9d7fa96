"""Exercise self-checks: say whether a student's answer is right without printing the right answer.

The expected value is computed from the data (it changes with the notebook's parameters), so checks compare
the student's answer with a recomputation rather than with a typed-in number.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _same(answer: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    try:
        return bool(np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                                atol=tolerance, rtol=0))
    except (TypeError, ValueError):
        return False


def check(name: str, answer: Any, expected: Any, tolerance: float = 1e-6, hint: str = "") -> bool | None:
    """Print whether ``answer`` matches ``expected`` (never printing ``expected``); None if not answered yet."""
    if answer is None or answer is Ellipsis:
        print(f"[{name}] not answered yet: replace the ... / None with your answer and run the cell again.")
        return None
    if _same(answer, expected, tolerance):
        print(f"[{name}] correct. Well done!")
        return True
    print(f"[{name}] not quite, try again." + (f" Hint: {hint}" if hint else ""))
    return False
