"""Numba's on-disk cache of compiled code, filled by one process at a time.

librosa's compiled functions and chordrec's Viterbi keep their machine code in numba's
cache (``cache=True``). Processes that compile into or load from one cache at the same
moment can crash: librosa's beat tracker died with a segmentation fault in 5 of 12
processes started four at a time on an empty cache (``NUMBA_CACHE_DIR``), and in a test
of four parallel training runs. Parallel work is common here (study jobs, Ray workers,
``chordrec transcribe`` worker processes), so :func:`first_call_locked` makes each
process's first call of a compiled path hold an exclusive lock: the first process fills
the cache, the others load it after. Later calls take no lock.
"""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

LOCK_FILE = Path(tempfile.gettempdir()) / "chordrec-numba-cache.lock"
"""The lock every chordrec process takes around its first compiled calls."""


@contextmanager
def cache_lock() -> Iterator[None]:
    """Hold the exclusive lock on :data:`LOCK_FILE` (released when the process dies)."""
    with open(os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600), "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def first_call_locked(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, whose first call in this process runs under :func:`cache_lock`."""
    done = threading.Event()

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        if done.is_set():
            return function(*args, **kwargs)
        with cache_lock():
            result = function(*args, **kwargs)
        done.set()
        return result

    return call
