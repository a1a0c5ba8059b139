"""Exclusive file locks, and each user's own directory for the locks of that user's
processes.

A lock that only one user's processes share (numba's cache is per user) lives in
:func:`user_lock_dir`, a directory only that user can write: another user on the same
machine has locks of their own, and can neither create, replace nor hold this user's.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from chordrec.errors import UserError


def user_lock_dir() -> Path:
    """``<temp dir>/chordrec-<uid>`` (the temp dir is ``$TMPDIR`` or ``/tmp``), created
    with mode 0700 when missing. Raises :class:`UserError` naming it when it exists but
    is not a directory of this user that no one else can write (a link, another user's):
    someone else could then take or replace this user's locks."""
    path = Path(tempfile.gettempdir()) / f"chordrec-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise UserError(
            f"{path}: the lock directory of uid {os.getuid()} is not a directory that only "
            f"this user can write (owner uid {info.st_uid}, mode "
            f"{stat.filemode(info.st_mode)}); remove it, or set TMPDIR to a directory of your own"
        )
    return path


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600 when missing, never through a
    symbolic link) for the block; the lock is released when the block ends or the
    process dies."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(descriptor, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def user_lock(name: str) -> AbstractContextManager[None]:
    """:func:`exclusive_lock` on ``<name>.lock`` in :func:`user_lock_dir`: shared by this
    user's processes only."""
    return exclusive_lock(user_lock_dir() / f"{name}.lock")
