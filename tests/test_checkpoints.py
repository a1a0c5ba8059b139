"""The checkpoint file format: atomic writes with the user's permissions, weights-only
reads that name the bad file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from chordrec.io.checkpoints import CheckpointError, load_checkpoint, save_checkpoint


def test_a_checkpoint_gets_the_users_permissions(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = save_checkpoint({"epoch": 1, "w": torch.ones(2)}, tmp_path / "best.pt")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left


def test_a_checkpoint_is_replaced_whole(tmp_path: Path) -> None:
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a checkpoint", "not a loadable weights-only checkpoint"),
        (None, "not a chordrec checkpoint \\(holds a list\\)"),
    ],
)
def test_a_bad_checkpoint_names_its_file(tmp_path: Path, content, match) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save([1, 2], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_a_checkpoint_that_needs_unpickling_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"epoch": 1, "extra": Path("objects need unpickling")}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path)


def test_a_checkpoint_is_on_disk_before_it_replaces_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a power loss, ``last.pt`` is the old checkpoint or the new one, never empty:
    the new one's bytes are flushed (fsync) under a temporary name while ``last.pt`` is
    still the old epoch's, and the directory is flushed once ``last.pt`` is the new one."""
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    real_fsync = os.fsync
    flushed: list[tuple[Path, int, int]] = []  # what, its size then, last.pt's epoch then

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        size = target.stat().st_size if target.is_file() else 0
        flushed.append((target, size, load_checkpoint(path)["epoch"]))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_checkpoint({"epoch": 2, "w": torch.ones(1000)}, path)
    (new, size, epoch), *rest = flushed
    # the new checkpoint, whole, under its temporary name, while last.pt is epoch 1's
    assert new.parent == tmp_path and new.name.startswith(".last.pt.") and epoch == 1
    assert size > 4000
    assert [(p, e) for p, _, e in rest] == [(tmp_path, 2)]  # then the directory
    assert load_checkpoint(path)["epoch"] == 2
