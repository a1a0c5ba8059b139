"""Out-of-domain evaluation: a model transcribes audio it never trained on, whose exact
chords are known, through the same path as ``chordrec transcribe``.

The songs are the synthesized set of :mod:`chordrec.data.synthetic` (``make data``
builds it in ``data/ood-synth`` where ``fluidsynth`` is installed): a ``validation``
part to choose models on, which every training run scores when the set is there
(``ood.part=auto``, the default; metrics ``ood_val/majmin``, ``ood_val/root``,
``ood_val/frame_acc``; without the set a run says why, :func:`missing_set`), and a
``test`` part to report on only (``ood_test/…``, e.g.
``chordrec evaluate RUN_ID ood.part=test``). Each song goes audio file →
:func:`~chordrec.audio.features.load_audio` → :func:`~chordrec.transcribe.transcribe_audio`
(chroma, beats where the model needs them, the model, decoding) and is scored against its ``.lab``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chordrec.audio.features import load_audio
from chordrec.data.synthetic import (
    MANIFEST_FILE,
    SynthesisError,
    missing_tools,
    ood_songs,
    read_manifest,
)
from chordrec.inference.metrics import (
    aggregate_chord_scores,
    chord_scores,
    reference_frame_classes,
    reference_frame_positions,
    segment_chord_scores,
)
from chordrec.io.chord_files import read_lab
from chordrec.transcribe import ChordModel, transcribe_audio

PREFIXES = {"validation": "ood_val", "test": "ood_test"}
"""The metric section of each part."""
KEYS = ("majmin", "root", "frame_acc")
"""What each part's metrics hold, after the prefix."""
CHANGE_ZONE_S = 0.25
"""Seconds either side of an annotated chord change within which a frame counts as at
the change (:attr:`SongScores.wrong_at_change`): about half the chroma's smoothing
window (41 frames, 0.48 s; :mod:`chordrec.audio.features`), over which a change blurs."""
AUTO = "auto"
"""``ood.part``: the ``validation`` part when the set is there, else none (the run says
why); a part named explicitly fails the run when the set is missing."""


@dataclass(frozen=True)
class SongScores:
    """One song's scores: ``majmin`` and ``root`` (mir_eval WCSR, in [0, 1]),
    ``frame_acc`` over its ``frames`` in the 25-class vocabulary, and the annotation's
    ``duration`` in seconds. Of those frames, ``chord_as_n`` is the fraction labelled
    with a chord but decoded N, ``n_as_chord`` the reverse, ``wrong_root`` the fraction
    decoded as a chord with another root (the errors that are not major/minor mix-ups).
    Where the errors lie: ``wrong_at_change`` is the fraction of frames decoded wrongly
    within :data:`CHANGE_ZONE_S` of an annotated chord change, ``wrong_inverted`` the
    fraction decoded wrongly in an inverted chord (``C:maj/3``); a frame can be both."""

    majmin: float
    root: float
    frame_acc: float
    frames: int
    duration: float
    chord_as_n: float
    n_as_chord: float
    wrong_root: float
    wrong_at_change: float
    wrong_inverted: float


def score_song(model: ChordModel, audio: Path, lab: Path) -> SongScores:
    """Transcribe ``audio`` with ``model`` and score it against the annotation ``lab``.

    Frame accuracy compares each chroma frame's decoded class with the annotated class
    at the frame's centre (:func:`~chordrec.inference.metrics.reference_frame_classes`), over the
    frames whose label lies in the vocabulary. Raises AudioError or ValueError naming
    the file."""
    intervals, labels = read_lab(lab)
    result = transcribe_audio(load_audio(audio), model)
    scores = chord_scores(result.classes, intervals, labels)
    reference = reference_frame_classes(intervals, labels, len(result.classes))
    known = reference >= 0
    if not known.any():
        raise ValueError(f"{lab}: no frame has a label in the 25-class vocabulary")
    ref, est = reference[known], result.classes[known]
    chords = (ref != 0) & (est != 0)
    at_change, inverted = reference_frame_positions(
        intervals, labels, len(result.classes), CHANGE_ZONE_S
    )
    wrong = est != ref
    return SongScores(
        majmin=scores["majmin"],
        root=scores["root"],
        frame_acc=float(np.mean(~wrong)),
        frames=int(known.sum()),
        duration=float(intervals[-1, 1] - intervals[0, 0]),
        chord_as_n=float(np.mean((ref != 0) & (est == 0))),
        n_as_chord=float(np.mean((ref == 0) & (est != 0))),
        wrong_root=float(np.mean(chords & ((ref - 1) % 12 != (est - 1) % 12))),
        wrong_at_change=float(np.mean(wrong & at_change[known])),
        wrong_inverted=float(np.mean(wrong & inverted[known])),
    )


@dataclass(frozen=True)
class PartScores:
    """A part's ``metrics`` (``<prefix>/majmin|root|frame_acc``: majmin and root
    duration-weighted over songs, frame accuracy over all their frames) and each
    song's :class:`SongScores` by name."""

    metrics: dict[str, float]
    songs: dict[str, SongScores]


def songs_of(root: str | Path, part: str, max_songs: int | None = None) -> list[tuple[Path, Path]]:
    """The ``(audio, lab)`` files of ``part`` of the set in ``root``, the first
    ``max_songs`` only when given. Raises ValueError for an unknown part or a
    ``max_songs`` below 1, and :mod:`chordrec.data.synthetic`'s error naming ``make
    data`` when the set is missing."""
    check_settings(part, max_songs)
    if part == AUTO:
        raise ValueError(f"ood.part={AUTO} names no part: resolve it first (missing_set)")
    songs = ood_songs(Path(root), part)
    return songs if max_songs is None else songs[:max_songs]


def check_settings(part: str | None, max_songs: int | None) -> None:
    """ValueError naming ``ood.part`` or ``ood.max_songs`` when out of range."""
    if part is not None and part != AUTO and part not in PREFIXES:
        choices = ", ".join([AUTO, *sorted(PREFIXES)])
        raise ValueError(f"ood.part must be one of {choices} or null, got {part!r}")
    if max_songs is not None and max_songs < 1:
        raise ValueError(f"ood.max_songs must be at least 1 or null, got {max_songs}")


@dataclass(frozen=True)
class PartIdentity:
    """Which out-of-domain songs a run was scored on, as the run records them: the part's
    ``name`` (``chordrec-ood-synth/validation``), a ``digest`` (sha256 of the set's
    manifest, which holds every file's sha256, followed by the scored songs' names, so
    that the first 16 songs and all 64 differ), the set's ``version`` (generator and
    seed) and ``source`` (its folder's URI)."""

    name: str
    digest: str
    version: str
    source: str


def part_identity(root: str | Path, part: str, names: Sequence[str]) -> PartIdentity:
    """The :class:`PartIdentity` of the songs ``names`` of ``part`` of the set in
    ``root``. Raises :mod:`chordrec.data.synthetic`'s error naming the manifest when it is
    missing or corrupt."""
    root = Path(root)
    manifest = read_manifest(root)
    digest = hashlib.sha256((root / MANIFEST_FILE).read_bytes())
    digest.update("\n".join(names).encode())
    version = f"generator {manifest.get('generator_version')}, seed {manifest.get('seed')}"
    return PartIdentity(
        f"chordrec-ood-synth/{part}", digest.hexdigest(), version, root.resolve().as_uri()
    )


def missing_set(root: str | Path) -> str | None:
    """``None`` when ``root`` holds a set (its manifest; a damaged one fails later, when
    its songs are read), else one line saying why not and how to build it, e.g.
    ``data/ood-synth missing: fluidsynth not installed (not on PATH); apt-get install
    fluidsynth (...), then make data``."""
    root = Path(root)
    if (root / MANIFEST_FILE).is_file():
        return None
    where = f"{root} missing" if not root.exists() else f"{root} holds no {MANIFEST_FILE}"
    try:
        why = missing_tools() or "build it with make data"
    except SynthesisError as exc:  # a soundfont named in the environment is not there
        why = f"{exc}; fix it, then make data"
    return f"{where}: {why}"


def score_part(model: ChordModel, part: str, songs: Sequence[tuple[Path, Path]]) -> PartScores:
    """Score ``model`` on ``songs`` (``(audio, lab)`` pairs of ``part``, from
    :func:`songs_of`)."""
    if not songs:
        raise ValueError(f"out-of-domain part {part!r} holds no songs")
    per_song = {audio.stem: score_song(model, audio, lab) for audio, lab in songs}
    weighted = aggregate_chord_scores(
        [{"majmin": s.majmin, "root": s.root} for s in per_song.values()],
        [s.duration for s in per_song.values()],
    )
    frames = sum(s.frames for s in per_song.values())
    correct = sum(s.frame_acc * s.frames for s in per_song.values())
    prefix = PREFIXES[part]
    metrics = {
        f"{prefix}/majmin": weighted["majmin"],
        f"{prefix}/root": weighted["root"],
        f"{prefix}/frame_acc": correct / frames,
    }
    return PartScores(metrics, per_song)


def score_lab_files(
    lab_dir: str | Path, songs: Sequence[tuple[Path, Path]]
) -> tuple[dict[str, float], dict[str, tuple[float, float, float]]]:
    """Score the ``.lab`` files in ``lab_dir`` that another tool wrote for ``songs``
    (``(audio, lab)`` pairs from :func:`songs_of`), one per song and named as the song's
    reference (``test-000.lab``), against the references: what :func:`score_part` gives
    for a model, majmin and root (mir_eval, weighted by duration), without the frame
    counts.

    Returns ``({"majmin": …, "root": …}, {song: (majmin, root, duration in s)})``.
    Raises ValueError naming a missing or malformed file.
    """
    if not songs:
        raise ValueError("the out-of-domain part holds no songs")
    lab_dir = Path(lab_dir)
    per_song: dict[str, tuple[float, float, float]] = {}
    for audio, reference in songs:
        estimate = lab_dir / reference.name
        if not estimate.is_file():
            raise ValueError(f"{estimate}: no such file (one .lab per song of the part)")
        ref_intervals, ref_labels = read_lab(reference)
        est_intervals, est_labels = read_lab(estimate)
        try:
            scores = segment_chord_scores(ref_intervals, ref_labels, est_intervals, est_labels)
        except ValueError as exc:  # a label mir_eval cannot parse
            raise ValueError(f"{estimate}: {exc}") from exc
        duration = float(ref_intervals[-1, 1] - ref_intervals[0, 0])
        per_song[audio.stem] = (scores["majmin"], scores["root"], duration)
    weighted = aggregate_chord_scores(
        [{"majmin": m, "root": r} for m, r, _ in per_song.values()],
        [d for _, _, d in per_song.values()],
    )
    return weighted, per_song
