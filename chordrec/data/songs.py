"""Loading and validating RWC-Pop songs: chroma, frame labels and beats.

The data set layout (see the data set README): ``chroma/<song>.npy`` float32
(frames, 12), ``chord/<song>.npy`` int64 (frames,) with classes 0..24 and
``beat/<song>.npy`` int64 (beats,) frame indices, increasing. Every problem found
while loading raises :class:`SongDataError` naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chordrec.data.chords import N_CLASSES
from chordrec.errors import UserError


class SongDataError(UserError, ValueError):
    """A song's files are missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Song:
    """One song: ``chroma`` (frames, 12) float32, ``labels`` (frames,) int64 in 0..24,
    ``beats`` (beats,) int64 increasing frame indices inside the song."""

    name: str
    chroma: np.ndarray
    labels: np.ndarray
    beats: np.ndarray

    @property
    def n_frames(self) -> int:
        """The number of chroma frames."""
        return len(self.labels)


def song_names(root: str | Path) -> list[str]:
    """Sorted song names (file stems of ``chroma/*.npy``) of the data set at ``root``."""
    chroma_dir = Path(root) / "chroma"
    if not chroma_dir.is_dir():
        raise SongDataError(
            f"{chroma_dir}: no such directory; fetch the data set first (`chordrec data fetch`)"
        )
    names = sorted(p.stem for p in chroma_dir.glob("*.npy"))
    if not names:
        raise SongDataError(f"{chroma_dir}: no .npy files")
    return names


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SongDataError(f"{path}: file is missing")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError... on corrupt files
        raise SongDataError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(loaded, np.ndarray):  # an .npz archive under an .npy name
        loaded.close()
        raise SongDataError(f"{path}: not a single .npy array (found an .npz archive)")
    return loaded


def validate_song(
    chroma: np.ndarray, labels: np.ndarray, beats: np.ndarray, *, where: str = "song"
) -> None:
    """Check one song's arrays; raise :class:`SongDataError` prefixed by ``where``.

    Checks: chroma is a finite float array of shape (frames, 12); labels an integer
    array of shape (frames,) with values in 0..24 and the same length as chroma;
    beats a non-empty integer array of strictly increasing frame indices in
    [0, frames).
    """
    if chroma.ndim != 2 or chroma.shape[1] != 12:
        raise SongDataError(f"{where}: chroma must have shape (frames, 12), got {chroma.shape}")
    if not np.issubdtype(chroma.dtype, np.floating):
        raise SongDataError(f"{where}: chroma must be floating point, got {chroma.dtype}")
    if not np.isfinite(chroma).all():
        bad = int(np.argwhere(~np.isfinite(chroma))[0, 0])
        raise SongDataError(f"{where}: chroma holds NaN or Inf (first at frame {bad})")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SongDataError(
            f"{where}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(chroma):
        raise SongDataError(
            f"{where}: chroma has {len(chroma)} frames but labels have {len(labels)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        bad = int(np.argwhere((labels < 0) | (labels >= N_CLASSES))[0, 0])
        raise SongDataError(
            f"{where}: label {int(labels[bad])} at frame {bad} is outside 0..{N_CLASSES - 1}"
        )
    if beats.ndim != 1 or not np.issubdtype(beats.dtype, np.integer):
        raise SongDataError(
            f"{where}: beats must be a 1-D integer array, got {beats.dtype} {beats.shape}"
        )
    if len(beats) < 2:
        raise SongDataError(f"{where}: needs at least 2 beats, got {len(beats)}")
    if (beats[1:] <= beats[:-1]).any():  # not np.diff: it wraps around for unsigned dtypes
        bad = int(np.argwhere(beats[1:] <= beats[:-1])[0, 0])
        raise SongDataError(
            f"{where}: beats must increase, but beat {bad + 1} ({int(beats[bad + 1])}) "
            f"follows {int(beats[bad])}"
        )
    if beats[0] < 0 or beats[-1] >= len(chroma):
        raise SongDataError(
            f"{where}: beats must lie inside the song's {len(chroma)} frames, "
            f"got range {int(beats[0])}..{int(beats[-1])}"
        )


def load_song(root: str | Path, name: str) -> Song:
    """Load and validate song ``name`` from the data set at ``root``."""
    root = Path(root)
    paths = {
        "chroma": root / "chroma" / f"{name}.npy",
        "labels": root / "chord" / f"{name}.npy",
        "beats": root / "beat" / f"{name}.npy",
    }
    arrays = {key: _load_array(path) for key, path in paths.items()}
    chroma, labels, beats = arrays["chroma"], arrays["labels"], arrays["beats"]
    # Name the file that carries the problem: beat problems live in beat/, label
    # problems in chord/, everything else is judged against chroma/.
    try:  # frames and labels first, with stand-in beats that fit any song of 2+ frames
        if chroma.ndim >= 1 and len(chroma) < 2:
            raise SongDataError(f": a song needs at least 2 frames, got {len(chroma)}")
        validate_song(chroma, labels, np.arange(2), where="")
    except SongDataError as exc:
        culprit = paths["labels"] if "label" in str(exc) else paths["chroma"]
        raise SongDataError(f"{culprit}{exc}") from None
    try:
        validate_song(chroma, labels, beats, where="")
    except SongDataError as exc:
        raise SongDataError(f"{paths['beats']}{exc}") from None
    return Song(
        name=name,
        chroma=chroma.astype(np.float32, copy=False),
        labels=labels.astype(np.int64, copy=False),
        beats=beats.astype(np.int64, copy=False),
    )


def load_songs(root: str | Path, names: Sequence[str]) -> list[Song]:
    """Load and validate several songs (see :func:`load_song`)."""
    return [load_song(root, name) for name in names]


def split_songs(
    names: Sequence[str],
    train: Sequence[int],
    test: Sequence[int],
    validation: Sequence[int],
    max_songs: int | None = None,
) -> dict[str, list[str]]:
    """Cut sorted song names into train / validation / test by index ranges.

    ``train``, ``test`` and ``validation`` are ``[start, stop)`` index pairs into the
    sorted names (the report's split is train [0, 60), test [60, 80), validation
    [80, 100)). ``max_songs`` keeps only the first songs of each part (quick runs).
    Raises ValueError when a range leaves the list or the parts overlap.
    """
    if max_songs is not None and max_songs < 1:
        raise ValueError(f"max_songs must be a positive number of songs or null, got {max_songs}")
    names = sorted(names)
    parts = {"train": train, "validation": validation, "test": test}
    taken: set[int] = set()
    result: dict[str, list[str]] = {}
    for part, (start, stop) in parts.items():
        if not 0 <= start < stop <= len(names):
            raise ValueError(
                f"split part {part} = [{start}, {stop}) does not fit the {len(names)} songs"
            )
        indices = set(range(start, stop))
        if indices & taken:
            raise ValueError(f"split part {part} = [{start}, {stop}) overlaps another part")
        taken |= indices
        chosen = names[start:stop]
        result[part] = chosen if max_songs is None else chosen[:max_songs]
    return result
