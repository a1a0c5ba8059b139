"""Audio files to the features a model reads: the first link of the one chain from
audio to chords (``chordrec transcribe``, the out-of-domain scoring).

* :func:`audio_features`: mono samples to CENS chroma and, for beat-level models,
  beats (:mod:`chordrec.audio.features`).
* :func:`file_features`: the same for an audio file (:func:`load_audio` first).
* :func:`files_features`: many files, in worker processes that overlap decoding and
  chroma with whatever the caller does with the results (the model, decoding,
  writing), yielded in the files' order.

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


def files_features(
    paths: Sequence[Path],
    with_beats: bool = False,
    max_duration: float = MAX_DURATION_S,
    workers: int = 1,
) -> Iterator[FileResult]:
    """:func:`file_features` of every file, in order; a file's AudioError, OSError or
    ValueError is yielded in its place (the others still go on).

    ``workers`` > 1 (and more than one file): that many worker processes (started
    fresh, ``spawn``), at most two files ahead per worker, so memory stays bounded
    (one file's audio per worker) while the caller works on earlier results.
    """
    if workers <= 1 or len(paths) <= 1:
        for path in paths:
            yield _guarded(path, with_beats, max_duration)
        return
    workers = min(workers, len(paths))
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        ahead = iter(paths)
        queue: deque[Future] = deque(
            pool.submit(_guarded, path, with_beats, max_duration)
            for path in islice(ahead, 2 * workers)
        )
        while queue:
            result = queue.popleft().result()
            for path in islice(ahead, 1):  # one more in for the one out
                queue.append(pool.submit(_guarded, path, with_beats, max_duration))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _guarded(path: Path, with_beats: bool, max_duration: float) -> FileResult:
    """:func:`file_features`, or the error that stopped it (returned, so that a worker
    hands it back like a result)."""
    try:
        return file_features(path, with_beats, max_duration)
    except (AudioError, OSError, ValueError) as exc:
        return exc
