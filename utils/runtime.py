"""Process plumbing shared by every other module: the cache folder, one atomic write, a quiet
TensorFlow import, the CPU's feature flags.

TensorFlow's native libraries log to file descriptor 2 while they load, before any Python or
environment setting can stop them (``cudart_stub.cc ... Could not find cuda drivers`` ignores
``TF_CPP_MIN_LOG_LEVEL``), and its first device query logs the CUDA probe of a CPU-only machine
(``failed call to cuInit``). In a notebook, ipykernel copies that descriptor into the cell's output
*and* the terminal. :func:`quiet_tensorflow` (called by ``import utils``) makes every later ``import
tensorflow`` -- ``import keras`` does one -- drop exactly those start-up lines; anything else
written meanwhile (a Python warning, an unexpected error) is still shown.

This is the bottom layer of ``utils`` (it imports no other module of the package), so data,
backbones, features and the rest can all use it without import cycles.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType
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


#: TensorFlow's start-up log on a CPU machine: absl's note that logging is not set up,
#: absl-formatted INFO and WARNING lines
#: (``I0000 00:00:1796017795.087262    6241 cudart_stub.cc:31] ...``) and TensorFlow's older
#: format of them (``2024-01-01 12:00:00.000000: I tensorflow/core/util/port.cc:113] oneDNN custom
#: operations are on ...``), the advice line after ``cpu_feature_guard``, and the CUDA probe's ERROR
#: lines. Other ERROR lines are kept.
TENSORFLOW_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*"
    r"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*(?:cuInit|CUDA|cuda).*"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] \S+:\d+\] .*"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate"
    r" compiler flags\."
    r"|.*oneDNN custom operations are on.*")


@contextlib.contextmanager
def native_stderr_filtered(noise: re.Pattern[str] = TENSORFLOW_STARTUP_NOISE) -> Iterator[None]:
    """Hold back what native code (and Python) writes to file descriptor 2, then write it out
    without the whole lines that ``noise`` matches. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not noise.fullmatch(line.rstrip("\r\n")))
            if kept:
                os.write(2, kept.encode("utf-8"))


def _start_tensorflow(load: Callable[[], ModuleType]) -> ModuleType:
    """Load TensorFlow and query its devices (the CUDA probe) with the start-up log filtered out.
    The query initializes no runtime, so thread settings (``tf.config.threading``) can still be
    changed afterwards."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):  # asked for the full log: show it
        tf = load()
        tf.config.list_physical_devices()
        return tf
    with native_stderr_filtered():
        tf = load()
        tf.config.list_physical_devices()
    return tf


class _QuietLoader(importlib.abc.Loader):
    """Wraps TensorFlow's own loader: runs it via :func:`_start_tensorflow`; everything else is
    delegated."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        def load() -> ModuleType:
            self._loader.exec_module(module)
            return module

        _start_tensorflow(load)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, get_source, ...
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and hands it to :class:`_QuietLoader`."""

    def __init__(self) -> None:
        self._finding = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _RetracingAdviceFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls to <function ...> triggered tf.function
    retracing" advice.

    Keras's ``predict`` traces one ``tf.function`` per model (and per new input shape); a lesson
    that builds and predicts with several small models, on a few images at the small size, meets the
    heuristic behind that advice although nothing is wrong. Every other TensorFlow log record
    passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_tensorflow() -> None:
    """Make TensorFlow's C++ start-up log stay out of notebooks and terminals (called by ``import
    utils``).

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set (TensorFlow's INFO and WARNING lines stay
    quiet; its errors show) and makes the first ``import tensorflow`` of the process, however it is
    reached, filter the lines of :data:`TENSORFLOW_STARTUP_NOISE`. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to
    see the whole log. The Python logger ``tensorflow`` drops the retracing advice
    (:class:`_RetracingAdviceFilter`). Idempotent; does nothing more once TensorFlow is imported.
    """
    logger = logging.getLogger("tensorflow")  # the logger TensorFlow logs to (tf.get_logger())
    if not any(isinstance(f, _RetracingAdviceFilter) for f in logger.filters):
        logger.addFilter(_RetracingAdviceFilter())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder)
                                          for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


@functools.lru_cache(maxsize=1)
def import_tensorflow_quietly() -> Any:
    """Import TensorFlow without its C++ start-up chatter in notebooks and commands."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    quiet_tensorflow()
    import tensorflow as tf

    return tf


@functools.lru_cache(maxsize=None)
def _package_version(name: str) -> str:
    """``name.__version__`` without importing it (importing TensorFlow alone takes seconds): the
    installed distribution's version, or the module's own when no distribution of that name is
    installed."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # e.g. tensorflow-cpu, tf-nightly: ask the module itself
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
