"""Process plumbing shared by every other module: the cache folder, one atomic write, a quiet
TensorFlow import, the CPU's feature flags.

TensorFlow's C++ start-up log is kept quiet by :func:`_quiet_tensorflow` (called by ``import
utils``): an environment setting, read when TensorFlow loads.

This is the bottom layer of ``utils`` (it imports no other module of the package), so data,
backbones, features and the rest can all use it without import cycles.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

_CACHE_ENV_VAR = "DEEP_FEATURES_CACHE"
# where utils.checks records expected answers (set by the course runner)
_ANSWERS_ENV_VAR = "DEEP_FEATURES_ANSWERS"
# where utils.checks records each result (set by instructor grade)
_CHECK_RESULTS_ENV_VAR = "DEEP_FEATURES_CHECK_RESULTS"


def _cache_root() -> Path:
    """Where converted weights and features are cached: ``$DEEP_FEATURES_CACHE`` or
    ``~/.cache/deep-features``."""
    return Path(os.environ.get(_CACHE_ENV_VAR) or Path.home() / ".cache" / "deep-features")


def _umask_from_proc() -> int | None:
    """The process's umask as Linux (4.7+) shows it in ``/proc/self/status``; ``None`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    found = _umask_from_proc()
    # os.umask is read by setting it: for an instant, at import, to a strict value
    if found is None:
        found = os.umask(0o077)
        os.umask(found)
    return found


_UMASK_AT_IMPORT = _umask_at_import()


def _current_umask() -> int:
    """The process's umask, read without changing it (``/proc`` on Linux), else the one at
    import."""
    found = _umask_from_proc()
    return _UMASK_AT_IMPORT if found is None else found


def atomic_write(path: str | os.PathLike[str],
                 content: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write ``content`` (bytes, text, or a function that writes to a binary file) to ``path``
    atomically.

    The data go to a temporary file in the same folder, which then replaces ``path`` in one step: a
    reader (another notebook, another process) sees the old file or the whole new one, never a
    half-written one. The file gets the mode any new file gets (``0o666`` less the umask: 0644 under
    umask 022), not ``mkstemp``'s private 0600, so a cache shared by cluster workers running as
    other users stays readable to them.

    Used by the lessons' feature cache, the tool and ``instructor``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            _chmod_as_new_file(handle.fileno(), tmp)
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _chmod_as_new_file(fd: int, name: str) -> None:
    mode = 0o666 & ~_current_umask()
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # Windows: only the read-only flag exists, and 0o666 & ~umask keeps the file writable
            os.chmod(name, mode)
    except OSError:  # a file system without modes (some network shares): keep what it gave
        pass


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 for native (C++) code: TensorFlow and TFLite print start-up notices
    there (CUDA probing, oneDNN, XNNPACK) before any logging setting applies. Python exceptions
    still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _RetracingAdviceFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls to <function ...> triggered tf.function
    retracing" advice.

    Keras's ``predict`` traces one ``tf.function`` per model (and per new input shape); a lesson
    that builds and predicts with several small models, on a few images at the small size, meets the
    heuristic behind that advice although nothing is wrong. Every other TensorFlow log record
    passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up log out of notebooks and terminals (called by ``import utils``).

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set: TensorFlow's C++ INFO and WARNING lines stay
    quiet, its errors show (``TF_CPP_MIN_LOG_LEVEL=0`` shows the whole log). The Python logger
    ``tensorflow`` drops the retracing advice (:class:`_RetracingAdviceFilter`). Idempotent.

    No import hook is needed: on Linux x86_64 the course installs ``tensorflow-cpu``, which never
    probes for CUDA, and with the level set its import prints nothing (measured with 2.21.0; the
    ``tensorflow`` wheel printed absl's "All log messages before absl::InitializeLog()" and
    "Could not find cuda drivers" whatever the level).
    """
    logger = logging.getLogger("tensorflow")  # the logger TensorFlow logs to (tf.get_logger())
    if not any(isinstance(f, _RetracingAdviceFilter) for f in logger.filters):
        logger.addFilter(_RetracingAdviceFilter())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@functools.lru_cache(maxsize=None)
def _package_version(name: str) -> str:
    """``name.__version__`` without importing it (importing TensorFlow alone takes seconds): the
    version of the installed distribution that provides the module ``name`` (``tensorflow`` comes
    from ``tensorflow-cpu`` on Linux x86_64), else the module's own."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    for distribution in metadata.packages_distributions().get(name, []):  # tensorflow-cpu, ...
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    import importlib

    return str(importlib.import_module(name).__version__)


def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())
