"""Files written whole or not at all: a temporary file beside the target, then a rename
or link into place. Every writer of a user-facing file goes through here."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], None], force: bool = False) -> None:
    """Create ``path`` through ``write(tmp)`` on a temporary file beside it, then link it
    into place (FileExistsError if ``path`` exists) or, with ``force``, rename over it.

    The file gets the permissions of any new file the user creates (mode 0o666 less
    the umask, and the directory's default ACL where it has one), not the private
    0o600 of :func:`tempfile.mkstemp`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
    try:
        write(tmp)
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists (--force replaces it)") from None
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that exists: a hard link fails atomically if
    it does; file systems without hard links get a check, then a rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)


def default_dir_mode() -> int:
    """The mode a new directory of the user gets: 0o777 less the umask (a directory
    from :func:`tempfile.mkdtemp` is 0o700 until given this)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


def install_directory(tmp: Path, dest: Path) -> None:
    """Rename the finished directory ``tmp`` to ``dest`` (on the same file system); an
    existing ``dest`` is moved aside, then deleted, and put back if the rename fails."""
    if not (dest.exists() or dest.is_symlink()):
        os.rename(tmp, dest)
        return
    old = dest.parent / f".{dest.name}.old-{secrets.token_hex(4)}"
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
