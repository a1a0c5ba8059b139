"""Audio files to the features a model reads: the first link of the one chain from
audio to chords (``chordrec transcribe``, the out-of-domain scoring).

* :func:`audio_features`: mono samples to CENS chroma and, for beat-level models,
  beats (:mod:`chordrec.audio.features`).
* :func:`file_features`: the same for an audio file (:func:`load_audio` first).
* :func:`files_features`: many files, in worker processes (:class:`FeatureWorkers`)
  that overlap decoding and chroma with whatever the caller does with the results
  (the model, decoding, writing), yielded in the files' order.

Worker processes import this module and what it needs (NumPy, librosa, soundfile), not
torch or MLflow, so they start in about a second.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from chordrec.allocator import keep_freed_memory
from chordrec.audio.features import (
    MAX_DURATION_S,
    AudioError,
    beat_frames,
    chroma_features,
    load_audio,
)
from chordrec.constants import SAMPLE_RATE


@dataclass(frozen=True)
class AudioFeatures:
    """One file's features: ``chroma`` (frames, 12) float32, ``beats`` (beats,) int64
    chroma frame indices (empty unless asked for) and the audio's ``duration`` in
    seconds."""

    chroma: np.ndarray
    beats: np.ndarray
    duration: float


def audio_features(y: np.ndarray, sr: int = SAMPLE_RATE, with_beats: bool = False) -> AudioFeatures:
    """Chroma (and beats when ``with_beats``) of mono samples ``y`` (samples,) at 44.1 kHz."""
    chroma = chroma_features(y, sr)
    beats = beat_frames(y, sr, len(chroma)) if with_beats else np.zeros(0, np.int64)
    return AudioFeatures(chroma, beats, len(y) / sr)


def file_features(
    path: str | Path, with_beats: bool = False, max_duration: float = MAX_DURATION_S
) -> AudioFeatures:
    """:func:`audio_features` of an audio file (see :func:`load_audio`: raises
    AudioError naming the file)."""
    return audio_features(load_audio(path, max_duration=max_duration), with_beats=with_beats)


FileResult = AudioFeatures | AudioError | OSError | ValueError
"""What :func:`files_features` yields per file: its features or the error that stopped them."""


class FeatureWorkers:
    """Worker processes for :func:`files_features`, started (``spawn``) as soon as made:
    each imports what the features need and computes the chroma of a second of audio,
    so that a caller that makes them first (``chordrec transcribe``, before importing
    torch and loading its model) finds them ready. Each worker computes with one BLAS
    thread: the processes are the parallelism, and two-thread BLAS in each of two
    workers on two cores made the folder of 50 songs take 53 s instead of 30 s.

    Close it (or use it as a context manager) to stop the processes.
    """

    def __init__(self, workers: int):
        if workers < 2:
            raise ValueError(f"worker processes are for 2 or more at a time, got {workers}")
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
        )
        for _ in range(workers):
            self._pool.submit(_warm_up)

    def features(
        self, paths: Sequence[Path], with_beats: bool, max_duration: float
    ) -> Iterator[FileResult]:
        """:func:`file_features` of every file, in order, at most two files ahead per
        worker, so memory stays bounded (one file's audio per worker) while the caller
        works on earlier results."""
        ahead = iter(paths)
        queue: deque[Future] = deque(
            self._pool.submit(_guarded, path, with_beats, max_duration)
            for path in islice(ahead, 2 * self.workers)
        )
        try:
            while queue:
                result = queue.popleft().result()
                for path in islice(ahead, 1):  # one more in for the one out
                    queue.append(self._pool.submit(_guarded, path, with_beats, max_duration))
                yield result
        finally:
            for future in queue:
                future.cancel()

    def close(self) -> None:
        """Stop the processes (files not yet started are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FeatureWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def files_features(
    paths: Sequence[Path],
    with_beats: bool = False,
    max_duration: float = MAX_DURATION_S,
    workers: int | FeatureWorkers = 1,
) -> Iterator[FileResult]:
    """:func:`file_features` of every file, in order; a file's AudioError, OSError or
    ValueError is yielded in its place (the others still go on).

    ``workers``: a number > 1 (and more than one file) runs :class:`FeatureWorkers` of
    that many processes for these files; started :class:`FeatureWorkers` are used (and
    left running); 1 computes in this process.
    """
    if isinstance(workers, FeatureWorkers):
        yield from workers.features(paths, with_beats, max_duration)
        return
    if workers <= 1 or len(paths) <= 1:
        for path in paths:
            yield _guarded(path, with_beats, max_duration)
        return
    with FeatureWorkers(min(workers, len(paths))) as pool:
        yield from pool.features(paths, with_beats, max_duration)


_blas_limits: list[ThreadpoolController] = []


def _start_worker() -> None:
    """A worker's first step: one thread for NumPy's and SciPy's BLAS, and freed memory
    kept for reuse (:func:`~chordrec.allocator.keep_freed_memory`)."""
    _blas_limits.append(ThreadpoolController().limit(limits=1, user_api="blas"))
    keep_freed_memory()


def _warm_up() -> None:
    """Import and compile what :func:`audio_features` runs, on a second of a quiet tone."""
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    audio_features(0.1 * np.sin(2 * np.pi * 440 * t, dtype=np.float32))


def _guarded(path: Path, with_beats: bool, max_duration: float) -> FileResult:
    """:func:`file_features`, or the error that stopped it (returned, so that a worker
    hands it back like a result)."""
    try:
        return file_features(path, with_beats, max_duration)
    except (AudioError, OSError, ValueError) as exc:
        return exc
