"""chordrec.io.atomic_write on real files: flushed to disk before and after they get their
names, several files all or none, and directories replaced only when chordrec's own."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from chordrec.errors import UserError
from chordrec.io.atomic_write import (
    ForeignDirectoryError,
    install_directory,
    write_all_atomic,
    write_atomic,
)
from tests.test_synthetic import tree_snapshot

Flush = tuple[Path, bool, bytes | None]
"""One fsync seen: the path of the flushed file or directory, whether the target
existed then, and the target's bytes then (None: absent or a directory)."""


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], list[Flush]]:
    """Record every ``os.fsync`` (which still flushes): what was flushed, read back from
    /proc/self/fd, and the state of a target path at that moment."""
    real_fsync = os.fsync
    seen: list[Flush] = []
    watched: list[Path] = []

    def fsync(fd: int) -> None:
        target = watched[0]
        flushed = Path(os.readlink(f"/proc/self/fd/{fd}"))
        content = target.read_bytes() if target.is_file() else None
        seen.append((flushed, target.exists(), content))
        real_fsync(fd)

    def watch(target: Path) -> list[Flush]:
        watched.append(target)
        monkeypatch.setattr(os, "fsync", fsync)
        return seen

    return watch


def _temporary_of(path: Path, flushed: Path) -> bool:
    return flushed.parent == path.parent and flushed.name.startswith(f".{path.name}.")


@pytest.mark.parametrize("force", [False, True])
def test_a_file_is_flushed_before_it_gets_its_name_and_its_directory_after(
    tmp_path: Path, flushes: Callable[[Path], list[Flush]], force: bool
) -> None:
    path = tmp_path / "out" / "song.lab"
    if force:
        path.parent.mkdir()
        path.write_bytes(b"old\n")
    seen = flushes(path)
    write_atomic(path, lambda tmp: tmp.write_bytes(b"new\n"), force)
    assert path.read_bytes() == b"new\n"
    (file_flush,) = [i for i, (p, _, _) in enumerate(seen) if _temporary_of(path, p)]
    (dir_flush,) = [i for i, (p, _, _) in enumerate(seen) if p == path.parent]
    assert file_flush < dir_flush
    # the content went to disk while the name still held the old file (or none)
    assert seen[file_flush][2] == (b"old\n" if force else None)
    assert seen[dir_flush][1:] == (True, b"new\n")  # the new name, then the directory


def test_several_files_all_or_none(tmp_path: Path) -> None:
    """A failing second file leaves no first one; one that exists leaves no first one
    either, and is itself untouched."""
    lab, png = tmp_path / "song.lab", tmp_path / "plots" / "song.png"

    def fail(tmp: Path) -> None:
        raise ValueError("no figure")

    with pytest.raises(ValueError, match="no figure"):
        write_all_atomic([(lab, lambda tmp: tmp.write_text("lab\n")), (png, fail)])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plots"]

    png.write_bytes(b"the user's plot")
    with pytest.raises(FileExistsError, match=rf"^{png} exists \(--force replaces it\)$"):
        write_all_atomic(
            [(lab, lambda tmp: tmp.write_text("lab\n")), (png, lambda tmp: tmp.write_bytes(b"x"))]
        )
    assert not lab.exists() and png.read_bytes() == b"the user's plot"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plots", "song.png"]


def _finished(tmp_path: Path) -> Path:
    """A finished directory to install, with a marker file saying it is chordrec's."""
    tmp = tmp_path / ".dest.partial"
    (tmp / "part").mkdir(parents=True)
    (tmp / "MARK").write_text("ours\n")
    (tmp / "part" / "song.lab").write_text("0.0\t1.0\tN\n")
    return tmp


def _ours(path: Path) -> bool:
    return (path / "MARK").is_file()


def test_a_finished_directory_is_flushed_before_it_gets_its_name(
    tmp_path: Path, flushes: Callable[[Path], list[Flush]]
) -> None:
    tmp, dest = _finished(tmp_path), tmp_path / "dest"
    seen = flushes(dest / "MARK")
    install_directory(tmp, dest, _ours, "a marked folder")
    flushed = {p: exists for p, exists, _ in seen}
    every = {tmp, tmp / "part", tmp / "MARK", tmp / "part" / "song.lab"}
    assert {p: flushed.get(p) for p in every} == dict.fromkeys(every, False)
    assert flushed[tmp_path] is True  # the parent, once dest had its name


@pytest.mark.parametrize("state", ["missing", "empty", "ours"])
def test_a_missing_empty_or_own_directory_is_replaced(tmp_path: Path, state: str) -> None:
    dest = tmp_path / "dest"
    if state != "missing":
        dest.mkdir()
    if state == "ours":
        (dest / "MARK").write_text("ours, older\n")
        (dest / "stale.lab").write_text("stale\n")
    install_directory(_finished(tmp_path), dest, _ours, "a marked folder")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "MARK",
        "part",
        "part/song.lab",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


def test_a_foreign_directory_is_refused_and_kept_byte_for_byte(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "album").mkdir(parents=True)
    (dest / "album" / "track01.flac").write_bytes(os.urandom(2048))
    before = tree_snapshot(dest)
    tmp = _finished(tmp_path)
    with pytest.raises(ForeignDirectoryError) as refused:
        install_directory(tmp, dest, _ours, "a marked folder")
    assert str(refused.value) == (
        f"{dest}: not replaced: it holds other files; chordrec replaces only a marked folder "
        "or an empty folder, even with --force: choose another --dest, or empty that folder "
        "yourself"
    )
    assert isinstance(refused.value, UserError)
    assert tree_snapshot(dest) == before and tmp.is_dir()


def test_a_directory_that_stops_being_ours_meanwhile_is_put_back(tmp_path: Path) -> None:
    """Checked again once moved aside: a folder that no longer looks like chordrec's
    there (the second look) is put back under its name, untouched."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "MARK").write_text("ours\n")
    (dest / "thesis.tex").write_text("added by the user\n")
    looks: list[Path] = []

    def ours_at_first(path: Path) -> bool:
        looks.append(path)
        return len(looks) == 1

    before = tree_snapshot(dest)
    with pytest.raises(ForeignDirectoryError, match=rf"^{dest}: not replaced"):
        install_directory(_finished(tmp_path), dest, ours_at_first, "a marked folder")
    assert looks[0] == dest and looks[1].name.startswith(".dest.old-")
    assert tree_snapshot(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dest.partial", "dest"]
