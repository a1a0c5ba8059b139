"""Exclusive file locks, the one place chordrec takes them, and each user's own directory
for the locks of that user's processes.

Every lock is an exclusive ``flock`` on a lock file opened here (created when missing,
never through a symbolic link), released when its holder lets go or its process dies:

* :func:`exclusive_lock` holds one for a block and waits for it in the ``flock`` call
  (optionally saying first that it waits): the data set's fetch and the out-of-domain
  set's build (``.<dest>.lock`` beside the directory they fill, shared by whoever fills
  it), the SQLite store's tables (``.mlflow-db.lock`` beside the database);
* :func:`user_lock` is one in :func:`user_lock_dir`, a directory only that user can
  write, for a lock that only one user's processes share (numba's cache is per user):
  another user on the same machine has locks of their own, and can neither create,
  replace nor hold this user's;
* :func:`try_lock` takes one without waiting and keeps it until its descriptor is
  closed (the server's PostgreSQL directory, held as long as the server runs).

``filelock`` (installed with torch) is not used: it polls with non-blocking attempts,
where a waiter here sleeps in ``flock`` and the kernel wakes it when the lock is free.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from chordrec.errors import UserError


def user_lock_dir() -> Path:
    """``<temp dir>/chordrec-<uid>`` (the temp dir is ``$TMPDIR`` or ``/tmp``), made by
    :func:`private_directory`: someone else could otherwise take or replace this user's
    locks."""
    return private_directory(
        Path(tempfile.gettempdir()) / f"chordrec-{os.getuid()}",
        "the lock directory",
        "set TMPDIR to a directory of your own",
    )


def private_directory(path: Path, what: str, remedy: str) -> Path:
    """``path``, created with mode 0700 (its missing parents too) when missing. Raises
    :class:`UserError` naming it (as ``what``) and ``remedy`` when it exists but is not a directory of
    this user that no one else can write (a link, another user's)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
            f"{path}: {what} of uid {os.getuid()} is not a directory that only "
            f"this user can write (owner uid {info.st_uid}, mode "
            f"{stat.filemode(info.st_mode)}); remove it, or {remedy}"
        )
    return path


def _open_lock_file(path: Path, mode: int) -> int:
    """A descriptor of the lock file ``path``, created with ``mode`` (less the umask)
    when missing; never through a symbolic link (:class:`OSError` on one)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


@contextmanager
def exclusive_lock(
    path: str | os.PathLike[str],
    *,
    mode: int = 0o600,
    on_wait: Callable[[], object] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block (the file created with
    ``mode``, less the umask, when missing; never through a symbolic link); the lock is
    released when the block ends or the process dies. While another process holds it,
    ``on_wait`` (when given) is called once, before this one waits (to say so in the
    log)."""
    descriptor = _open_lock_file(Path(path), mode)
    with open(descriptor, "rb") as handle:
        if on_wait is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def try_lock(path: str | os.PathLike[str], *, mode: int = 0o600) -> int | None:
    """Take the exclusive ``flock`` on ``path`` (opened as :func:`exclusive_lock` does)
    without waiting: the open descriptor that holds it, readable and writable (closing
    it releases the lock), or None when another process holds it."""
    descriptor = _open_lock_file(Path(path), mode)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def user_lock(name: str) -> AbstractContextManager[None]:
    """:func:`exclusive_lock` on ``<name>.lock`` in :func:`user_lock_dir`: shared by this
    user's processes only."""
    return exclusive_lock(user_lock_dir() / f"{name}.lock")
