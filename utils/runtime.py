"""Process plumbing shared by every other module: the cache folder, one atomic write, an exclusive
file lock, a quiet TensorFlow import, the CPU's feature flags.

TensorFlow's C++ start-up log is kept quiet by :func:`quiet_tensorflow` (called by ``import utils``):
an environment setting, read when TensorFlow loads.

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
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

CACHE_ENV_VAR = "DEEP_FEATURES_CACHE"
# where utils.checks records expected answers (set by the course runner)
ANSWERS_ENV_VAR = "DEEP_FEATURES_ANSWERS"
# where utils.checks records each result (set by instructor grade)
CHECK_RESULTS_ENV_VAR = "DEEP_FEATURES_CHECK_RESULTS"


def cache_root() -> Path:
    """Where converted weights and features are cached: ``$DEEP_FEATURES_CACHE`` or
    ``~/.cache/deep-features``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "deep-features")


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


def current_umask() -> int:
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
    mode = 0o666 & ~current_umask()
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # Windows: only the read-only flag exists, and 0o666 & ~umask keeps the file writable
            os.chmod(name, mode)
    except OSError:  # a file system without modes (some network shares): keep what it gave
        pass


class LockTimeoutError(TimeoutError):
    """:func:`exclusive_lock` waited ``timeout`` seconds for another process to release the lock."""


def _lock_functions() -> tuple[Callable[[int], bool], Callable[[int], None]] | None:
    """``(try_lock(fd) -> bool, unlock(fd))`` for this platform: ``fcntl.flock`` on POSIX,
    ``msvcrt.locking`` on Windows; ``None`` where neither exists."""
    try:
        import fcntl
    except ImportError:
        pass
    else:
        def try_flock(fd: int) -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        return try_flock, lambda fd: fcntl.flock(fd, fcntl.LOCK_UN)
    try:
        import msvcrt
    except ImportError:
        return None

    # one byte at offset 0 (past the end of an empty file: allowed)
    def try_locking(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def unlock_locking(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    return try_locking, unlock_locking


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a holder may have removed it
    meanwhile)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    if not here.st_ino or not there.st_ino:  # no inode numbers here: cannot tell, assume it is
        return True
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], timeout: float | None = None,
                   on_wait: Callable[[], None] | None = None, poll: float = 0.2) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``path`` (created if needed) while the ``with`` block
    runs.

    The lock is the operating system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows): it
    is released when the process ends however it ends, so a killed holder leaves no stale lock. When
    another process holds it, ``on_wait()`` is called once and the lock is tried again every
    ``poll`` seconds, for at most ``timeout`` seconds (``None``: no limit), then
    :class:`LockTimeoutError`. Yields ``True``, or ``False`` without locking on a platform with
    neither call. Locks on network file systems are only as good as the server's (NFSv4: yes). The
    lock file is left in place. A holder may still remove it before it lets go (to tidy up): a
    waiter that then gets the lock of the removed file notices and locks the file now at ``path``
    instead.
    """
    path = Path(path)
    functions = _lock_functions()
    if functions is None:
        yield False
        return
    try_lock, unlock = functions
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if try_lock(fd):
                if _same_file(fd, path):
                    break
                unlock(fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeoutError(f"{path} is still locked by another process after {timeout:g} s")
        time.sleep(poll)
    try:
        yield True
    finally:
        try:
            unlock(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
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


def quiet_tensorflow() -> None:
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
def package_version(name: str) -> str:
    """``name.__version__`` without importing it (importing TensorFlow alone takes seconds): the
    installed distribution's version, or the module's own when no distribution of that name is
    installed."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # e.g. tensorflow-cpu, tf-nightly: ask the module itself
        import importlib

        return str(importlib.import_module(name).__version__)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())
