"""Process plumbing shared by every other module: the cache folder, one atomic write, a quiet TensorFlow import,
the CPU's feature flags.

This is the bottom layer of ``utils`` (it imports no other module of the package), so data, backbones, features
and the rest can all use it without import cycles.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, BinaryIO

CACHE_ENV_VAR = "DEEP_FEATURES_CACHE"


def cache_root() -> Path:
    """Where converted weights and features are cached: ``$DEEP_FEATURES_CACHE`` or ``~/.cache/deep-features``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "deep-features")


def atomic_write(path: str | os.PathLike[str], content: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write ``content`` (bytes, text, or a function that writes to a binary file) to ``path`` atomically.

    The data go to a temporary file in the same folder, which then replaces ``path`` in one step: a reader (another
    notebook, another process) sees the old file or the whole new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
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
def native_stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 for native (C++) code: TensorFlow and TFLite print start-up notices there
    (CUDA probing, oneDNN, XNNPACK) before any logging setting applies. Python exceptions still propagate."""
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


@functools.lru_cache(maxsize=1)
def import_tensorflow_quietly() -> Any:
    """Import TensorFlow without its C++ start-up chatter in notebooks and commands."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_stderr_silenced():
        import tensorflow as tf

        tf.constant(0)  # device discovery (the CUDA probe) happens at the first op
    return tf


@functools.lru_cache(maxsize=None)
def package_version(name: str) -> str:
    """``name.__version__`` without importing it (importing TensorFlow alone takes seconds): the installed
    distribution's version, or the module's own when no distribution of that name is installed."""
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
