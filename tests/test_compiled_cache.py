"""Numba's cache filled by one process at a time (chordrec.compiled_cache)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import chordrec
from chordrec.compiled_cache import cache_lock, first_call_locked
from chordrec.errors import UserError
from chordrec.file_locks import user_lock_dir

FIRST_USE = """
import numpy as np
from chordrec.audio.features import beat_frames, chroma_features
from chordrec.decoding import viterbi_decode
y = 0.1 * np.random.default_rng(0).normal(size=3 * 44100).astype(np.float32)
chroma = chroma_features(y)
beat_frames(y, 44100, len(chroma))
viterbi_decode(np.log(np.full((50, 25), 1 / 25)), 0.9)
"""


PROCESSES_AT_ONCE = 4
ROUNDS = 2


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_processes_sharing_an_empty_cache_all_finish(tmp_path):
    """Four processes at once on an empty numba cache, twice, each time a new cache:
    without the lock, librosa's beat tracker segfaulted in 5 of 12 processes started four
    at a time on this machine (so all 8 would pass about once in 70 tries)."""
    for round_ in range(ROUNDS):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / f"numba-{round_}")}
        processes = [
            subprocess.Popen([sys.executable, "-c", FIRST_USE], env=env, stderr=subprocess.PIPE)
            for _ in range(PROCESSES_AT_ONCE)
        ]
        results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in processes]
        assert [code for code, _ in results] == [0] * PROCESSES_AT_ONCE, (round_, results)


FLOCK_SYSCALL = {"x86_64": 73, "aarch64": 32}.get(os.uname().machine)
"""The number of Linux's flock system call on this machine's architecture."""


def _blocked_in_flock(thread_id: int) -> bool:
    """Whether thread ``thread_id`` of this process waits in the flock system call."""
    syscall = Path(f"/proc/self/task/{thread_id}/syscall").read_text().split()
    return syscall[0] == str(FLOCK_SYSCALL)


@pytest.mark.skipif(FLOCK_SYSCALL is None, reason="flock's system call number is not known here")
def test_only_the_first_call_takes_the_lock():
    """While another holds the lock, the first call waits in flock before it runs; the
    next call runs while the lock is held elsewhere."""
    calls = []

    @first_call_locked
    def compiled(x: int) -> int:
        calls.append(x)
        return 2 * x

    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache_lock():
            holder_ready.set()
            release.wait(60)

    first_id: list[int] = []

    def first_call() -> None:
        first_id.append(threading.get_native_id())
        compiled(1)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holder_ready.wait(60)
    first = threading.Thread(target=first_call)
    first.start()
    deadline = time.monotonic() + 60
    while not (first_id and _blocked_in_flock(first_id[0])):
        assert first.is_alive() and time.monotonic() < deadline, calls
        time.sleep(0.01)
    assert calls == []  # the first call waits for the lock
    release.set()
    first.join(60)
    holder.join(60)
    assert calls == [1]
    with cache_lock():  # held here: a later call must not need it
        assert compiled(2) == 4
    assert calls == [1, 2]


# ------------------------------------------------------------------ one lock per user

SECOND_USER = "nobody"
TAKE_LOCK = """
import sys
from chordrec.compiled_cache import cache_lock
with cache_lock():
    print("locked", flush=True)
    sys.stdin.readline()  # held until the test writes a line
"""


def _second_user_python(repo: Path) -> str | None:
    """A Python that SECOND_USER can run chordrec's lock with: this venv's, or the
    system's python3 where the venv lives in a folder only its owner can enter (such as
    /root); the lock needs only the standard library."""
    probe = "import chordrec.compiled_cache"
    for python in (sys.executable, shutil.which("python3", path=os.defpath)):
        if python is not None and _as_second_user(python, repo, {}, probe).returncode == 0:
            return python
    return None


def _as_second_user(
    python: str, repo: Path, env: dict[str, str], code: str
) -> subprocess.CompletedProcess:
    settings = [f"{k}={v}" for k, v in {"PYTHONPATH": str(repo), **env}.items()]
    command = ["runuser", "-u", SECOND_USER, "--", "env", "-i", *settings, python, "-c", code]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir every user can write, like /tmp (mode 1777)."""
    path = Path(tempfile.mkdtemp(prefix="chordrec-shared-tmp-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root")
def test_two_users_take_their_own_cache_locks_at_once(shared_tmp: Path) -> None:
    repo = Path(chordrec.__file__).resolve().parents[1]
    python = _second_user_python(repo)
    if python is None:
        pytest.skip(f"{SECOND_USER} can run no Python that imports {repo}")
    # root's process holds its lock; the second user's process takes its own meanwhile
    holder = subprocess.Popen(
        [sys.executable, "-c", TAKE_LOCK],
        env={**os.environ, "TMPDIR": str(shared_tmp), "PYTHONPATH": str(repo)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        second = _as_second_user(python, repo, {"TMPDIR": str(shared_tmp)}, TAKE_LOCK)
        assert (second.returncode, second.stdout) == (0, "locked\n"), second.stderr
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    uid = pwd.getpwnam(SECOND_USER).pw_uid
    for owner in (os.getuid(), uid):
        folder = shared_tmp / f"chordrec-{owner}"
        lock = folder / "numba-cache.lock"
        assert (folder.stat().st_uid, stat.S_IMODE(folder.stat().st_mode)) == (owner, 0o700)
        assert (lock.stat().st_uid, stat.S_IMODE(lock.stat().st_mode)) == (owner, 0o600)

    # a lock directory made by someone else for the second user: refused, not used
    shutil.rmtree(shared_tmp / f"chordrec-{uid}")
    (shared_tmp / f"chordrec-{uid}").mkdir(mode=0o777)
    planted = _as_second_user(python, repo, {"TMPDIR": str(shared_tmp)}, TAKE_LOCK)
    assert planted.returncode != 0
    assert f"{shared_tmp}/chordrec-{uid}: the lock directory of uid {uid}" in planted.stderr
    assert "owner uid 0" in planted.stderr


def test_a_lock_directory_others_can_write_or_a_link_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    own = tmp_path / f"chordrec-{os.getuid()}"
    own.mkdir(mode=0o700)
    own.chmod(0o777)
    with pytest.raises(UserError, match=f"{own}: the lock directory .* mode drwxrwxrwx"):
        user_lock_dir()
    own.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    own.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=f"{own}: the lock directory .* mode lrwxrwxrwx"):
        user_lock_dir()
    own.unlink()
    with cache_lock():
        assert (own / "numba-cache.lock").exists()
