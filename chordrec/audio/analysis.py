"""Audio files to the features a model reads: the first link of the one chain from
audio to chords (``chordrec transcribe``, the out-of-domain scoring).

* :func:`audio_features`: mono samples to CENS chroma and, for beat-level models,
  beats (:mod:`chordrec.audio.features`).
* :func:`file_features`: the same for an audio file (:func:`load_audio` first).
* :func:`files_features`: many files, in worker processes (:class:`FeatureWorkers`)
  that overlap decoding and chroma with whatever the caller does with the results
  (the model, decoding, writing), yielded in the files' order. One file's failure,
  running out of memory or a worker process that dies on it included, is that file's
  result; the others still go on.

Worker processes import this module and what it needs (NumPy, librosa, soundfile), not
torch or MLflow, so they start in about a second.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from chordrec.allocator import keep_freed_memory
from chordrec.audio.features import (
    DEFAULT_LIMITS,
    AudioError,
    AudioLimits,
    beat_frames,
    chroma_features,
    load_audio,
)
from chordrec.constants import SAMPLE_RATE

log = logging.getLogger(__name__)


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
    path: str | Path, with_beats: bool = False, limits: AudioLimits = DEFAULT_LIMITS
) -> AudioFeatures:
    """:func:`audio_features` of an audio file (see :func:`load_audio`: raises
    AudioError naming the file)."""
    return audio_features(load_audio(path, limits=limits), with_beats=with_beats)


FileResult = AudioFeatures | AudioError | OSError | ValueError
"""What :func:`files_features` yields per file: its features or the error that stopped them."""

WORKER_DEATHS_TO_FAIL = 2
"""A file is reported failed when this many worker processes died while it was in
flight, the last of them computing it alone."""


@dataclass
class _Pending:
    """A file of :meth:`FeatureWorkers.features` not yet yielded: its computation once
    submitted, and how many worker processes died while it was in flight."""

    path: Path
    future: Future | None = None
    deaths: int = 0


class FeatureWorkers:
    """Worker processes for :func:`files_features`, started (``spawn``) as soon as made:
    each imports what the features need and computes the chroma of a second of audio,
    so that a caller that makes them first (``chordrec transcribe``, before importing
    torch and loading its model) finds them ready. Each worker computes with one BLAS
    thread: the processes are the parallelism, and two-thread BLAS in each of two
    workers on two cores made the folder of 50 songs take 53 s instead of 30 s.

    A worker that dies (killed by the out-of-memory killer or a signal, crashed in a
    decoder) takes every file in flight with it: the processes are started again and
    those files computed again, one at a time, so that a second death is the file's own
    (reported as its failure) and the others still finish.

    Close it (or use it as a context manager) to stop the processes.
    """

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"worker processes are for 1 or more at a time, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = self._start_pool()
        for _ in range(workers):
            self._pool.submit(_warm_up)

    def _start_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
        )

    def features(
        self, paths: Sequence[Path], with_beats: bool, limits: AudioLimits
    ) -> Iterator[FileResult]:
        """:func:`file_features` of every file, in order, at most two files ahead per
        worker, so memory stays bounded (one file's audio per worker) while the caller
        works on earlier results. A file whose computation saw
        :data:`WORKER_DEATHS_TO_FAIL` worker processes die yields an AudioError saying so."""
        pending = deque(_Pending(path) for path in paths)
        try:
            while pending:
                self._submit(pending, with_beats, limits)
                first = pending[0]
                try:
                    result = first.future.result()
                except BrokenProcessPool:
                    self._discard_broken_pool(pending)
                    if first.deaths < WORKER_DEATHS_TO_FAIL:
                        continue
                    result = AudioError(
                        f"{first.path}: the worker process computing its features died "
                        f"{first.deaths} times (killed, e.g. by the out-of-memory killer, "
                        "or crashed); --max-duration and --max-samples bound the audio "
                        "a file may take"
                    )
                pending.popleft()
                yield result
        finally:
            for entry in pending:
                if entry.future is not None:
                    entry.future.cancel()

    def _submit(self, pending: deque[_Pending], with_beats: bool, limits: AudioLimits) -> None:
        """Submit the next files in order, up to two per worker held (running or done,
        not yet yielded); a file that was in flight when a worker died runs alone:
        submitted once nothing runs, nothing after it until it is done."""
        held = running = 0
        for entry in pending:
            if entry.future is None:
                if (entry.deaths and running) or held >= 2 * self.workers:
                    return
                entry.future = self._submit_one(entry.path, with_beats, limits)
            held += 1
            if not entry.future.done():
                running += 1
                if entry.deaths:
                    return

    def _submit_one(self, path: Path, with_beats: bool, limits: AudioLimits) -> Future:
        """The future of ``path``'s features (starting the processes again after a
        worker died); on a pool already known to be broken, one that failed as if it had
        been in flight."""
        if self._pool is None:
            self._pool = self._start_pool()
        try:
            return self._pool.submit(_guarded, path, with_beats, limits)
        except BrokenProcessPool as exc:
            failed: Future = Future()
            failed.set_exception(exc)
            return failed

    def _discard_broken_pool(self, pending: deque[_Pending]) -> None:
        """Stop a pool a worker died in (the next file submitted starts another): every
        file in flight in it counts a death and is to be submitted again."""
        lost = []
        for entry in pending:
            if entry.future is not None and _died(entry.future):
                entry.future = None
                entry.deaths += 1
                lost.append(entry.path.name)
        self.close()
        log.warning(
            "a feature worker process died; starting the workers again and computing "
            "the files it may have died on one at a time: %s",
            ", ".join(lost),
        )

    def close(self) -> None:
        """Stop the processes (files not yet started are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> FeatureWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def files_features(
    paths: Sequence[Path],
    with_beats: bool = False,
    limits: AudioLimits = DEFAULT_LIMITS,
    workers: int | FeatureWorkers = 1,
) -> Iterator[FileResult]:
    """:func:`file_features` of every file, in order; a file's AudioError, OSError or
    ValueError, running out of memory, or (in worker processes) the worker dying on it is
    yielded in its place as an error naming the file (the others still go on).

    ``workers``: a number > 1 (and more than one file) runs :class:`FeatureWorkers` of
    that many processes for these files; started :class:`FeatureWorkers` are used (and
    left running); 1 computes in this process.
    """
    if isinstance(workers, FeatureWorkers):
        yield from workers.features(paths, with_beats, limits)
        return
    if workers <= 1 or len(paths) <= 1:
        for path in paths:
            yield _guarded(path, with_beats, limits)
        return
    with FeatureWorkers(min(workers, len(paths))) as pool:
        yield from pool.features(paths, with_beats, limits)


def _died(future: Future) -> bool:
    """Whether ``future`` was lost with its pool (waiting until it is settled)."""
    return future.cancelled() or isinstance(future.exception(), BrokenProcessPool)


_blas_limits: list[ThreadpoolController] = []


def _start_worker() -> None:
    """A worker's first step: one thread for NumPy's and SciPy's BLAS, and freed memory
    kept for reuse (:func:`~chordrec.allocator.keep_freed_memory`)."""
    _blas_limits.append(ThreadpoolController().limit(limits=1, user_api="blas"))
    keep_freed_memory()


def _warm_up() -> None:
    """Import and compile what :func:`audio_features` runs, on a second of a quiet tone;
    then freeze what that made (the libraries' objects, kept for the process's life) out
    of the garbage collector's passes, the worker's exit included."""
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    audio_features(0.1 * np.sin(2 * np.pi * 440 * t, dtype=np.float32))
    gc.freeze()


def _guarded(path: Path, with_beats: bool, limits: AudioLimits) -> FileResult:
    """:func:`file_features`, or the error that stopped it (returned, so that a worker
    hands it back like a result); running out of memory is an AudioError naming the
    file."""
    try:
        return file_features(path, with_beats, limits)
    except (AudioError, OSError, ValueError) as exc:
        return exc
    except MemoryError as exc:
        return AudioError(
            f"{path}: out of memory computing its features ({exc}); --max-duration and "
            "--max-samples bound the audio a file may take"
        )
