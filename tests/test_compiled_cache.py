"""Numba's cache filled by one process at a time (chordrec.compiled_cache)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from chordrec.compiled_cache import cache_lock, first_call_locked

FIRST_USE = """
import numpy as np
from chordrec.audio.features import beat_frames, chroma_features
from chordrec.decoding import viterbi_decode
y = 0.1 * np.random.default_rng(0).normal(size=3 * 44100).astype(np.float32)
chroma = chroma_features(y)
beat_frames(y, 44100, len(chroma))
viterbi_decode(np.log(np.full((50, 25), 1 / 25)), 0.9)
"""


def test_processes_sharing_an_empty_cache_all_finish(tmp_path):
    # Three processes at once on an empty numba cache: without the lock, librosa's beat
    # tracker segfaulted in 5 of 12 processes started four at a time on this machine.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    processes = [
        subprocess.Popen([sys.executable, "-c", FIRST_USE], env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in processes]
    assert [code for code, _ in results] == [0, 0, 0], results


def test_only_the_first_call_takes_the_lock():
    calls = []

    @first_call_locked
    def compiled(x: int) -> int:
        calls.append(x)
        return 2 * x

    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache_lock():
            holder_ready.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holder_ready.wait(10)
    first = threading.Thread(target=compiled, args=(1,))
    first.start()
    time.sleep(0.2)
    assert calls == []  # the first call waits for the lock
    release.set()
    first.join(10)
    holder.join(10)
    assert calls == [1]
    with cache_lock():  # held here: a later call must not need it
        assert compiled(2) == 4
    assert calls == [1, 2]
