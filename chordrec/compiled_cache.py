"""Numba's on-disk cache of compiled code, filled by one process at a time.

librosa's compiled functions and chordrec's Viterbi keep their machine code in numba's
cache (``cache=True``). Processes that compile into or load from one cache at the same
moment can crash (librosa's beat tracker with a segmentation fault). Parallel work is
common here (study jobs, Ray workers, ``chordrec transcribe`` worker processes), so
:func:`first_call_locked` makes each process's first call of a compiled path hold an
exclusive lock: the first process fills the cache, the others load it after. Later
calls take no lock.

Numba's cache belongs to one user (``__pycache__`` beside the code, or the user's own
cache directory), so the lock does too: it lives in the user's lock directory
(:func:`chordrec.file_locks.user_lock_dir`), and each user on a shared machine has their
own.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ParamSpec, TypeVar

from chordrec.file_locks import user_lock

P = ParamSpec("P")
R = TypeVar("R")

LOCK_NAME = "numba-cache"
"""The lock every chordrec process of one user takes around its first compiled calls."""


def cache_lock() -> AbstractContextManager[None]:
    """Hold this user's exclusive lock :data:`LOCK_NAME` (released when the process dies)."""
    return user_lock(LOCK_NAME)


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
