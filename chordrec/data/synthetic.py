"""Synthesized out-of-domain songs with exact chord labels: an evaluation set unlike RWC-Pop.

Each song is drawn from a seed (a numpy ``Generator``), written as a General MIDI file
(mido), rendered to FLAC by the ``fluidsynth`` program and labelled in MIREX ``.lab``
(:func:`chordrec.io.chord_files.format_lab`) straight from the notes it plays, so the
labels are exact by construction.

A song
    A key (root uniform over the 12 pitch classes, major or minor), 4/4 bars of
    4-bar phrases (common pop progressions or random diatonic ones, some borrowed
    chords), chords of 4 beats (mostly), 2 or 1, reduced to major/minor triads; about
    15 % get their diatonic seventh (``7``, ``maj7``, ``min7``) and about 20 % are
    inversions (Harte bass ``/3`` or ``/b3``, ``/5``), the bass then playing that note.
    A tempo of 70-160 BPM, changing once mid-song by 10-25 % in about a third of the
    songs (at a bar line, staying within 60-190 BPM); a fixed tuning of -40..+40 cents (a pitch bend on every melodic channel at
    time 0, bend range 2 semitones; drums are not bent); a chord instrument comping
    sustained, in blocks on the beats or in arpeggios; a bass; drums in about 75 % and
    a melody of chord tones with some passing tones in about 60 % of the songs. A
    soundfont and a gain are drawn per song.

What is labelled ``N``
    A leading silence of 0.5-2 s, drum-only bars (an intro, a break; only in songs
    with drums) and the end: the last chord's notes stop, 0.5 s later every channel
    gets All Sound Off and the MIDI track ends, and ``fluidsynth`` renders
    :data:`RENDER_TAIL_S` more (the reverb's tail). No pitched note sounds in an ``N``
    segment and none crosses a chord boundary (note-offs at or before it); within a
    chord segment the chord and bass parts play only chord tones, the melody chord
    tones and passing tones.

The audio's length
    ``fluidsynth -F`` (2.3.1, Debian 12's) does not stop at the end of the MIDI track:
    it plays on until no voice sounds, then 2 s more (its ``FLUID_PLAYER_STOP_GRACE_MS``).
    The All Sound Off at the end of the track silences every voice there, so the audio
    lasts the MIDI file's length plus :data:`RENDER_TAIL_S` (measured: plus 256 samples,
    about 6 ms); the ``.lab`` covers ``[0, that end]``. Every render is checked against
    its labels (:data:`DURATION_TOLERANCE_S`), so a ``fluidsynth`` that ends otherwise
    fails the build instead of mislabelling the songs.

The set on disk (:func:`build_ood_set`, :func:`ensure_ood_set`)::

    dest/manifest.json              version, seed, settings, per-song metadata, sha256s
    dest/<part>/<part>-NNN.flac     44.1 kHz stereo, 16 bit
    dest/<part>/<part>-NNN.lab      start end label, seconds
    dest/<part>/<part>-NNN.mid

Each song's random stream is ``SeedSequence(seed, spawn_key=(part key, index))``, the
part key derived from the part's name: the parts never share a song, and a song does
not depend on how many songs or which other parts are built. The same seed gives
byte-identical MIDI and ``.lab`` files (and, with the same ``fluidsynth`` and
soundfonts, identical FLAC).

The synthetic training songs (:mod:`chordrec.synth_train`) are drawn the same way, as
part ``train``, with one difference that keeps the out-of-domain parts unseen: their
chord instrument comes from :data:`TRAIN_CHORD_PROGRAMS`, none of which the
out-of-domain songs use (:data:`CHORD_PROGRAMS`). :func:`build_set` and
:func:`ensure_set` build and keep a set of either kind (:class:`SetKind`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from chordrec.constants import OOD_DIR, OOD_SONGS_PER_PART, SAMPLE_RATE
from chordrec.data.chords import PITCH_CLASSES
from chordrec.data.fetch import sha256_file
from chordrec.errors import UserError
from chordrec.extras import require_extra
from chordrec.file_locks import exclusive_lock
from chordrec.io.atomic_write import (
    check_replaceable,
    default_dir_mode,
    install_directory,
    is_empty_directory,
    write_atomic,
)
from chordrec.io.chord_files import format_lab

if TYPE_CHECKING:
    import mido

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Bump whenever a change makes the same seed give other songs: :func:`ensure_ood_set`
tells a set built by another version from the one asked for (and rebuilds it with
``force``)."""

PARTS = ("validation", "test")
"""The parts of the default set: ``validation`` to choose models on, ``test`` to report."""
SONG_SECONDS = (30.0, 60.0)
"""Range of the songs' lengths in seconds (each song draws its target uniformly in it)."""

MANIFEST_FILE = "manifest.json"
FLUIDSYNTH = "fluidsynth"
FLUIDSYNTH_PACKAGE = "fluidsynth"
"""The program that renders the songs, and the Debian package that holds it."""


@dataclass(frozen=True)
class Soundfont:
    """A soundfont file and the Debian package that installs it (``None``: not Debian's)."""

    path: Path
    package: str | None = None


DEBIAN_SOUNDFONTS = (
    Soundfont(Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), "fluid-soundfont-gm"),
    Soundfont(Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), "timgm6mb-soundfont"),
    Soundfont(
        Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
        "musescore-general-soundfont-small",
    ),
)
"""The default soundfonts, one drawn per song (:data:`SOUNDFONTS_ENV` names others)."""
SOUNDFONTS_ENV = "CHORDREC_SOUNDFONTS"
"""The environment variable naming the soundfonts to use instead of
:data:`DEBIAN_SOUNDFONTS`: paths separated by ``os.pathsep`` (``:``). ``chordrec data
synth --soundfont`` overrides it."""

TICKS_PER_BEAT = 480
BEATS_PER_BAR = 4
BAR = BEATS_PER_BAR * TICKS_PER_BEAT
"""MIDI ticks per beat and per bar (4/4)."""
TEMPO_BPM = (70.0, 160.0)
TEMPO_CHANGE = (0.10, 0.25)
"""The tempo's range, and the range of the relative change of the songs that change it."""
TUNING_CENTS = 40.0
"""The tuning deviation is uniform in ``[-TUNING_CENTS, +TUNING_CENTS]`` cents."""
BEND_RANGE_CENTS = 200.0
"""Pitch-bend range (set by RPN 0 on every melodic channel): the General MIDI default."""
LEAD_SECONDS = (0.5, 2.0)
GAIN = (0.2, 0.8)
"""Leading silence (seconds) and ``fluidsynth``'s master gain: uniform ranges."""
END_GAP_S = 0.5
"""Seconds from the last chord's end (its note-offs) to All Sound Off and the track's end."""
RENDER_TAIL_S = 2.0
"""Seconds ``fluidsynth`` renders after the end of the track once no voice sounds."""
DURATION_TOLERANCE_S = 0.1
"""Largest allowed difference between a rendered file's length and its labels' end."""
RENDER_WORKERS = 2
RENDER_TIMEOUT_S = 600.0
"""Songs rendered at a time (``fluidsynth`` processes), and the limit for one song."""

P_SEVENTH = 0.15
P_INVERSION = 0.20
P_TEMPO_CHANGE = 1 / 3
P_DRUMS = 0.75
P_MELODY = 0.60
P_INTRO = 0.35
P_BREAK = 0.30
P_BORROWED = 0.08
"""Probabilities: per chord (seventh, inversion, borrowed), per song (the rest; intro
and break only in songs with drums)."""

CHANNELS = {"chords": 0, "bass": 1, "melody": 2, "drums": 9}
"""The MIDI channel of each part (0-based: drums on General MIDI channel 10)."""
MELODIC_PARTS = ("chords", "bass", "melody")

CHORD_PROGRAMS = {
    "piano": (0, 1, 2, 4, 5),
    "organ": (16, 17, 18, 19),
    "guitar": (24, 25, 26, 27),
    "strings": (48, 49, 50),
    "pad": (88, 89, 90, 91, 92),
    "brass": (61, 62, 63),
}
TRAIN_CHORD_PROGRAMS = {
    "piano": (3, 6, 7),
    "organ": (20, 21, 23),
    "guitar": (28, 29, 30),
    "strings": (44, 51, 52, 53),
    "pad": (93, 94, 95),
    "brass": (57, 60),
    "mallets": (8, 10, 12),
}
"""The chord instrument's programs of the synthetic training songs
(:mod:`chordrec.synth_train`): none of them is one of :data:`CHORD_PROGRAMS`, which
the out-of-domain parts draw from, so every out-of-domain song's chord instrument is
one that no training song plays (the held-out factor)."""
BASS_PROGRAMS = tuple(range(32, 40))
MELODY_PROGRAMS = (73, 72, 74, 75, 80, 81, 64, 65, 66, 71, 68, 56, 40, 11)
"""General MIDI programs (0-based): the chord instrument's families, basses, leads."""

COMPING = ("sustained", "block", "arpeggio")
BASS_STYLES = ("whole", "half", "quarters", "root_fifth", "eighths")

KICK_PATTERNS = ((0, 4), (0, 4, 5), (0, 3, 4), (0, 2, 4, 6), (0, 5, 6))
SNARES = (38, 38, 40, 37, 39)
HATS = ((42, (0, 1, 2, 3, 4, 5, 6, 7)), (42, (0, 2, 4, 6)), (44, (0, 2, 4, 6)), (51, (0, 2, 4, 6)))
"""Drum patterns in eighths of the bar: kick (36) patterns, snare notes (on beats 2
and 4), hi-hat or ride notes and their eighths."""
KICK = 36

_CHORD_REGISTER = (50, 79)
_BASS_LOW = 28
_MELODY_REGISTER = (62, 86)
_INTERVAL_NAMES = {3: "b3", 4: "3", 7: "5"}
_SEVENTHS = {"7": 10, "maj7": 11, "min7": 10}
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}

# Scale degrees: (semitones above the tonic, minor triad, its seventh quality).
_DEGREES = {
    "major": {
        "I": (0, False, "maj7"),
        "ii": (2, True, "min7"),
        "iii": (4, True, "min7"),
        "IV": (5, False, "maj7"),
        "V": (7, False, "7"),
        "vi": (9, True, "min7"),
    },
    "minor": {
        "i": (0, True, "min7"),
        "iv": (5, True, "min7"),
        "v": (7, True, "min7"),
        "V": (7, False, "7"),
        "VI": (8, False, "maj7"),
        "III": (3, False, "maj7"),
        "VII": (10, False, "7"),
    },
}
_BORROWED = {
    "major": {"bVII": (10, False, "7"), "iv": (5, True, "min7"), "bVI": (8, False, "maj7")},
    "minor": {"IV": (5, False, "7"), "bII": (1, False, "maj7")},
}
_TONIC = {"major": "I", "minor": "i"}
_PHRASES = {
    "major": (
        ("I", "V", "vi", "IV"),
        ("I", "vi", "IV", "V"),
        ("vi", "IV", "I", "V"),
        ("I", "IV", "V", "IV"),
        ("ii", "V", "I", "vi"),
        ("I", "iii", "IV", "V"),
        ("IV", "V", "iii", "vi"),
        ("I", "IV", "vi", "V"),
    ),
    "minor": (
        ("i", "VI", "III", "VII"),
        ("i", "iv", "v", "i"),
        ("i", "VII", "VI", "V"),
        ("i", "iv", "VII", "III"),
        ("i", "VI", "iv", "V"),
        ("i", "III", "VII", "iv"),
        ("VI", "VII", "i", "v"),
    ),
}
_BAR_RHYTHMS = ((4,), (2, 2), (2, 1, 1), (1, 1, 2))
_BAR_RHYTHM_P = (0.72, 0.2, 0.04, 0.04)
"""How a bar's 4 beats split into chords, and how often."""


class OODSetError(UserError, ValueError):
    """The out-of-domain set is missing, incomplete or its manifest unreadable; the
    message names the path and says how to build it."""


class SynthesisError(UserError, RuntimeError):
    """Rendering failed: ``fluidsynth`` or a soundfont missing, or ``fluidsynth`` failing;
    the message names the program or file and what to install."""


class SynthesisUnavailable(SynthesisError):
    """This machine cannot build the set: ``fluidsynth`` or one of the default (Debian)
    soundfonts is not installed. The message says what is missing and how to get it
    (:func:`missing_tools`); ``chordrec data synth --optional`` (what ``make data`` runs)
    skips the set then, and a run with ``ood.part=auto`` scores no out-of-domain songs."""


# --------------------------------------------------------------------------- chords


@dataclass(frozen=True)
class Chord:
    """A chord: ``root`` pitch class (0 = C), a ``minor`` or major triad, an optional
    ``seventh`` quality (``"7"``, ``"maj7"``, ``"min7"``) and the ``bass`` as semitones
    above the root (0 root position, 3 or 4 the third, 7 the fifth)."""

    root: int
    minor: bool
    seventh: str | None = None
    bass: int = 0

    @property
    def quality(self) -> str:
        """The Harte quality: ``maj``, ``min``, ``7``, ``maj7`` or ``min7``."""
        return self.seventh or ("min" if self.minor else "maj")

    @property
    def intervals(self) -> tuple[int, ...]:
        """Semitones above the root of the chord's tones."""
        triad = (0, 3 if self.minor else 4, 7)
        return triad if self.seventh is None else (*triad, _SEVENTHS[self.seventh])

    @property
    def tones(self) -> frozenset[int]:
        """The chord's pitch classes."""
        return frozenset((self.root + i) % 12 for i in self.intervals)

    @property
    def bass_pc(self) -> int:
        """The pitch class the bass plays."""
        return (self.root + self.bass) % 12

    @property
    def label(self) -> str:
        """The Harte label, e.g. ``C#:min``, ``G:7/3``, ``A:min7/b3``."""
        inversion = "" if self.bass == 0 else f"/{_INTERVAL_NAMES[self.bass]}"
        return f"{PITCH_CLASSES[self.root]}:{self.quality}{inversion}"


def degree_chord(key: int, mode: str, name: str) -> Chord:
    """The triad of degree ``name`` (``"IV"``, ``"bVII"``...) of the key with tonic
    pitch class ``key`` in ``mode`` (``"major"`` or ``"minor"``), root position."""
    offset, minor, _ = {**_DEGREES[mode], **_BORROWED[mode]}[name]
    return Chord((key + offset) % 12, minor)


def decorate(rng: np.random.Generator, key: int, mode: str, name: str) -> Chord:
    """The chord of degree ``name`` with, at random, its diatonic seventh
    (:data:`P_SEVENTH`) and an inversion (:data:`P_INVERSION`: third or fifth in the bass)."""
    offset, minor, seventh = {**_DEGREES[mode], **_BORROWED[mode]}[name]
    with_seventh = seventh if rng.random() < P_SEVENTH else None
    bass = 0
    if rng.random() < P_INVERSION:
        bass = int(rng.choice([3 if minor else 4, 7]))
    return Chord((key + offset) % 12, minor, with_seventh, bass)


def _draw_phrase_degrees(rng: np.random.Generator, mode: str) -> list[str]:
    """Four bars' degrees: a common progression or a random diatonic walk, with an
    occasional borrowed chord; no degree follows itself."""
    if rng.random() < 0.6:
        phrases = _PHRASES[mode]
        names = list(phrases[int(rng.integers(len(phrases)))])
    else:
        diatonic = list(_DEGREES[mode])
        names = [_TONIC[mode] if rng.random() < 0.5 else str(rng.choice(diatonic))]
        while len(names) < 4:
            names.append(str(rng.choice([d for d in diatonic if d != names[-1]])))
    borrowed = list(_BORROWED[mode])
    for i in range(1, 4):
        if rng.random() < P_BORROWED:
            options = [b for b in borrowed if b != names[i - 1] and (i == 3 or b != names[i + 1])]
            if options:
                names[i] = str(rng.choice(options))
    return names


def draw_phrase(rng: np.random.Generator, key: int, mode: str) -> list[list[tuple[Chord, int]]]:
    """Four bars of chords: per bar a list of ``(chord, beats)`` that fills its 4 beats
    (mostly one chord; 2+2, 2+1+1 or 1+1+2 beats at times, the extra chords diatonic)."""
    names = _draw_phrase_degrees(rng, mode)
    diatonic = list(_DEGREES[mode])
    bars = []
    for i, name in enumerate(names):
        rhythm = _BAR_RHYTHMS[int(rng.choice(len(_BAR_RHYTHMS), p=_BAR_RHYTHM_P))]
        following = names[i + 1] if i + 1 < len(names) else None
        bar_names = [name]
        for _ in rhythm[1:]:
            options = [d for d in diatonic if d not in (bar_names[-1], following)]
            bar_names.append(str(rng.choice(options)))
        bars.append(
            [
                (decorate(rng, key, mode, n), beats)
                for n, beats in zip(bar_names, rhythm, strict=True)
            ]
        )
    return bars


# --------------------------------------------------------------------------- time


def seconds_at(tempo_map: Sequence[tuple[int, int]], tick: int) -> float:
    """Seconds from the start to ``tick`` under ``tempo_map``: ``(tick, microseconds per
    beat)`` pairs in increasing tick order, the first at tick 0 (the MIDI tempo map)."""
    seconds = 0.0
    for i, (start, tempo) in enumerate(tempo_map):
        stop = tempo_map[i + 1][0] if i + 1 < len(tempo_map) else math.inf
        if tick <= start:
            break
        seconds += (min(tick, stop) - start) * tempo / (1e6 * TICKS_PER_BEAT)
    return seconds


def _ticks(seconds: float, tempo: int) -> int:
    """``seconds`` in whole ticks at ``tempo`` microseconds per beat."""
    return round(seconds * 1e6 * TICKS_PER_BEAT / tempo)


def _tempo(bpm: float) -> int:
    """Beats per minute as a MIDI tempo, microseconds per beat."""
    return round(60e6 / bpm)


# --------------------------------------------------------------------------- song plan


@dataclass(frozen=True)
class Segment:
    """Ticks ``[start, end)`` of one chord, or of no chord (``chord`` None)."""

    start: int
    end: int
    chord: Chord | None


@dataclass(frozen=True)
class Note:
    """One note of a part: MIDI ``pitch``, ticks ``[start, end)``, ``velocity`` 1-127."""

    pitch: int
    start: int
    end: int
    velocity: int


@dataclass(frozen=True)
class Song:
    """A drawn song, everything the MIDI file, labels and manifest are made of.

    ``tempo_map``: ``(tick, microseconds per beat)``; ``segments`` tile ticks
    ``[0, chords_end)``, ``eot`` the tick of the end of the track; ``bend`` the pitch
    bend (-8192..8191) of the melodic channels, ``tuning_cents`` what it is in cents;
    ``programs``: General MIDI program (0-based) per part, drums 0 (standard kit);
    ``parts``: the notes of each part present (``chords``, ``bass``, ``melody``,
    ``drums``); ``soundfont`` a path; ``gain`` ``fluidsynth``'s master gain."""

    name: str
    key: int
    mode: str
    tempo_map: tuple[tuple[int, int], ...]
    segments: tuple[Segment, ...]
    chords_end: int
    eot: int
    bend: int
    tuning_cents: float
    programs: Mapping[str, int]
    styles: Mapping[str, str]
    parts: Mapping[str, tuple[Note, ...]]
    volumes: Mapping[str, tuple[int, int]]
    soundfont: Path
    gain: float

    @property
    def midi_seconds(self) -> float:
        """Length of the MIDI file, seconds: up to its end of track."""
        return seconds_at(self.tempo_map, self.eot)

    @property
    def duration(self) -> float:
        """Length of the rendered audio and of the labels, seconds."""
        return self.midi_seconds + RENDER_TAIL_S

    @property
    def key_name(self) -> str:
        """The key's pitch-class name, e.g. ``C#``."""
        return PITCH_CLASSES[self.key]


@dataclass(frozen=True)
class _Form:
    """The song's bars and tempi: ``bars`` of ``(chord or None, beats)`` lists starting
    at tick ``first_bar``; ``tempo_map`` as in :class:`Song`."""

    first_bar: int
    bars: tuple[tuple[tuple[Chord | None, int], ...], ...]
    tempo_map: tuple[tuple[int, int], ...]


def _draw_tempi(rng: np.random.Generator) -> tuple[int, int | None]:
    """The tempo (microseconds per beat) and, for about a third of the songs, the tempo
    after the change (10-25 % faster or slower, flipped to stay within 60-190 BPM)."""
    bpm = float(rng.uniform(*TEMPO_BPM))
    if rng.random() >= P_TEMPO_CHANGE:
        return _tempo(bpm), None
    change = float(rng.uniform(*TEMPO_CHANGE)) * (1 if rng.random() < 0.5 else -1)
    if not 60 <= bpm * (1 + change) <= 190:
        change = -change
    return _tempo(bpm), _tempo(bpm * (1 + change))


def _phrase_bars(
    rng: np.random.Generator, key: int, mode: str
) -> Iterator[list[tuple[Chord, int]]]:
    """Bars of the song's two phrases, A A B B A A B B ... (B sometimes A again)."""
    a = draw_phrase(rng, key, mode)
    b = draw_phrase(rng, key, mode) if rng.random() < 0.8 else a
    while True:
        for phrase in (a, a, b, b):
            yield from phrase


def _draw_form(
    rng: np.random.Generator,
    key: int,
    mode: str,
    drums: bool,
    song_seconds: tuple[float, float],
) -> _Form:
    """The bars: an optional drum-only intro, phrases (an optional drum-only break at a
    phrase boundary past 40 % of the song), a closing tonic bar; as many as fit the
    length drawn from ``song_seconds``, and enough to last its lower end (at least one
    phrase bar and the tonic bar)."""
    target = float(rng.uniform(*song_seconds))
    tempo, changed = _draw_tempi(rng)
    change_at = target * float(rng.uniform(0.35, 0.65))
    first_bar = _ticks(float(rng.uniform(*LEAD_SECONDS)), tempo)
    intro = int(rng.integers(1, 3)) if drums and rng.random() < P_INTRO else 0
    break_bars = int(rng.integers(1, 3)) if drums and rng.random() < P_BREAK else 0

    tempo_map = [(0, tempo)]
    bars: list[tuple[tuple[Chord | None, int], ...]] = [((None, BEATS_PER_BAR),)] * intro
    phrases = _phrase_bars(rng, key, mode)
    tonic = ((degree_chord(key, mode, _TONIC[mode]), BEATS_PER_BAR),)

    def now() -> float:
        return seconds_at(tempo_map, first_bar + len(bars) * BAR)

    def bar_seconds() -> float:
        return BAR * tempo_map[-1][1] / (1e6 * TICKS_PER_BEAT)

    chord_bars = 0
    while True:
        if changed is not None and len(tempo_map) == 1 and now() >= change_at:
            tempo_map.append((first_bar + len(bars) * BAR, changed))
        tail = END_GAP_S + RENDER_TAIL_S
        long_enough = now() + bar_seconds() + tail >= song_seconds[0]
        if chord_bars and long_enough and now() + 2 * bar_seconds() + tail > target:
            break
        fits = now() + (break_bars + 2) * bar_seconds() + tail <= target
        if break_bars and chord_bars and chord_bars % 4 == 0 and now() > 0.4 * target and fits:
            bars.extend([((None, BEATS_PER_BAR),)] * break_bars)
            break_bars = 0
            continue
        bars.append(tuple(next(phrases)))
        chord_bars += 1
    bars.append(tonic)
    return _Form(first_bar, tuple(bars), tuple(tempo_map))


def _form_segments(form: _Form) -> tuple[Segment, ...]:
    """The segments of a form, ticks ``[0, end of the last bar)``: the leading silence
    (N), then one per chord or drum-only bar (N)."""
    segments = [Segment(0, form.first_bar, None)]
    tick = form.first_bar
    for bar in form.bars:
        for chord, beats in bar:
            segments.append(Segment(tick, tick + beats * TICKS_PER_BEAT, chord))
            tick += beats * TICKS_PER_BEAT
    return tuple(segments)


# --------------------------------------------------------------------------- parts


def _velocity(rng: np.random.Generator, base: int, spread: int = 8) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 1, 127))


def voicing(rng: np.random.Generator, chord: Chord) -> list[int]:
    """The chord instrument's pitches, ascending: the chord's tones in close position
    from the root above :data:`_CHORD_REGISTER`'s low end, rotated up 0-2 times."""
    low, high = _CHORD_REGISTER
    root = low + (chord.root - low) % 12
    pitches = sorted(root + i for i in chord.intervals)
    for _ in range(int(rng.integers(0, 3))):
        if pitches[0] + 12 <= high:
            pitches = sorted(pitches[1:] + [pitches[0] + 12])
    return pitches


def chord_part(
    rng: np.random.Generator, segments: Sequence[Segment], style: str, velocity: int
) -> list[Note]:
    """The chord instrument: ``style`` ``sustained`` (held through each chord),
    ``block`` (struck on the beats) or ``arpeggio`` (its tones in eighths or sixteenths,
    up or up and down)."""
    notes: list[Note] = []
    length = float(rng.uniform(0.5, 0.9))
    step = int(rng.choice([TICKS_PER_BEAT // 2, TICKS_PER_BEAT // 4]))
    updown = bool(rng.random() < 0.5)
    for seg in segments:
        if seg.chord is None:
            continue
        pitches = voicing(rng, seg.chord)
        if style == "sustained":
            vel = _velocity(rng, velocity)
            notes.extend(Note(p, seg.start, seg.end, vel) for p in pitches)
        elif style == "block":
            for beat in range(seg.start, seg.end, TICKS_PER_BEAT):
                if beat == seg.start or rng.random() < 0.85:
                    vel = _velocity(rng, velocity)
                    end = beat + round(length * TICKS_PER_BEAT)
                    notes.extend(Note(p, beat, end, vel) for p in pitches)
        else:
            cycle = pitches + [pitches[0] + 12]
            if updown:
                cycle = cycle + cycle[-2:0:-1]
            for i, tick in enumerate(range(seg.start, seg.end, step)):
                notes.append(
                    Note(cycle[i % len(cycle)], tick, tick + step, _velocity(rng, velocity))
                )
    return notes


def bass_part(
    rng: np.random.Generator, segments: Sequence[Segment], style: str, velocity: int
) -> list[Note]:
    """The bass on each chord's bass note (E1-D#2), at the chord's start and then by
    ``style`` (``whole``, ``half``, ``quarters``, ``root_fifth``, ``eighths``); on root
    position chords also the fifth or the octave at times, on inversions only the bass
    note (or its octave)."""
    step = {"whole": 4, "half": 2, "quarters": 1, "root_fifth": 2, "eighths": 0.5}[style]
    step_ticks = round(step * TICKS_PER_BEAT)
    length = float(rng.uniform(0.6, 0.95))
    notes: list[Note] = []
    for seg in segments:
        if seg.chord is None:
            continue
        bass = _BASS_LOW + (seg.chord.bass_pc - _BASS_LOW) % 12
        others = [bass + 12] if seg.chord.bass else [bass + 7, bass + 12]
        for i, tick in enumerate(range(seg.start, seg.end, step_ticks)):
            pitch = bass
            if i and (style == "root_fifth" or rng.random() < 0.15):
                pitch = others[int(rng.integers(len(others)))] if i % 2 else bass
            end = seg.end if style == "whole" else min(seg.end, tick + round(length * step_ticks))
            notes.append(Note(pitch, tick, end, _velocity(rng, velocity)))
    return notes


def melody_part(
    rng: np.random.Generator,
    segments: Sequence[Segment],
    key: int,
    mode: str,
    velocity: int,
) -> list[Note]:
    """A melody (D4-D6) of chord tones near the previous note, in eighths, quarters or
    halves per chord, with rests; an off-beat eighth is at times a passing tone (a
    scale tone that is not a chord tone, a step from the previous note)."""
    low, high = _MELODY_REGISTER
    scale = {(key + s) % 12 for s in _SCALES[mode]}
    previous = (low + high) // 2
    notes: list[Note] = []
    for seg in segments:
        if seg.chord is None:
            continue
        chord_pitches = np.array([p for p in range(low, high + 1) if p % 12 in seg.chord.tones])
        step = int(rng.choice([TICKS_PER_BEAT // 2, TICKS_PER_BEAT, 2 * TICKS_PER_BEAT]))
        step = min(step, seg.end - seg.start)
        for tick in range(seg.start, seg.end, step):
            if rng.random() < 0.2:
                continue
            passing = [
                p
                for p in (previous - 2, previous - 1, previous + 1, previous + 2)
                if p % 12 in scale and p % 12 not in seg.chord.tones and low <= p <= high
            ]
            offbeat = (tick - seg.start) % TICKS_PER_BEAT == TICKS_PER_BEAT // 2
            if offbeat and passing and rng.random() < 0.3:
                pitch = int(rng.choice(passing))
            else:
                weights = np.exp(-np.abs(chord_pitches - previous) / 4.0)
                pitch = int(rng.choice(chord_pitches, p=weights / weights.sum()))
            end = min(seg.end, tick + round(step * float(rng.uniform(0.7, 1.0))))
            notes.append(Note(pitch, tick, end, _velocity(rng, velocity)))
            previous = pitch
    return notes


def drum_part(rng: np.random.Generator, first_bar: int, bars: int, velocity: int) -> list[Note]:
    """Drums over ``bars`` bars from tick ``first_bar``: a kick pattern, a snare on beats
    2 and 4, hi-hat or ride in eighths or quarters, accents on the beats; hits last a
    sixteenth."""
    kicks = KICK_PATTERNS[int(rng.integers(len(KICK_PATTERNS)))]
    snare = SNARES[int(rng.integers(len(SNARES)))]
    hat, hat_eighths = HATS[int(rng.integers(len(HATS)))]
    eighth = TICKS_PER_BEAT // 2
    notes: list[Note] = []
    for bar in range(bars):
        start = first_bar + bar * BAR
        for e in range(8):
            tick = start + e * eighth
            accent = 10 if e % 2 == 0 else 0
            hits = [KICK] * (e in kicks) + [snare] * (e in (2, 6)) + [hat] * (e in hat_eighths)
            notes.extend(
                Note(p, tick, tick + eighth // 2, _velocity(rng, velocity + accent)) for p in hits
            )
    return notes


# --------------------------------------------------------------------------- a song


def _draw_programs(
    rng: np.random.Generator, chord_programs: Mapping[str, Sequence[int]]
) -> tuple[str, dict[str, int]]:
    family = list(chord_programs)[int(rng.integers(len(chord_programs)))]
    programs = {
        "chords": int(rng.choice(chord_programs[family])),
        "bass": int(rng.choice(BASS_PROGRAMS)),
        "melody": int(rng.choice(MELODY_PROGRAMS)),
        "drums": 0,
    }
    return family, programs


def draw_song(
    rng: np.random.Generator,
    name: str,
    soundfonts: Sequence[Path],
    song_seconds: tuple[float, float] = SONG_SECONDS,
    chord_programs: Mapping[str, Sequence[int]] = CHORD_PROGRAMS,
) -> Song:
    """Draw one song from ``rng`` (see the module's description); ``soundfonts``: the
    files to draw its soundfont from; ``song_seconds``: the range of its length;
    ``chord_programs``: the chord instrument's families and their General MIDI programs.

    Pure: the same generator state and arguments give the same song."""
    key = int(rng.integers(12))
    mode = "major" if rng.random() < 0.5 else "minor"
    drums = bool(rng.random() < P_DRUMS)
    melody = bool(rng.random() < P_MELODY)
    form = _draw_form(rng, key, mode, drums, song_seconds)
    segments = _form_segments(form)
    chords_end = segments[-1].end
    end_gap = _ticks(END_GAP_S, form.tempo_map[-1][1])
    cents = float(rng.uniform(-TUNING_CENTS, TUNING_CENTS))
    bend = int(np.clip(round(cents / BEND_RANGE_CENTS * 8192), -8192, 8191))
    family, programs = _draw_programs(rng, chord_programs)
    styles = {
        "chords": str(rng.choice(COMPING)),
        "chord_family": family,
        "bass": str(rng.choice(BASS_STYLES)),
    }
    base = {part: int(rng.integers(60, 111)) for part in CHANNELS}
    parts = {
        "chords": tuple(chord_part(rng, segments, styles["chords"], base["chords"])),
        "bass": tuple(bass_part(rng, segments, styles["bass"], base["bass"])),
    }
    if melody:
        parts["melody"] = tuple(melody_part(rng, segments, key, mode, base["melody"]))
    if drums:
        parts["drums"] = tuple(drum_part(rng, form.first_bar, len(form.bars), base["drums"]))
    volumes = {part: (int(rng.integers(85, 121)), int(rng.integers(34, 95))) for part in parts}
    for part in ("bass", "drums"):
        if part in volumes:
            volumes[part] = (volumes[part][0], 64)  # centred
    soundfont = soundfonts[int(rng.integers(len(soundfonts)))]
    gain = round(float(rng.uniform(*GAIN)), 3)
    return Song(
        name=name,
        key=key,
        mode=mode,
        tempo_map=form.tempo_map,
        segments=segments,
        chords_end=chords_end,
        eot=chords_end + end_gap,
        bend=bend,
        tuning_cents=bend * BEND_RANGE_CENTS / 8192,
        programs={part: programs[part] for part in parts},
        styles=styles,
        parts=parts,
        volumes=volumes,
        soundfont=Path(soundfont),
        gain=gain,
    )


def song_rng(seed: int, part: str, index: int) -> np.random.Generator:
    """The random stream of song ``index`` of ``part``: ``SeedSequence(seed, spawn_key=
    (part key, index))``, the part key the first 4 bytes of the part name's sha256."""
    part_key = int.from_bytes(hashlib.sha256(part.encode()).digest()[:4], "big")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(part_key, index)))


# --------------------------------------------------------------------------- files


def mido_module() -> ModuleType:
    """The ``mido`` module, imported now; :class:`~chordrec.extras.MissingExtra` naming
    the ``[synth]`` extra when it is not installed (a core install never writes MIDI)."""
    require_extra("synth", "synthesizing the out-of-domain songs (chordrec data synth)")
    import mido

    return mido


def song_midi(song: Song) -> bytes:
    """The song as a type-1 Standard MIDI File: a conductor track (4/4, tempi), then
    one track per part named after it (``chords``, ``bass``, ``melody``, ``drums``).

    Each part's track sets its program, volume, pan and (melodic parts) pitch-bend
    range and tuning bend at tick 0, and ends with All Sound Off on its channel at the
    end of the track, which every track shares (tick ``song.eot``)."""
    mido = mido_module()
    conductor = [
        (0, 1, mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0)),
        *((tick, 1, mido.MetaMessage("set_tempo", tempo=tempo)) for tick, tempo in song.tempo_map),
    ]
    tracks = [_track("conductor", conductor, song.eot)]
    for part, notes in song.parts.items():
        tracks.append(_track(part, _part_events(song, part, notes), song.eot))
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.extend(tracks)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def _part_events(song: Song, part: str, notes: Sequence[Note]) -> list[tuple[int, int, Any]]:
    """``(tick, order, message)`` of one part: setup at tick 0, notes, All Sound Off at
    the end. At one tick, note-offs (order 0) precede other messages (1) and note-ons (2)."""
    mido = mido_module()
    ch = CHANNELS[part]
    volume, pan = song.volumes[part]

    def cc(control: int, value: int, tick: int = 0) -> tuple[int, int, Any]:
        return (tick, 1, mido.Message("control_change", channel=ch, control=control, value=value))

    events = [
        (0, 1, mido.Message("program_change", channel=ch, program=song.programs[part])),
        cc(7, volume),
        cc(10, pan),
    ]
    if part in MELODIC_PARTS:
        semitones = round(BEND_RANGE_CENTS / 100)
        events += [cc(101, 0), cc(100, 0), cc(6, semitones), cc(38, 0), cc(101, 127), cc(100, 127)]
        events.append((0, 1, mido.Message("pitchwheel", channel=ch, pitch=song.bend)))
    for n in notes:
        events.append(
            (n.start, 2, mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity))
        )
        events.append((n.end, 0, mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))
    events.append(cc(120, 0, song.eot))
    return events


def _track(name: str, events: Sequence[tuple[int, int, Any]], eot: int) -> mido.MidiTrack:
    """A track of ``events`` (``(tick, order, message)``, sorted here, stably), ending
    at tick ``eot``."""
    mido = mido_module()
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=eot - now))
    return track


def song_labels(song: Song) -> tuple[np.ndarray, list[str]]:
    """The song's chord segments in seconds: intervals, shape (segments, 2), float64,
    tiling ``[0, song.duration]``, and their Harte labels; neighbours with the same
    label are merged, and the last ``N`` runs to the end of the rendered audio."""
    bounds: list[list[float]] = []
    labels: list[str] = []
    pieces = [(s.start, s.end, s.chord.label if s.chord else "N") for s in song.segments]
    pieces.append((song.chords_end, song.eot, "N"))
    for start, end, label in pieces:
        t0, t1 = seconds_at(song.tempo_map, start), seconds_at(song.tempo_map, end)
        if labels and labels[-1] == label:
            bounds[-1][1] = t1
        else:
            bounds.append([t0, t1])
            labels.append(label)
    bounds[-1][1] = song.duration
    return np.asarray(bounds, dtype=np.float64), labels


def song_lab(song: Song) -> str:
    """The song's MIREX ``.lab`` text (:func:`song_labels` through ``format_lab``)."""
    return format_lab(*song_labels(song))


def song_metadata(song: Song) -> dict[str, Any]:
    """What the manifest records of a song (without its files)."""
    tempi = [
        [round(seconds_at(song.tempo_map, t), 6), round(60e6 / us, 3)] for t, us in song.tempo_map
    ]
    labels = song_labels(song)[1]
    return {
        "name": song.name,
        "key": song.key_name,
        "mode": song.mode,
        "tempi": tempi,
        "tuning_cents": round(song.tuning_cents, 3),
        "pitch_bend": song.bend,
        "soundfont": song.soundfont.name,
        "gain": song.gain,
        "programs": dict(song.programs),
        "styles": dict(song.styles),
        "chords": sum(label != "N" for label in labels),
        "duration": round(song.duration, 6),
    }


# --------------------------------------------------------------------------- rendering


def fluidsynth_program() -> str:
    """The path of the ``fluidsynth`` program; SynthesisUnavailable saying how to get it
    when it is not on ``PATH``."""
    program = shutil.which(FLUIDSYNTH)
    if program is None:
        raise SynthesisUnavailable(f"cannot build the out-of-domain set: {missing_tools([])}")
    return program


def fluidsynth_version(program: str) -> str:
    """``fluidsynth --version``'s version number (``"2.3.1"``), or its first line."""
    result = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    first = (result.stdout or result.stderr).strip().splitlines()[:1]
    match = re.search(r"version\s+(\S+)", first[0]) if first else None
    return match.group(1) if match else (first[0] if first else "unknown")


def default_soundfonts() -> list[Path]:
    """The soundfonts a build uses unless told: those named in :data:`SOUNDFONTS_ENV`
    when it is set (and not empty), else those of :data:`DEBIAN_SOUNDFONTS`."""
    named = [p for p in os.environ.get(SOUNDFONTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(p) for p in named] if named else [sf.path for sf in DEBIAN_SOUNDFONTS]


def soundfont_paths(soundfonts: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    """The soundfont files to draw from: ``soundfonts`` as absolute paths, or (``None``)
    :func:`default_soundfonts`. ValueError when there are none or two share a file name
    (the manifest records the names)."""
    if soundfonts is None:
        soundfonts = default_soundfonts()
    paths = [Path(p).expanduser().absolute() for p in soundfonts]
    names = [p.name for p in paths]
    if not paths or len(set(names)) != len(names):
        raise ValueError(f"soundfonts must be files with distinct names, at least one, got {names}")
    return paths


def check_soundfonts(paths: Sequence[Path]) -> None:
    """SynthesisError naming the first of ``paths`` that is not a file and is not one of
    :data:`DEBIAN_SOUNDFONTS` (a soundfont named on purpose; a Debian one that is not
    installed is for :func:`missing_tools`)."""
    debian = {sf.path for sf in DEBIAN_SOUNDFONTS}
    for path in paths:
        if not path.is_file() and path not in debian:
            named = f" (named in ${SOUNDFONTS_ENV})" if os.environ.get(SOUNDFONTS_ENV) else ""
            raise SynthesisError(f"soundfont {path} not found{named}")


def missing_tools(soundfonts: Sequence[str | os.PathLike[str]] | None = None) -> str | None:
    """What keeps this machine from building the set with ``soundfonts`` (default
    :func:`default_soundfonts`), in one line with how to get it, e.g. ``fluidsynth not
    installed; apt-get install fluidsynth fluid-soundfont-gm (elsewhere: ...), then make
    data``; ``None`` when nothing is missing (an empty ``soundfonts``: the program only).
    SynthesisError naming a soundfont that was named on purpose (not one of
    :data:`DEBIAN_SOUNDFONTS`) and is not a file."""
    paths = soundfont_paths(soundfonts) if soundfonts is None or soundfonts else []
    check_soundfonts(paths)
    missing, packages = [], []
    if shutil.which(FLUIDSYNTH) is None:
        missing.append(f"{FLUIDSYNTH} not installed (not on PATH)")
        packages.append(FLUIDSYNTH_PACKAGE)
    for sf in DEBIAN_SOUNDFONTS:
        if sf.path in paths and not sf.path.is_file():
            missing.append(f"soundfont {sf.path} missing")
            packages.append(sf.package or sf.path.name)
    if not missing:
        return None
    return (
        f"{', '.join(missing)}; apt-get install {' '.join(packages)} (elsewhere: fluidsynth "
        f"from your package manager, and General MIDI soundfonts named with --soundfont or "
        f"${SOUNDFONTS_ENV}), then make data"
    )


def render(program: str, song: Song, midi: Path, audio: Path) -> None:
    """Render ``midi`` (the file of ``song``) to the FLAC file ``audio`` at 44.1 kHz with
    the song's soundfont and gain, and check that it lasts ``song.duration`` (within
    :data:`DURATION_TOLERANCE_S`). SynthesisError naming the song, its soundfont and the
    problem (the files are in a temporary directory that a failed build removes)."""
    what = f"song {song.name} ({midi.name} with {song.soundfont})"
    command = [
        program,
        "-n",
        "-i",
        "-q",
        "-f",
        os.devnull,  # no configuration file: the same settings wherever it runs
        "-F",
        str(audio),
        "-T",
        "flac",
        "-r",
        str(SAMPLE_RATE),
        "-g",
        f"{song.gain:g}",
        str(song.soundfont),
        str(midi),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SynthesisError(
            f"{what}: {FLUIDSYNTH} took more than {RENDER_TIMEOUT_S:g} s to render it"
        ) from None
    if result.returncode != 0 or not audio.is_file() or audio.stat().st_size == 0:
        detail = " ".join((result.stderr or result.stdout).split())[-500:]
        raise SynthesisError(
            f"{what}: {FLUIDSYNTH} failed (exit status {result.returncode}): {detail or 'no output'}"
        )
    seconds = flac_seconds(audio)
    if abs(seconds - song.duration) > DURATION_TOLERANCE_S:
        raise SynthesisError(
            f"{what}: {FLUIDSYNTH} rendered {seconds:.3f} s but the labels end at "
            f"{song.duration:.3f} s; chordrec expects {FLUIDSYNTH} to render {RENDER_TAIL_S:g} s "
            f"past the end of the MIDI track once no voice sounds, as {FLUIDSYNTH} 2.3 does"
        )


def flac_seconds(path: Path) -> float:
    """The length in seconds of a FLAC file, from its STREAMINFO block (sample rate and
    total samples; the FLAC format's first metadata block). ValueError naming the file
    when it does not start like a FLAC file or does not say its length."""
    with open(path, "rb") as f:
        head = f.read(4 + 4 + 34)
    if len(head) < 42 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        raise ValueError(f"{path}: not a FLAC file (no STREAMINFO block at its start)")
    info = int.from_bytes(head[18:26], "big")  # rate 20 bits, channels 3, depth 5, samples 36
    rate, samples = info >> 44, info & ((1 << 36) - 1)
    if rate == 0 or samples == 0:
        raise ValueError(f"{path}: its FLAC header does not give its length")
    return samples / rate


# --------------------------------------------------------------------------- the set


@dataclass(frozen=True)
class SetKind:
    """A kind of synthesized set that :func:`build_set` and :func:`ensure_set` build
    and keep.

    ``noun`` and its ``article`` as messages say it (``an out-of-domain set``);
    ``generator``: the module that builds it, which its manifest names (a directory
    whose manifest names another is never replaced); ``command``: how to build it into
    ``{dest}``; ``files``: the kinds of file every song of its manifest lists; ``error``:
    what is raised when the set is missing, damaged or does not match."""

    noun: str
    article: str
    generator: str
    command: str
    files: tuple[str, ...]
    error: type[UserError]

    @property
    def directory(self) -> str:
        """The directories a build replaces besides empty ones, as error messages name them."""
        return f"{self.article} {self.noun} it built (recognised by its {MANIFEST_FILE})"

    def holds(self, root: Path) -> bool:
        """Whether ``root`` holds a set of this kind, whole, damaged or stale: its
        :data:`MANIFEST_FILE` is a JSON object naming :attr:`generator`."""
        try:
            manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(manifest, dict) and manifest.get("generator") == self.generator

    def hint(self, root: Path) -> str:
        """How to build the set in ``root``, and what this machine lacks to do so."""
        hint = f"build it with `make data` (or `{self.command.format(dest=root)}`)"
        try:
            missing = missing_tools()
        except SynthesisError as exc:
            missing = str(exc)
        if missing is None:
            return hint
        return f"{hint}, which needs what this machine lacks: {missing}"


OOD_SET = SetKind(
    noun="out-of-domain set",
    article="an",
    generator=__name__,
    command="chordrec data synth --dest {dest}",
    files=("audio", "lab", "midi"),
    error=OODSetError,
)
"""The out-of-domain set (:func:`build_ood_set`): each song's FLAC, ``.lab`` and MIDI."""


@dataclass(frozen=True)
class SetSettings:
    """What a set is built from; a manifest that records other settings is stale."""

    seed: int
    songs_per_part: int
    parts: tuple[str, ...]
    soundfonts: tuple[Path, ...]
    song_seconds: tuple[float, float]

    def recorded(self) -> dict[str, Any]:
        """The settings as the manifest records them (the parts apart)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "seed": self.seed,
            "songs_per_part": self.songs_per_part,
            "soundfonts": [p.name for p in self.soundfonts],
            "song_seconds": list(self.song_seconds),
        }


def set_settings(
    seed: int,
    songs_per_part: int,
    parts: Sequence[str],
    soundfonts: Sequence[str | os.PathLike[str]] | None,
    song_seconds: tuple[float, float],
) -> SetSettings:
    """Validate a build's settings (ValueError naming the setting)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        isinstance(songs_per_part, bool)
        or not isinstance(songs_per_part, int)
        or songs_per_part < 1
    ):
        raise ValueError(f"songs_per_part must be a positive integer, got {songs_per_part!r}")
    parts = tuple(parts)
    if not parts or len(set(parts)) != len(parts):
        raise ValueError(f"parts must be distinct names, at least one, got {list(parts)}")
    for part in parts:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", str(part)):
            raise ValueError(f"part names are lowercase words (a-z, 0-9, _ or -), got {part!r}")
    low, high = (float(s) for s in song_seconds)
    if not 0 < low <= high:
        raise ValueError(
            f"song_seconds must be (low, high) with 0 < low <= high, got {song_seconds}"
        )
    return SetSettings(seed, songs_per_part, parts, tuple(soundfont_paths(soundfonts)), (low, high))


def draw_set_songs(
    settings: SetSettings, chord_programs: Mapping[str, Sequence[int]] = CHORD_PROGRAMS
) -> dict[str, list[Song]]:
    """Every song of a set, by part, in order, the chord instrument drawn from
    ``chord_programs`` (pure)."""
    fonts = list(settings.soundfonts)
    return {
        part: [
            draw_song(
                song_rng(settings.seed, part, i),
                f"{part}-{i:03d}",
                fonts,
                settings.song_seconds,
                chord_programs,
            )
            for i in range(settings.songs_per_part)
        ]
        for part in settings.parts
    }


def build_set(
    dest: str | os.PathLike[str],
    kind: SetKind,
    settings: SetSettings,
    fill: Callable[[Path, str], Mapping[str, Any]],
) -> Path:
    """Build a set of ``kind`` into ``dest``, replacing an earlier one there.

    ``dest`` must be missing, empty, or a set of ``kind`` (:meth:`SetKind.holds`); any
    other directory is refused before anything is rendered. ``fill(tmp, program)``
    writes the songs into ``tmp``, a temporary directory beside ``dest``
    (``.<name>.partial-XXXX``), with the ``fluidsynth`` program ``program``, and returns
    what the manifest records beyond the generator, the settings, the ``fluidsynth``
    version and the sample rate (``parts`` among it). The manifest is written last and
    ``tmp`` renamed into place (an earlier set moved aside, then deleted), so ``dest`` is
    never half-written; a failure removes ``tmp``. Returns ``dest`` (absolute).

    Raises
    ------
    SynthesisUnavailable
        ``fluidsynth`` or a default soundfont not installed (:func:`missing_tools`).
    ForeignDirectoryError
        ``dest`` is neither missing, empty nor a set of ``kind``; it is left as it was.
    """
    dest = Path(dest).expanduser().absolute()
    check_replaceable(dest, kind.holds, kind.directory)
    missing = missing_tools(settings.soundfonts)
    if missing is not None:
        raise SynthesisUnavailable(f"cannot build the {kind.noun} in {dest}: {missing}")
    program = fluidsynth_program()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        recorded = fill(tmp, program)
        manifest = {
            "generator": kind.generator,
            **settings.recorded(),
            "fluidsynth": fluidsynth_version(program),
            "sample_rate": SAMPLE_RATE,
            **recorded,
        }
        text = json.dumps(manifest, indent=2) + "\n"
        write_atomic(tmp / MANIFEST_FILE, lambda path: path.write_text(text, encoding="utf-8"))
        os.chmod(tmp, default_dir_mode())
        install_directory(tmp, dest, kind.holds, kind.directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def build_ood_set(
    dest: str | os.PathLike[str],
    seed: int = 0,
    songs_per_part: int = OOD_SONGS_PER_PART,
    parts: Sequence[str] = PARTS,
    soundfonts: Sequence[str | os.PathLike[str]] | None = None,
    *,
    song_seconds: tuple[float, float] = SONG_SECONDS,
    workers: int = RENDER_WORKERS,
) -> Path:
    """Synthesize the out-of-domain set into ``dest``, replacing an earlier set there
    (:func:`build_set`: never half-written, never over a directory it did not build).

    Parameters
    ----------
    dest : path
        The set's directory: missing, empty, or a set built here before (its
        :data:`MANIFEST_FILE` written by this module).
    seed : int
        The set's seed: the same seed and settings give the same songs.
    songs_per_part : int
        Songs in each part.
    parts : sequence of str
        The parts (directories), e.g. ``("validation", "test")``.
    soundfonts : sequence of paths, optional
        The soundfonts a song's is drawn from; default :func:`default_soundfonts`
        (:data:`SOUNDFONTS_ENV`, else :data:`DEBIAN_SOUNDFONTS`).
    song_seconds : (float, float)
        The range of the songs' lengths, seconds (short songs for tests; a song has at
        least two bars of chords whatever the range).
    workers : int
        ``fluidsynth`` processes at a time.

    Returns
    -------
    Path
        ``dest`` (absolute), holding ``manifest.json`` and ``<part>/<song>.flac|lab|mid``.

    Raises
    ------
    SynthesisUnavailable
        ``fluidsynth`` or a default soundfont not installed (:func:`missing_tools`).
    SynthesisError
        A soundfont named on purpose missing, or a render failing.
    ForeignDirectoryError
        ``dest`` is neither missing, empty nor a set built here; it is left as it was.
    ValueError
        A setting out of range.
    """
    settings = set_settings(seed, songs_per_part, parts, soundfonts, song_seconds)
    return _build_ood_set(dest, settings, workers)


def _build_ood_set(dest: str | os.PathLike[str], settings: SetSettings, workers: int) -> Path:
    """:func:`build_ood_set` with settings already checked."""
    mido_module()  # before anything is drawn or rendered

    def fill(tmp: Path, program: str) -> dict[str, Any]:
        songs = draw_set_songs(settings)
        log.info(
            "synthesizing %d songs (%s) into %s, %d at a time",
            sum(len(s) for s in songs.values()),
            ", ".join(settings.parts),
            dest,
            workers,
        )
        jobs = [write_song(tmp, part, song) for part in songs for song in songs[part]]
        run_all([lambda job=job: render(program, *job) for job in jobs], workers)
        log_minutes(dest, [song for part in songs.values() for song in part])
        return {
            "parts": {
                part: [song_entry(tmp, song, _ood_files(part, song)) for song in part_songs]
                for part, part_songs in songs.items()
            }
        }

    return build_set(dest, OOD_SET, settings, fill)


def log_minutes(dest: str | os.PathLike[str], songs: Sequence[Song]) -> None:
    """Log how many songs and minutes of audio a set in ``dest`` holds."""
    minutes = sum(song.duration for song in songs) / 60
    log.info("%s: %d songs, %.1f minutes of audio", dest, len(songs), minutes)


def write_song(root: Path, part: str, song: Song) -> tuple[Song, Path, Path]:
    """Write a song's ``.mid`` and ``.lab`` under ``root/part``; return what
    :func:`render` needs: the song, its MIDI file and its audio file to be."""
    folder = root / part
    folder.mkdir(exist_ok=True)
    midi, lab = folder / f"{song.name}.mid", folder / f"{song.name}.lab"
    midi_bytes, lab_text = song_midi(song), song_lab(song)
    write_atomic(midi, lambda path: path.write_bytes(midi_bytes))
    write_atomic(lab, lambda path: path.write_text(lab_text, encoding="utf-8"))
    return song, midi, folder / f"{song.name}.flac"


def run_all(tasks: Sequence[Callable[[], None]], workers: int) -> None:
    """Run ``tasks`` ``workers`` at a time; the first failure cancels the rest and is raised."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _ood_files(part: str, song: Song) -> dict[str, str]:
    """The files of an out-of-domain song by kind, relative to the set."""
    return {
        kind: f"{part}/{song.name}.{suffix}"
        for kind, suffix in (("audio", "flac"), ("lab", "lab"), ("midi", "mid"))
    }


def song_entry(root: Path, song: Song, files: Mapping[str, str]) -> dict[str, Any]:
    """A song's manifest entry: its metadata (:func:`song_metadata`) and its ``files``
    (kind: path relative to ``root``) with their sha256."""
    return {
        **song_metadata(song),
        "files": {
            kind: {"path": rel, "sha256": sha256_file(root / rel)} for kind, rel in files.items()
        },
    }


def ensure_ood_set(
    dest: str | os.PathLike[str] = OOD_DIR,
    seed: int = 0,
    songs_per_part: int = OOD_SONGS_PER_PART,
    parts: Sequence[str] = PARTS,
    soundfonts: Sequence[str | os.PathLike[str]] | None = None,
    *,
    song_seconds: tuple[float, float] = SONG_SECONDS,
    workers: int = RENDER_WORKERS,
    force: bool = False,
) -> Path:
    """Keep the out-of-domain set in ``dest`` if its manifest matches these settings
    (generator version, seed, songs per part, parts, soundfont names, song lengths) and
    every file it lists is there with its sha256; otherwise build it
    (:func:`build_ood_set`) as :func:`ensure_set` says. Returns ``dest`` (absolute);
    raises as :func:`ensure_set` and :func:`build_ood_set`."""
    settings = set_settings(seed, songs_per_part, parts, soundfonts, song_seconds)
    build = functools.partial(_build_ood_set, settings=settings, workers=workers)
    return ensure_set(dest, OOD_SET, settings, {}, build, force=force)


def ensure_set(
    dest: str | os.PathLike[str],
    kind: SetKind,
    settings: SetSettings,
    extra: Mapping[str, Any],
    build: Callable[[Path], Path],
    *,
    force: bool = False,
) -> Path:
    """Keep the set of ``kind`` in ``dest`` if its manifest records ``settings`` (and the
    ``extra`` entries) and every file it lists is there with its sha256; otherwise
    ``build(dest)`` it, logging why, where ``dest`` is missing or empty.

    A set of ``kind`` that does not match is rebuilt only with ``force`` (else
    ``kind.error`` saying why it does not match); a directory that holds anything else
    is never replaced (:class:`~chordrec.io.atomic_write.ForeignDirectoryError`,
    ``force`` or not). Keeping a set needs neither ``fluidsynth`` nor the soundfonts
    (only their names are compared). Holds an exclusive lock on ``.<dest name>.lock``
    beside ``dest`` so that processes starting together build once. Returns ``dest``
    (absolute); raises :class:`SynthesisUnavailable` when the set is to be built and
    this machine cannot."""
    dest = Path(dest).expanduser().absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    recorded = {**settings.recorded(), **extra, "parts": list(settings.parts)}
    # mode less the umask: whoever may build dest may take its lock
    with exclusive_lock(dest.parent / f".{dest.name}.lock", mode=0o666):
        reason = stale_reason(dest, kind, recorded)
        if reason is None:
            log.info("%s: %s present and matches its manifest", dest, kind.noun)
            return dest
        check_replaceable(dest, kind.holds, kind.directory)
        if not force and dest.exists() and not is_empty_directory(dest):
            raise kind.error(
                f"{dest}: holds {kind.article} {kind.noun} that does not match ({reason}); "
                "--force rebuilds it"
            )
        missing = missing_tools(settings.soundfonts)
        if missing is not None:
            raise SynthesisUnavailable(f"cannot build the {kind.noun} in {dest}: {missing}")
        log.info("%s: building the %s (%s)", dest, kind.noun, reason)
        return build(dest)


def stale_reason(dest: Path, kind: SetKind, recorded: Mapping[str, Any]) -> str | None:
    """Why the set in ``dest`` is not the set of ``kind`` whose manifest records
    ``recorded`` (``parts``: the list of part names; the rest: manifest entries), every
    file it lists there with its sha256 (``None``: it is)."""
    if not (dest / MANIFEST_FILE).is_file():
        return f"no {MANIFEST_FILE}" if dest.exists() else "not built yet"
    try:
        manifest = read_manifest(dest, kind)
    except UserError as exc:
        return str(exc)
    for key, wanted in recorded.items():
        found = list(manifest["parts"]) if key == "parts" else manifest.get(key)
        if found != wanted:
            return f"its {key} is {found!r}, not {wanted!r}"
    for part in recorded["parts"]:
        for song in manifest["parts"][part]:
            for entry in song["files"].values():
                path = dest / entry["path"]
                if not path.is_file():
                    return f"{path} is missing"
                if sha256_file(path) != entry["sha256"]:
                    return f"{path} does not match its sha256 in the manifest"
    return None


def read_manifest(root: str | os.PathLike[str], kind: SetKind = OOD_SET) -> dict[str, Any]:
    """The manifest of the set of ``kind`` in ``root``, checked for the fields
    :func:`ood_songs` and :func:`ensure_set` read (``parts``: per part a list of songs,
    each with ``name`` and ``files`` holding every kind of ``kind.files`` as ``{"path",
    "sha256"}``, paths relative and inside the set). ``kind.error`` naming the file when
    it is missing or corrupt."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        where = f"no {kind.noun}" if not root.exists() else f"no {MANIFEST_FILE}"
        raise kind.error(f"{path}: {where} there; {kind.hint(root)}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        _check_manifest(manifest, kind.files)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise kind.error(f"{path}: corrupt manifest ({exc}); {kind.hint(root)}") from None
    return manifest


def _check_manifest(manifest: Any, kinds: Sequence[str]) -> None:
    """Raise ValueError (or KeyError) when ``manifest`` lacks what is read from it."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
        raise ValueError("no 'parts' mapping")
    for part, songs in manifest["parts"].items():
        if not isinstance(songs, list):
            raise ValueError(f"part {part!r} is not a list of songs")
        for song in songs:
            if not isinstance(song.get("name"), str):
                raise ValueError(f"a song of part {part!r} has no name")
            for kind in kinds:
                entry = song["files"][kind]
                rel = entry["path"]
                if not isinstance(rel, str) or not isinstance(entry["sha256"], str):
                    raise ValueError(f"{song['name']}: {kind} file without path or sha256")
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise ValueError(f"{song['name']}: path {rel!r} leaves the set")


def ood_songs(root: str | os.PathLike[str], part: str) -> list[tuple[Path, Path]]:
    """The ``(audio, lab)`` files of ``part`` of the set in ``root``, in the manifest's
    song order.

    Raises
    ------
    OODSetError
        Naming the path and ``make data`` when the set, its manifest or one of the
        part's files is missing, the manifest is corrupt, or the set has no such part.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if part not in manifest["parts"]:
        raise OODSetError(
            f"{root / MANIFEST_FILE}: no part {part!r} (the set has "
            f"{', '.join(manifest['parts']) or 'none'}); {OOD_SET.hint(root)}"
        )
    pairs = []
    for song in manifest["parts"][part]:
        audio, lab = root / song["files"]["audio"]["path"], root / song["files"]["lab"]["path"]
        for path in (audio, lab):
            if not path.is_file():
                raise OODSetError(
                    f"{path}: missing from the out-of-domain set; {OOD_SET.hint(root)}"
                )
        pairs.append((audio, lab))
    return pairs
