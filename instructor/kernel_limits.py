"""Start a command (the grader's Jupyter kernel) under a memory and a time limit, then become it.

``python -m instructor.kernel_limits --memory-bytes N --seconds S -- COMMAND ...``

* ``RLIMIT_AS`` caps the address space: an allocation beyond it raises ``MemoryError`` in the cell (or, from a C
  library that cannot report it, ends the kernel). Processes the kernel starts inherit the limit.
* ``alarm(S)``: SIGALRM ends the kernel after S seconds, however busy it is; neither Python nor ipykernel handles
  that signal, and a pending alarm survives ``exec``.

Both are set here and the command replaces this process (``os.execvp``), so they apply to the kernel itself and
to nothing else. POSIX only (the ``resource`` module and ``alarm``).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys


def apply_limits(memory_bytes: int, seconds: int) -> None:
    """Limit this process's address space (0: no limit) and end it with SIGALRM after ``seconds`` (0: never)."""
    if memory_bytes > 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        except (ValueError, OSError) as exc:  # e.g. macOS refuses RLIMIT_AS below the current size
            print(f"kernel_limits: memory limit not applied ({exc})", file=sys.stderr, flush=True)
    if seconds > 0:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instructor.kernel_limits", description=__doc__.split("\n")[0])
    parser.add_argument("--memory-bytes", type=int, default=0, help="address-space limit (0: none)")
    parser.add_argument("--seconds", type=int, default=0, help="end the command after this long (0: never)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    apply_limits(args.memory_bytes, args.seconds)
    os.execvp(command[0], command)
    return 127  # not reached: execvp raises when it fails


if __name__ == "__main__":
    sys.exit(main())
