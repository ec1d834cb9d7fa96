"""Process plumbing for every other ``utils`` module (it imports none of them): the cache folder,
the one atomic write, a quiet TensorFlow, package versions and CPU flags."""

import contextlib
import functools
import importlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

_CACHE_ENV_VAR = "DEEP_FEATURES_CACHE"
_ANSWERS_ENV_VAR = "DEEP_FEATURES_ANSWERS"  # utils.checks records answers there (course runner)
_CHECK_RESULTS_ENV_VAR = "DEEP_FEATURES_CHECK_RESULTS"  # and results (instructor grade)


def _cache_root() -> Path:
    """``$DEEP_FEATURES_CACHE``, else ``~/.cache/deep-features``."""
    return Path(os.environ.get(_CACHE_ENV_VAR) or Path.home() / ".cache" / "deep-features")


def _umask_from_proc() -> int | None:
    """The umask as Linux shows it in /proc/self/status (read without changing it), else None."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


# Elsewhere os.umask is read by setting it: once, at import.
_UMASK_AT_IMPORT = _umask_from_proc()
if _UMASK_AT_IMPORT is None:
    _UMASK_AT_IMPORT = os.umask(0o077)
    os.umask(_UMASK_AT_IMPORT)


def atomic_write(path: str | os.PathLike[str],
                 content: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write bytes, text, or what ``content(binary_file)`` writes, to ``path`` atomically, with
    a new file's mode (not mkstemp's 0600: a shared cache stays readable). For cache and tool."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name ends like the real one (Keras' save_weights checks the suffix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(fd)
    umask = _umask_from_proc()
    try:
        with open(tmp, "wb") as handle:  # handle.name is the temporary file's
            with contextlib.suppress(OSError):  # a file system without modes keeps its own
                os.chmod(tmp, 0o666 & ~(_UMASK_AT_IMPORT if umask is None else umask))
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2, where TensorFlow's and TFLite's C++ start-up notices go."""
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


def _no_retracing_advice(record: logging.LogRecord) -> bool:
    """Drops TensorFlow's retracing advice: lessons fitting several small models trigger it."""
    return "triggered tf.function retracing" not in record.getMessage()


def _quiet_tensorflow() -> None:
    """TensorFlow's C++ log: errors only (unless ``TF_CPP_MIN_LOG_LEVEL`` is set); no retracing."""
    logger = logging.getLogger("tensorflow")
    if _no_retracing_advice not in logger.filters:
        logger.addFilter(_no_retracing_advice)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@functools.lru_cache(maxsize=None)
def _package_version(name: str) -> str:
    """The version of the distribution of module ``name`` (e.g. tensorflow-cpu), not imported."""
    from importlib import metadata
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(name)
    for distribution in metadata.packages_distributions().get(name, []):  # tensorflow-cpu, ...
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(distribution)
    return str(importlib.import_module(name).__version__)


def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from Linux's ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())
