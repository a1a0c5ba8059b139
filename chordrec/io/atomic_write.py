"""Files written whole or not at all, and still whole after a power loss: a temporary
file beside the target, flushed to disk, then a rename or link into place and the
directory flushed. Every writer of a user-facing file goes through here, and so does
every directory chordrec replaces: only one it recognises as its own, or an empty one."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from chordrec.errors import UserError


class ForeignDirectoryError(UserError, FileExistsError):
    """A directory chordrec was asked to replace holds something it did not make; the
    message names it."""


def write_atomic(path: Path, write: Callable[[Path], None], force: bool = False) -> None:
    """Create ``path`` through ``write(tmp)`` on a temporary file beside it, then link it
    into place (FileExistsError if ``path`` exists) or, with ``force``, rename over it.

    The file's content is flushed to disk before it gets its name, and its directory
    after, so that a power loss leaves the old file or the new one, never an empty one.
    The file gets the permissions of any new file the user creates (mode 0o666 less
    the umask, and the directory's default ACL where it has one), not the private
    0o600 of :func:`tempfile.mkstemp`."""
    write_all_atomic([(path, write)], force)


def write_all_atomic(
    files: Sequence[tuple[Path, Callable[[Path], None]]], force: bool = False
) -> None:
    """Create every ``path`` of ``files`` through its ``write(tmp)``, all or none, as
    :func:`write_atomic` creates one: every temporary file is written and flushed
    first, so a failing ``write`` leaves no file behind; then each is put in place in
    order. Should one not go in (FileExistsError naming it when it exists and ``force``
    is not set), the files this call created before it are removed again; a file that
    ``force`` already replaced keeps its new content."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
            staged.append((path, tmp))
            write(tmp)
            _flush(tmp)
        _put_in_place(staged, force)
    finally:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)


def _put_in_place(staged: Sequence[tuple[Path, Path]], force: bool) -> None:
    """Give each ``tmp`` its ``path``, flushing the directory after each; undo the new
    names given so far if one fails."""
    created: list[Path] = []
    try:
        for path, tmp in staged:
            existed = os.path.lexists(path)
            if force:
                os.replace(tmp, path)
            else:
                _link_new(tmp, path)
            if not existed:
                created.append(path)
            _flush(path.parent)
    except BaseException as exc:
        for new in reversed(created):
            new.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise FileExistsError(f"{path} exists (--force replaces it)") from None
        raise


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


def _flush(path: Path) -> None:
    """Flush a file's content, or a directory's entries, to disk (``fsync``). A file
    system that cannot flush a directory (EINVAL) is let be."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _flush_tree(root: Path) -> None:
    """Flush every file and directory under ``root``, and ``root`` itself."""
    for folder, _, names in os.walk(root):
        for name in names:
            _flush(Path(folder, name))
        _flush(Path(folder))


def default_dir_mode() -> int:
    """The mode a new directory of the user gets: 0o777 less the umask (a directory
    from :func:`tempfile.mkdtemp` is 0o700 until given this)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


def is_empty_directory(path: Path) -> bool:
    """Whether ``path`` is a directory (not a link to one) without any entry."""
    if path.is_symlink() or not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


def check_replaceable(dest: Path, owned: Callable[[Path], bool], what: str) -> None:
    """Raise :class:`ForeignDirectoryError` unless ``dest`` is missing, an empty
    directory, or a directory that ``owned(dest)`` recognises as chordrec's: the only
    directories chordrec replaces. ``what`` names those in the message, e.g. "the
    RWC-Pop data set it fetched (recognised by its SHA256SUMS)"."""
    _refuse(dest, _foreign(dest, owned), what)


def _refuse(dest: Path, reason: str | None, what: str) -> None:
    """Raise :class:`ForeignDirectoryError` naming ``dest`` when there is a ``reason``."""
    if reason is not None:
        raise ForeignDirectoryError(
            f"{dest}: not replaced: {reason}; chordrec replaces only {what} or an empty "
            "folder, even with --force: choose another --dest, or empty that folder yourself"
        )


def _foreign(dest: Path, owned: Callable[[Path], bool]) -> str | None:
    """Why ``dest`` may not be replaced (None: it may)."""
    if dest.is_symlink():
        return "it is a symbolic link"
    if not dest.exists():
        return None
    if not dest.is_dir():
        return "it is a file"
    if is_empty_directory(dest) or owned(dest):
        return None
    return "it holds other files"


def install_directory(tmp: Path, dest: Path, owned: Callable[[Path], bool], what: str) -> None:
    """Rename the finished directory ``tmp`` to ``dest`` (on the same file system), its
    files and folders flushed to disk before and ``dest``'s parent after.

    An existing ``dest`` is replaced only when :func:`check_replaceable` allows it: an
    empty directory is renamed over; one that ``owned`` recognises is moved aside,
    checked again there (so a folder that changed meanwhile is put back untouched),
    replaced, and then deleted; it is put back if the rename fails. Anything else
    raises :class:`ForeignDirectoryError` and stays as it was."""
    _flush_tree(tmp)
    check_replaceable(dest, owned, what)
    if not dest.exists() or is_empty_directory(dest):
        os.rename(tmp, dest)  # fails (ENOTEMPTY) if files appeared in dest meanwhile
        _flush(dest.parent)
        return
    old = dest.parent / f".{dest.name}.old-{secrets.token_hex(4)}"
    os.rename(dest, old)
    try:
        _refuse(dest, _foreign(old, owned), what)
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    _flush(dest.parent)
    shutil.rmtree(old, ignore_errors=True)
