"""The one file-lock helper (chordrec.file_locks): waiting, not waiting, and links."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chordrec.file_locks import exclusive_lock, try_lock

HOLD = """
import sys
from chordrec.file_locks import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def _held_elsewhere(path: Path) -> subprocess.Popen[str]:
    """A process that holds the lock on ``path`` until its stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_on_wait_is_called_once_only_while_another_process_holds_the_lock(tmp_path: Path):
    lock = tmp_path / ".set.lock"
    waits: list[int] = []
    with exclusive_lock(lock, on_wait=lambda: waits.append(1)):
        pass
    assert waits == []  # free: taken at once, nothing said

    holder = _held_elsewhere(lock)
    taken = threading.Event()

    def take() -> None:
        with exclusive_lock(lock, on_wait=lambda: waits.append(1)):
            taken.set()

    worker = threading.Thread(target=take)
    worker.start()
    try:
        assert not taken.wait(1.0), "took a lock another process holds"
        assert waits == [1]
    finally:
        holder.communicate("", timeout=60)
    worker.join(60)
    assert taken.is_set() and waits == [1]


def test_try_lock_returns_none_while_held_and_a_descriptor_that_holds_it(tmp_path: Path):
    lock = tmp_path / "server.lock"
    holder = _held_elsewhere(lock)
    try:
        assert try_lock(lock) is None
    finally:
        holder.communicate("", timeout=60)
    descriptor = try_lock(lock)
    assert descriptor is not None
    try:
        os.write(descriptor, b"123\n")  # readable and writable: the holder notes its id
        assert lock.read_text() == "123\n"
        assert (
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from chordrec.file_locks import try_lock; "
                    "sys.exit(try_lock(sys.argv[1]) is not None)",
                    str(lock),
                ],
                check=False,
            ).returncode
            == 0
        ), "another process took a lock this one holds"
    finally:
        os.close(descriptor)


@pytest.mark.parametrize("take", [exclusive_lock, try_lock], ids=["exclusive_lock", "try_lock"])
def test_a_lock_file_is_never_opened_through_a_link(tmp_path: Path, take):
    target = tmp_path / "someone-elses-file"
    target.write_text("kept")
    link = tmp_path / ".set.lock"
    link.symlink_to(target)
    with pytest.raises(OSError):
        if take is exclusive_lock:
            with take(link):
                pass
        else:
            take(link)
    assert target.read_text() == "kept"


def test_mode_is_the_files_mode_less_the_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        with exclusive_lock(tmp_path / "shared.lock", mode=0o666):
            pass
        with exclusive_lock(tmp_path / "own.lock"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "shared.lock").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "own.lock").stat().st_mode & 0o777 == 0o600
