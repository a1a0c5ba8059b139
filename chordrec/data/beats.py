"""Beat-synchronous features and labels, and the way back to frames."""

from __future__ import annotations

import numpy as np

from chordrec.data.chords import N_CLASSES


def _check_beats(beats: np.ndarray, n_frames: int) -> np.ndarray:
    beats = np.asarray(beats)
    if beats.ndim != 1 or len(beats) < 2:
        raise ValueError(f"beats must be 1-D with at least 2 entries, got shape {beats.shape}")
    if (beats[1:] <= beats[:-1]).any():  # not np.diff: it wraps around for unsigned dtypes
        raise ValueError("beats must be strictly increasing")
    if beats[0] < 0 or beats[-1] > n_frames:
        raise ValueError(f"beats must lie in [0, {n_frames}], got {beats[0]}..{beats[-1]}")
    return beats.astype(np.int64)


def beat_sync(chroma: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Average chroma over each inter-beat span.

    ``chroma``: (frames, 12); ``beats``: (n,) increasing frame indices. Returns
    (n - 1, 12): row i is the mean of frames ``beats[i] .. beats[i + 1] - 1``. Frames
    before the first beat and from the last beat on belong to no span (the report's
    beat counts, e.g. 27,552 training beats, are these n - 1 spans per song).
    """
    chroma = np.asarray(chroma)
    beats = _check_beats(beats, len(chroma))
    sums = np.add.reduceat(chroma[beats[0] : beats[-1]], beats[:-1] - beats[0], axis=0)
    return (sums / np.diff(beats)[:, None]).astype(chroma.dtype, copy=False)


def beat_sync_labels(labels: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Majority class of each inter-beat span.

    ``labels``: (frames,) int in 0..24; ``beats``: (n,) increasing frame indices.
    Returns (n - 1,) int64; ties go to the smallest class index.
    """
    labels = np.asarray(labels)
    beats = _check_beats(beats, len(labels))
    span = np.repeat(np.arange(len(beats) - 1), np.diff(beats))
    counts = np.zeros((len(beats) - 1, N_CLASSES), dtype=np.int64)
    np.add.at(counts, (span, labels[beats[0] : beats[-1]]), 1)
    return counts.argmax(axis=1)


def expand_beats_to_frames(beat_values: np.ndarray, beats: np.ndarray, n_frames: int) -> np.ndarray:
    """Spread per-span values (predictions or scores) back over the song's frames.

    ``beat_values``: (n - 1, ...) one entry per inter-beat span as produced by
    :func:`beat_sync`; ``beats``: (n,) frame indices; returns (n_frames, ...). Frames
    inside span i get entry i. Frames before the first beat get the first span's
    entry and frames from the last beat to the end of the song get the last span's
    entry, so every frame of the song is scored.
    """
    beat_values = np.asarray(beat_values)
    beats = _check_beats(beats, n_frames)
    if len(beat_values) != len(beats) - 1:
        raise ValueError(
            f"expected {len(beats) - 1} span values for {len(beats)} beats, got {len(beat_values)}"
        )
    span = np.searchsorted(beats, np.arange(n_frames), side="right") - 1
    return beat_values[np.clip(span, 0, len(beats) - 2)]
