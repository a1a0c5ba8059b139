"""How this process's C allocator hands back freed memory: :func:`keep_freed_memory`,
:func:`release_freed_memory` and both around a block (:func:`freed_memory_kept`).

A training run (a CRNN's evaluation batch of convolution outputs), a transcription
worker (a song's arrays) and the transcribing process (a song's chunks through the
network) allocate and free large blocks over and over. glibc's malloc serves blocks over
its threshold (at most 32 MB) with fresh pages from the kernel and returns them on free,
so the kernel zeroes every page again each time. Kept in the heap, a freed block is
reused as it is. A training run hands the kept memory back when it ends. The sizes and
the time this saves are in ``docs/performance.md``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (malloc.h)."""
KEEP_BYTES = 1 << 30
"""Blocks up to this size come from the heap, and this much free heap is kept."""


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve blocks up to :data:`KEEP_BYTES` from the heap and keep
    up to twice that free in it, instead of mapping fresh pages for each large block and
    unmapping them on free. Returns False (and changes nothing) where the C library is
    not glibc. The process keeps its peak heap; the values computed do not change."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)
            and libc.mallopt(_M_TRIM_THRESHOLD, 2 * KEEP_BYTES)
        )
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> bool:
    """Hand the free memory of glibc's heap back to the kernel now (``malloc_trim``).
    Returns False (and changes nothing) where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Keep freed memory for reuse inside the block (:func:`keep_freed_memory`) and hand
    it back when the block ends (:func:`release_freed_memory`): a process that runs one
    job after another (a sweep's joblib worker) does not carry one job's peak heap into
    the next, where joblib would take it for a leak and restart the worker."""
    keep_freed_memory()
    try:
        yield
    finally:
        release_freed_memory()
