"""The 25-class major/minor chord vocabulary of the data set and its key transposition.

Class indices follow the data set's ``chord/`` files: 0 = no chord (``N``),
1-12 = major chords with root C, C#, ..., B (``1 + pitch_class``), 13-24 = minor
chords (``13 + pitch_class``). Labels are written in Harte syntax (``C:maj``,
``A:min``, ``N``) with sharps, as mir_eval reads them.
"""

from __future__ import annotations

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
N_CLASSES = 25
NO_CHORD = 0


def class_names() -> list[str]:
    """Harte labels of the 25 classes, indexed by class: ``['N', 'C:maj', ..., 'B:min']``."""
    return (
        ["N"]
        + [f"{root}:maj" for root in PITCH_CLASSES]
        + [f"{root}:min" for root in PITCH_CLASSES]
    )


def class_to_harte(classes: np.ndarray) -> list[str]:
    """Map class indices, shape (n,), int in [0, 24], to their Harte labels."""
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= N_CLASSES):
        raise ValueError(f"chord classes must lie in 0..{N_CLASSES - 1}")
    names = class_names()
    return [names[int(c)] for c in classes]


def transpose_labels(labels: np.ndarray, semitones: int | np.ndarray) -> np.ndarray:
    """Move every chord root up by ``semitones`` (mod 12); no-chord stays no-chord.

    ``labels``: int array of any shape with classes in [0, 24]; ``semitones`` an int
    or an int array broadcastable to ``labels``. Labels outside 0..24 (such as a
    padding value of -100) pass through unchanged.
    """
    labels = np.asarray(labels)
    shift = np.asarray(semitones)
    chord = (labels >= 1) & (labels < N_CLASSES)
    quality_base = np.where(labels >= 13, 13, 1)
    moved = quality_base + (labels - quality_base + shift) % 12
    return np.where(chord, moved, labels)


def transpose_chroma(chroma: np.ndarray, semitones: int | np.ndarray) -> np.ndarray:
    """Rotate chroma up by ``semitones``: energy at pitch class p moves to p + k (mod 12).

    ``chroma``: float array, shape (..., 12). ``semitones``: an int, or an int array of
    shape ``chroma.shape[:-1]`` broadcastable (one shift per leading index, e.g. per
    example of a batch shaped (batch, 1)).
    """
    chroma = np.asarray(chroma)
    if chroma.shape[-1] != 12:
        raise ValueError(f"chroma needs 12 bins on its last axis, got shape {chroma.shape}")
    shift = np.asarray(semitones)
    if shift.ndim == 0:
        return np.roll(chroma, int(shift), axis=-1)
    source = (np.arange(12) - shift[..., None]) % 12
    return np.take_along_axis(chroma, np.broadcast_to(source, chroma.shape), axis=-1)
