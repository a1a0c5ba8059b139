"""Directories that a chordrec server keeps its state in (a PostgreSQL cluster, the
users of its authentication): chordrec uses only one it made, recognised by a marker
file, or an empty one of the user's, and never changes the mode or owner of a
directory it did not create."""

from __future__ import annotations

import os
from pathlib import Path

from chordrec.io.atomic_write import ForeignDirectoryError, is_empty_directory


def claim_state_dir(directory: Path, marker: str, flag: str, mode: int = 0o700) -> bool:
    """Make sure ``directory`` may hold chordrec's state and mark it as chordrec's with
    the file ``marker``; returns whether this call created the directory.

    A missing directory is created with ``mode`` (its missing parents as any new
    directory of the user). An existing one is used as it is when it holds ``marker``
    (chordrec made it), or when it is empty and not writable by every user; it then
    gets ``marker`` and keeps its mode and owner. Anything else (a file, a link, a
    folder with other files, a shared folder such as /var/tmp) raises
    :class:`ForeignDirectoryError` naming it and ``flag``."""
    created = False
    if not directory.exists() and not directory.is_symlink():
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=mode)
            directory.chmod(mode)  # the umask does not narrow chordrec's own directory
            created = True
        except FileExistsError:
            pass  # made by another process meanwhile: judged below like any other
    if not created:
        reason = _foreign(directory, marker)
        if reason is not None:
            raise ForeignDirectoryError(
                f"{flag} {directory}: not used: {reason}; chordrec keeps its state only in "
                "a directory it made or an empty one of yours, and never changes another "
                f"directory's mode or owner: give a new directory, e.g. {directory / 'chordrec'}"
            )
    fd = os.open(directory / marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    return created


def _foreign(directory: Path, marker: str) -> str | None:
    """Why ``directory`` may not hold chordrec's state (None: it may)."""
    if directory.is_symlink():
        return "it is a symbolic link"
    if not directory.is_dir():
        return "it is not a directory"
    if (directory / marker).is_file() and not (directory / marker).is_symlink():
        return None
    if not is_empty_directory(directory):
        return f"it holds files that chordrec did not make (no {marker})"
    if directory.stat().st_mode & 0o002:
        return f"every user may write to it (mode {oct(directory.stat().st_mode & 0o7777)})"
    return None
