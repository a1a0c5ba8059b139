"""The synthetic training songs: drawn as the out-of-domain songs are, rendered, and
stored as RWC-Pop's songs are, so that a run loads them like any song
(:func:`chordrec.data.songs.load_songs`; config ``data.synth_fraction``).

``chordrec data synth`` builds them (:func:`ensure_train_set`) in ``data/synth-train``,
beside the out-of-domain set. Each song is drawn as part ``train`` of
:mod:`chordrec.data.synthetic` (random streams of its own: it shares no song with the
out-of-domain parts), its chord instrument from
:data:`~chordrec.data.synthetic.TRAIN_CHORD_PROGRAMS`, programs the out-of-domain songs
never use. It is rendered by ``fluidsynth``; its chroma and beats are computed once from
that audio by :func:`chordrec.audio.analysis.audio_features`, what ``chordrec
transcribe`` runs; its frame labels are the exact ``.lab``'s label at each frame's
centre (:func:`~chordrec.inference.metrics.reference_frame_classes`, as the
out-of-domain scores read theirs). The audio is not kept: the MIDI file renders it
again. On disk::

    dest/manifest.json               settings, chord programs, per-song metadata, sha256s
    dest/train/train-NNN.mid|.lab    the song and its exact labels
    dest/chroma/train-NNN.npy        float32 (frames, 12), as RWC-Pop's chroma/
    dest/chord/train-NNN.npy         int64 (frames,), classes 0..24
    dest/beat/train-NNN.npy          int64 (beats,), chroma frame indices
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chordrec.audio.analysis import AudioFeatures, FeatureWorkers, files_features
from chordrec.constants import FRAME_RATE, SYNTH_TRAIN_DIR, SYNTH_TRAIN_SONGS
from chordrec.data.songs import validate_song
from chordrec.data.synthetic import (
    MANIFEST_FILE,
    RENDER_WORKERS,
    TRAIN_CHORD_PROGRAMS,
    SetKind,
    SetSettings,
    Song,
    SynthesisError,
    build_set,
    draw_set_songs,
    ensure_set,
    log_minutes,
    mido_module,
    read_manifest,
    render,
    set_settings,
    song_entry,
    write_song,
)
from chordrec.errors import UserError
from chordrec.inference.metrics import reference_frame_classes
from chordrec.io.atomic_write import write_atomic
from chordrec.io.chord_files import read_lab

log = logging.getLogger(__name__)

PART = "train"
"""The part the training songs are drawn as (their random streams and names)."""
SONG_SECONDS = (30.0, 90.0)
"""The range of the training songs' lengths, seconds."""
FEATURES_VERSION = 1
"""Bump whenever a change to the feature path makes the same audio give other chroma or
beats: :func:`ensure_train_set` then finds a set built before stale."""
FEATURE_FOLDERS = ("chroma", "chord", "beat")
"""The folders of a song's arrays, as RWC-Pop's (:mod:`chordrec.data.songs`)."""


class SynthTrainError(UserError, ValueError):
    """The synthetic training set is missing, damaged or does not match its settings; the
    message names the path and how to build it."""


TRAIN_SET = SetKind(
    noun="synthetic training set",
    article="a",
    generator=__name__,
    command="chordrec data synth --train-dest {dest}",
    files=("midi", "lab", *FEATURE_FOLDERS),
    error=SynthTrainError,
)
"""The synthetic training set: each song's MIDI, ``.lab`` and arrays."""


def _recorded_extra() -> dict[str, Any]:
    """What a training set's manifest records beyond the settings every set records."""
    return {
        "features_version": FEATURES_VERSION,
        "chord_programs": {family: list(p) for family, p in TRAIN_CHORD_PROGRAMS.items()},
    }


def frame_labels(lab: Path, n_frames: int) -> np.ndarray:
    """The class of each of ``n_frames`` chroma frames, shape (n_frames,) int64: the label
    of ``lab`` at the frame's centre; frames past the labels' end (the audio's last
    milliseconds) are N. ValueError naming ``lab`` when a frame's label lies outside the
    25-class vocabulary."""
    intervals, labels = read_lab(lab)
    classes = reference_frame_classes(intervals, labels, n_frames)
    past_end = np.arange(n_frames) / FRAME_RATE >= intervals[-1, 1]
    classes[past_end & (classes < 0)] = 0
    if (classes < 0).any():
        frame = int(np.argmax(classes < 0))
        raise ValueError(f"{lab}: frame {frame} has a label outside the 25-class vocabulary")
    return classes


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _song_files(song: Song) -> dict[str, str]:
    """A training song's files by kind, relative to the set."""
    files = {"midi": f"{PART}/{song.name}.mid", "lab": f"{PART}/{song.name}.lab"}
    return files | {folder: f"{folder}/{song.name}.npy" for folder in FEATURE_FOLDERS}


def _store_song(root: Path, song: Song, features: AudioFeatures) -> None:
    """Write a song's chroma, frame labels and beats under ``root`` (checked as a run
    checks a song on loading)."""
    labels = frame_labels(root / PART / f"{song.name}.lab", len(features.chroma))
    validate_song(features.chroma, labels, features.beats, where=f"song {song.name}")
    arrays = {"chroma": features.chroma, "chord": labels, "beat": features.beats}
    for folder, array in arrays.items():
        data = _npy_bytes(array)
        (root / folder).mkdir(exist_ok=True)
        write_atomic(root / folder / f"{song.name}.npy", lambda path, d=data: path.write_bytes(d))


def build_train_set(
    dest: str | os.PathLike[str],
    seed: int = 0,
    songs: int = SYNTH_TRAIN_SONGS,
    soundfonts: Sequence[str | os.PathLike[str]] | None = None,
    *,
    song_seconds: tuple[float, float] = SONG_SECONDS,
    workers: int = RENDER_WORKERS,
) -> Path:
    """Synthesize the training set into ``dest``, replacing an earlier one there (as
    :func:`~chordrec.data.synthetic.build_set`: never half-written, never over a
    directory it did not build).

    ``songs`` songs are drawn from ``seed`` with lengths in ``song_seconds`` and
    soundfonts drawn from ``soundfonts`` (default: those of the out-of-domain set). They
    are rendered in batches, ``workers`` at a time, and each batch's features are
    computed in ``workers`` worker processes (in this process for one worker or one
    song) while the next batch renders; a song's
    audio is removed once its features are stored. Returns
    ``dest`` (absolute); raises as :func:`~chordrec.data.synthetic.build_ood_set`, and
    SynthesisError naming a song whose features fail."""
    settings = set_settings(seed, songs, (PART,), soundfonts, song_seconds)
    return _build_train_set(dest, settings, workers)


def _build_train_set(dest: str | os.PathLike[str], settings: SetSettings, workers: int) -> Path:
    """:func:`build_train_set` with settings already checked."""
    mido_module()  # before anything is drawn or rendered

    def fill(tmp: Path, program: str) -> dict[str, Any]:
        drawn = draw_set_songs(settings, TRAIN_CHORD_PROGRAMS)[PART]
        log.info("synthesizing %d training songs into %s, %d at a time", len(drawn), dest, workers)
        size = 4 * workers
        batches = [drawn[start : start + size] for start in range(0, len(drawn), size)]
        entries = []
        with ExitStack() as stack:
            # one worker or one song: features in this process (no process to start)
            processes = min(workers, len(drawn))
            features = stack.enter_context(FeatureWorkers(processes)) if processes > 1 else 1
            renderers = stack.enter_context(ThreadPoolExecutor(workers))

            def start(songs: Sequence[Song]) -> list[tuple[Future, Song, Path]]:
                jobs = [write_song(tmp, PART, song) for song in songs]
                return [(renderers.submit(render, program, *job), job[0], job[2]) for job in jobs]

            rendering = start(batches[0])
            for following in [*batches[1:], None]:
                for future, _, _ in rendering:
                    future.result()
                rendered, rendering = rendering, start(following) if following else []
                audio = [flac for _, _, flac in rendered]
                results = files_features(audio, with_beats=True, workers=features)
                for (_, song, flac), result in zip(rendered, results, strict=True):
                    if isinstance(result, Exception):
                        raise SynthesisError(f"song {song.name}: no features ({result})")
                    _store_song(tmp, song, result)
                    flac.unlink()
                    entries.append(song_entry(tmp, song, _song_files(song)))
        log_minutes(dest, drawn)
        return {**_recorded_extra(), "parts": {PART: entries}}

    return build_set(dest, TRAIN_SET, settings, fill)


def ensure_train_set(
    dest: str | os.PathLike[str] = SYNTH_TRAIN_DIR,
    seed: int = 0,
    songs: int = SYNTH_TRAIN_SONGS,
    soundfonts: Sequence[str | os.PathLike[str]] | None = None,
    *,
    song_seconds: tuple[float, float] = SONG_SECONDS,
    workers: int = RENDER_WORKERS,
    force: bool = False,
) -> Path:
    """Keep the training set in ``dest`` if its manifest matches these settings (and the
    chord programs and feature version) and every file it lists is there with its
    sha256; otherwise build it (:func:`build_train_set`) as
    :func:`~chordrec.data.synthetic.ensure_set` says (a set that does not match only
    with ``force``). Returns ``dest`` (absolute)."""
    settings = set_settings(seed, songs, (PART,), soundfonts, song_seconds)
    build = functools.partial(_build_train_set, settings=settings, workers=workers)
    return ensure_set(dest, TRAIN_SET, settings, _recorded_extra(), build, force=force)


@dataclass(frozen=True)
class TrainSet:
    """A training set as a run reads it: its ``root``, its songs' ``names`` in the
    manifest's order, its ``digest`` (the sha256 of its manifest, which holds every
    file's) and its ``version`` (generator, features and seed)."""

    root: Path
    names: list[str]
    digest: str
    version: str


def read_train_set(root: str | os.PathLike[str]) -> TrainSet:
    """The training set in ``root``. :class:`SynthTrainError` naming the path and the
    command that builds it when it is missing, not a training set or its manifest corrupt
    (a song's files are checked when it is loaded)."""
    root = Path(root)
    manifest = read_manifest(root, TRAIN_SET)
    if manifest.get("generator") != TRAIN_SET.generator or PART not in manifest["parts"]:
        raise SynthTrainError(
            f"{root / MANIFEST_FILE}: not a {TRAIN_SET.noun} (no part {PART!r} by "
            f"{TRAIN_SET.generator}); {TRAIN_SET.hint(root)}"
        )
    digest = hashlib.sha256((root / MANIFEST_FILE).read_bytes()).hexdigest()
    version = (
        f"generator {manifest.get('generator_version')}, "
        f"features {manifest.get('features_version')}, seed {manifest.get('seed')}"
    )
    return TrainSet(root, [song["name"] for song in manifest["parts"][PART]], digest, version)
