"""Tests of chordrec.data.synthetic: the synthesized out-of-domain songs and their set.

The pure tests draw songs and read their MIDI files back with mido: every note the
chord and bass parts play is a tone of the labelled chord, nothing pitched sounds under
``N``, the labels tile the song. The rendered tests need the ``fluidsynth`` program and
the Debian soundfonts (skipped without them) and render a few short songs with the two
soundfonts that load fast; one test runs ``chordrec data synth`` itself.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import mido
import mir_eval
import numpy as np
import pytest

from chordrec import cli
from chordrec.data import synthetic
from chordrec.data.synthetic import (
    CHANNELS,
    MANIFEST_FILE,
    RENDER_TAIL_S,
    OODSetError,
    Song,
    SynthesisError,
    SynthesisUnavailable,
    build_ood_set,
    draw_song,
    ensure_ood_set,
    ood_songs,
    song_lab,
    song_midi,
    song_rng,
)
from chordrec.errors import UserError
from chordrec.io.atomic_write import ForeignDirectoryError
from chordrec.io.chord_files import read_lab

FAKE_FONTS = [Path("A.sf2"), Path("B.sf3")]  # drawing songs only names them
FAST_FONTS = [
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
]
SHORT = (15.0, 19.0)
"""Seconds of the rendered test songs."""
PITCHED = (CHANNELS["chords"], CHANNELS["bass"], CHANNELS["melody"])
LABEL = re.compile(r"N|[A-G]#?:(maj|min|7|maj7|min7)(/(3|b3|5))?")

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None
    or not all(p.is_file() for p in [sf.path for sf in synthetic.DEBIAN_SOUNDFONTS]),
    reason="needs the fluidsynth program and the Debian soundfonts (see .ci/run)",
)


# --------------------------------------------------------------------------- helpers


def _songs(seed: int, part: str, count: int, seconds=synthetic.SONG_SECONDS) -> list[Song]:
    return [
        draw_song(song_rng(seed, part, i), f"{part}-{i:03d}", FAKE_FONTS, seconds)
        for i in range(count)
    ]


def _notes(midi: bytes) -> dict[int, list[tuple[int, float, float]]]:
    """The notes of a MIDI file by channel: ``(pitch, start, end)`` in seconds, as mido
    times them through the file's tempo map."""
    notes: dict[int, list[tuple[int, float, float]]] = {}
    sounding: dict[tuple[int, int], float] = {}
    now = 0.0
    for msg in mido.MidiFile(file=io.BytesIO(midi)):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            assert (msg.channel, msg.note) not in sounding, "a note restarted while sounding"
            sounding[msg.channel, msg.note] = now
        elif msg.type in ("note_on", "note_off"):
            start = sounding.pop((msg.channel, msg.note))
            notes.setdefault(msg.channel, []).append((msg.note, start, now))
    assert not sounding, "notes left sounding at the end"
    return notes


def _tones(label: str) -> tuple[set[int], int]:
    """The pitch classes of a Harte label and its bass pitch class (mir_eval's reading)."""
    root, bitmap, bass = mir_eval.chord.encode(label)
    return {(root + i) % 12 for i in np.flatnonzero(bitmap)}, (root + bass) % 12


def _lab(song: Song, tmp_path: Path) -> tuple[np.ndarray, list[str]]:
    path = tmp_path / f"{song.name}.lab"
    path.write_text(song_lab(song), encoding="utf-8")
    return read_lab(path)


# --------------------------------------------------------------------------- pure


@dataclass(frozen=True)
class Drawn:
    """A drawn song, its labels (through a written ``.lab``) and its notes read back."""

    song: Song
    midi: bytes
    intervals: np.ndarray
    labels: list[str]
    notes: dict[int, list[tuple[int, float, float]]]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> list[Drawn]:
    tmp = tmp_path_factory.mktemp("labs")
    songs = _songs(0, "validation", 24) + _songs(0, "test", 24)
    midis = [song_midi(s) for s in songs]
    return [Drawn(s, m, *_lab(s, tmp), _notes(m)) for s, m in zip(songs, midis, strict=True)]


@pytest.mark.slow
def test_notes_are_chord_tones_of_their_segment(drawn: list[Drawn]) -> None:
    for d in drawn:
        song, intervals, labels, notes = d.song, d.intervals, d.labels, d.notes
        chords_and_bass = [(ch, n) for ch in (0, 1) for n in notes.get(ch, [])]
        for (start, end), label in zip(intervals, labels, strict=True):
            if label == "N":
                continue
            tones, _ = _tones(label)
            for t in np.linspace(start, end, 25)[1:-1]:
                for ch, (pitch, on, off) in chords_and_bass:
                    if on <= t < off:
                        assert pitch % 12 in tones, (song.name, label, t, ch, pitch)
        # every pitched note lies inside one chord segment, none crosses a boundary
        for ch in PITCHED:
            for pitch, on, off in notes.get(ch, []):
                i = int(np.searchsorted(intervals[:, 1], on + 1e-5, side="right"))
                (start, end), label = intervals[i], labels[i]
                assert label != "N", (song.name, ch, pitch, on)
                assert start - 1e-6 <= on and off <= end + 1e-6, (song.name, label, ch, on, off)
                if ch != CHANNELS["melody"]:
                    assert pitch % 12 in _tones(label)[0], (song.name, label, ch, pitch)


def test_bass_plays_the_labelled_bass_note(drawn: list[Drawn]) -> None:
    inversions = 0
    for d in drawn:
        song, intervals, labels = d.song, d.intervals, d.labels
        bass_notes = d.notes[CHANNELS["bass"]]
        for (start, end), label in zip(intervals, labels, strict=True):
            if label == "N":
                continue
            tones, bass = _tones(label)
            inside = [n for n in bass_notes if start - 1e-6 <= n[1] < end - 1e-6]
            assert inside, (song.name, label)
            assert abs(inside[0][1] - start) < 1e-6 and inside[0][0] % 12 == bass, (
                song.name,
                label,
            )
            if "/" in label:  # an inversion: the bass keeps to its note
                inversions += 1
                assert {n[0] % 12 for n in inside} == {bass}, (song.name, label)
    assert inversions > 20


def test_no_pitched_note_sounds_under_no_chord(drawn: list[Drawn]) -> None:
    for d in drawn:
        song, intervals, labels, notes = d.song, d.intervals, d.labels, d.notes
        for (start, end), label in zip(intervals, labels, strict=True):
            if label != "N":
                continue
            for ch in PITCHED:
                for pitch, on, off in notes.get(ch, []):
                    assert off <= start + 1e-6 or on >= end - 1e-6, (song.name, start, ch, pitch)


def test_labels_tile_the_song_to_its_end(drawn: list[Drawn]) -> None:
    for d in drawn:
        song, intervals, labels = d.song, d.intervals, d.labels
        midi = mido.MidiFile(file=io.BytesIO(d.midi))
        assert intervals[0, 0] == 0.0
        np.testing.assert_allclose(intervals[1:, 0], intervals[:-1, 1])
        assert np.all(intervals[:, 1] > intervals[:, 0])
        # the audio, and so the labels, last RENDER_TAIL_S past the end of the MIDI track
        assert intervals[-1, 1] == pytest.approx(midi.length + RENDER_TAIL_S, abs=2e-6)
        assert intervals[-1, 1] == pytest.approx(song.duration, abs=1e-6)
        assert labels[0] == labels[-1] == "N"
        assert intervals[0, 1] >= synthetic.LEAD_SECONDS[0] - 1e-3
        assert intervals[-1, 1] - intervals[-1, 0] >= RENDER_TAIL_S + synthetic.END_GAP_S - 1e-3
        assert all(a != b for a, b in zip(labels[:-1], labels[1:], strict=True))  # merged
        for label in labels:
            assert LABEL.fullmatch(label), label
            assert not re.search(r"min7?/3|:(maj|7|maj7)/b3", label), label
        assert 30.0 <= song.duration <= 60.0 + 1e-6


def test_songs_vary_as_drawn(drawn: list[Drawn]) -> None:
    songs = [d.song for d in drawn]
    chords = [lab for d in drawn for lab in d.labels if lab != "N"]
    sevenths = np.mean([bool(re.search(r":(7|maj7|min7)", lab)) for lab in chords])
    inversions = np.mean(["/" in lab for lab in chords])
    assert 0.08 < sevenths < 0.25 and 0.12 < inversions < 0.30, (sevenths, inversions)
    assert 0.55 < np.mean(["drums" in s.parts for s in songs]) < 0.95
    assert 0.40 < np.mean(["melody" in s.parts for s in songs]) < 0.80
    changes = [s for s in songs if len(s.tempo_map) == 2]
    assert 0.15 < len(changes) / len(songs) < 0.55
    for s in songs:
        bpm = [60e6 / us for _, us in s.tempo_map]
        assert 70 <= bpm[0] <= 160
        if len(bpm) == 2:
            assert 0.099 <= abs(bpm[1] / bpm[0] - 1) <= 0.251
        assert abs(s.tuning_cents) <= 40 and 0.2 <= s.gain <= 0.8
    assert {s.mode for s in songs} == {"major", "minor"}
    assert len({s.key for s in songs}) >= 8
    assert {s.styles["chords"] for s in songs} == set(synthetic.COMPING)


def test_tuning_bends_melodic_channels_only(drawn: list[Drawn]) -> None:
    for d in drawn:
        song = d.song
        bends: dict[int, int] = {}
        now = 0.0
        for msg in mido.MidiFile(file=io.BytesIO(d.midi)):
            now += msg.time
            if msg.type == "pitchwheel":
                assert now == 0.0
                bends[msg.channel] = msg.pitch
        assert CHANNELS["drums"] not in bends
        assert set(bends) == {CHANNELS[p] for p in song.parts if p != "drums"}
        assert set(bends.values()) == {song.bend}
        assert song.tuning_cents == pytest.approx(song.bend / 8192 * 200)


def test_same_seed_same_bytes_other_seed_other_songs() -> None:
    first, again = _songs(0, "validation", 4), _songs(0, "validation", 4)
    other = _songs(1, "validation", 4)
    for a, b, c in zip(first, again, other, strict=True):
        assert song_midi(a) == song_midi(b) and song_lab(a) == song_lab(b)
        assert song_midi(a) != song_midi(c) and song_lab(a) != song_lab(c)


def test_parts_share_no_song() -> None:
    validation, test = _songs(0, "validation", 16), _songs(0, "test", 16)
    midis = {song_midi(s) for s in validation + test}
    labs = {song_lab(s) for s in validation + test}
    assert len(midis) == len(labs) == 32


# --------------------------------------------------------------------------- rendered


def _skip_without_fluidsynth() -> None:
    if shutil.which("fluidsynth") is None or not all(p.is_file() for p in FAST_FONTS):
        pytest.skip("needs the fluidsynth program and the Debian soundfonts (see .ci/run)")


@pytest.fixture(scope="module")
def short_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six short songs (about 40 chords) rendered with the fast-loading soundfonts."""
    _skip_without_fluidsynth()
    dest = tmp_path_factory.mktemp("ood") / "set"
    return build_ood_set(
        dest, 0, 6, parts=("validation",), soundfonts=FAST_FONTS, song_seconds=SHORT
    )


@pytest.mark.slow
def test_rendered_audio_lasts_as_long_as_its_labels(short_set: Path) -> None:
    import soundfile

    pairs = ood_songs(short_set, "validation")
    assert [a.name for a, _ in pairs] == [f"validation-00{i}.flac" for i in range(6)]
    for audio, lab in pairs:
        intervals, _ = read_lab(lab)
        info = soundfile.info(audio)
        assert info.samplerate == 44100
        assert abs(info.frames / info.samplerate - intervals[-1, 1]) < 0.1, audio
        assert synthetic.flac_seconds(audio) == pytest.approx(info.frames / info.samplerate)


@pytest.mark.slow
def test_rendered_chroma_matches_the_labels(short_set: Path) -> None:
    """The triad template nearest a chord segment's mean chroma has the label's root and
    major/minor quality: for at least 90 % of the root-position chords, 85 % of all
    (an inversion's bass and its harmonics pull the template towards the bass's own
    triad; over the default set 92 % of root-position chords match, 63 % of inversions,
    87 % of all). Leading silence has zero chroma."""
    from chordrec.audio.features import chroma_features, load_audio
    from chordrec.constants import FRAME_RATE
    from chordrec.models.templates import chord_templates

    templates = chord_templates()[1:]
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    matched: dict[bool, list[bool]] = {True: [], False: []}  # by root position
    for audio, lab in ood_songs(short_set, "validation"):
        intervals, labels = read_lab(lab)
        chroma = chroma_features(load_audio(audio))
        times = np.arange(len(chroma)) / FRAME_RATE
        notes = _notes(audio.with_suffix(".mid").read_bytes())
        first_note = min(on for channel in notes.values() for _, on, _ in channel)
        assert first_note >= synthetic.LEAD_SECONDS[0] - 1e-3
        leading = chroma[times < first_note - 0.05]
        assert len(leading) > 20 and not leading.any(), audio
        for (start, end), label in zip(intervals, labels, strict=True):
            if label == "N":
                continue
            margin = min(0.15, (end - start) / 4)  # CENS smooths over about 0.5 s
            mean = chroma[(times >= start + margin) & (times <= end - margin)].mean(axis=0)
            best = 1 + int(np.argmax(templates @ mean))
            root, bitmap, _ = mir_eval.chord.encode(label)
            minor = bitmap[3] and not bitmap[4]
            matched["/" not in label].append(best == (13 if minor else 1) + root)
    every = matched[True] + matched[False]
    assert len(matched[True]) >= 25
    assert np.mean(matched[True]) >= 0.9, (sum(matched[True]), len(matched[True]))
    assert np.mean(every) >= 0.85, (sum(every), len(every))


def test_rendering_is_deterministic(short_set: Path, tmp_path: Path) -> None:
    again = build_ood_set(
        tmp_path / "again", 0, 1, parts=("validation",), soundfonts=FAST_FONTS, song_seconds=SHORT
    )
    first = json.loads((short_set / MANIFEST_FILE).read_text())["parts"]["validation"][0]
    second = json.loads((again / MANIFEST_FILE).read_text())["parts"]["validation"][0]
    assert first == second  # metadata and the sha256 of the FLAC, MIDI and .lab files


def test_ensure_keeps_a_matching_set_and_rebuilds_a_damaged_one_with_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_without_fluidsynth()
    dest = tmp_path / "set"
    settings = dict(parts=("validation",), soundfonts=FAST_FONTS[:1], song_seconds=(5.0, 6.0))
    caplog.set_level(logging.INFO, logger="chordrec.data.synthetic")
    assert ensure_ood_set(dest, 0, 2, **settings) == dest
    assert "building the out-of-domain set (not built yet)" in caplog.text
    lab = dest / "validation" / "validation-001.lab"
    original = lab.read_text()

    caplog.clear()
    mtime = (dest / MANIFEST_FILE).stat().st_mtime_ns
    with monkeypatch.context() as patch:  # keeping the set needs no fluidsynth
        patch.setenv("PATH", str(tmp_path / "no-bin"))
        assert ensure_ood_set(dest, 0, 2, **settings) == dest
    assert (dest / MANIFEST_FILE).stat().st_mtime_ns == mtime
    assert "matches its manifest" in caplog.text

    lab.write_text(original + "99.0\t100.0\tN\n")
    damaged = lab.read_bytes()
    with pytest.raises(
        OODSetError,
        match=r"holds an out-of-domain set that does not match \(.*validation-001\.lab does "
        r"not match its sha256 in the manifest\); --force rebuilds it$",
    ):
        ensure_ood_set(dest, 0, 2, **settings)
    assert lab.read_bytes() == damaged  # without --force, nothing replaced
    caplog.clear()
    ensure_ood_set(dest, 0, 2, **settings, force=True)
    assert "validation-001.lab does not match its sha256" in caplog.text
    assert lab.read_text() == original

    caplog.clear()
    ensure_ood_set(dest, 0, 1, **settings, force=True)  # another count: rebuilt
    assert "songs_per_part is 2, not 1" in caplog.text
    assert len(ood_songs(dest, "validation")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".set.lock", "set"]  # no leftovers


@pytest.mark.slow
@needs_fluidsynth
def test_cli_data_synth_writes_the_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the soundfonts that load fast (MuseScore's .sf3 takes seconds per song), named
    monkeypatch.setenv("CHORDREC_SOUNDFONTS", "/nowhere/else.sf2")  # --soundfont wins
    dest = tmp_path / "ood"
    fonts = [arg for font in FAST_FONTS for arg in ("--soundfont", str(font))]
    train = tmp_path / "train"
    argv = ["data", "synth", "--dest", str(dest), "--songs-per-part", "1", *fonts]
    assert cli.main([*argv, "--train-dest", str(train), "--train-songs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"out-of-domain set ready in {dest}" in out
    assert f"synthetic training set ready in {train} (songs: 1)" in out
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    assert manifest["soundfonts"] == [font.name for font in FAST_FONTS]
    assert list(manifest["parts"]) == ["validation", "test"]
    assert manifest["seed"] == 0 and manifest["songs_per_part"] == 1
    for part in ("validation", "test"):
        ((audio, lab),) = ood_songs(dest, part)
        assert audio.is_file() and lab.is_file() and audio.with_suffix(".mid").is_file()
        assert 30.0 <= read_lab(lab)[0][-1, 1] <= 60.0
    (song,) = json.loads((train / MANIFEST_FILE).read_text())["parts"]["train"]
    assert 30.0 <= song["duration"] <= 90.0 and (train / "chroma" / "train-000.npy").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".ood.lock",
        ".train.lock",
        "ood",
        "train",
    ]


# --------------------------------------------------------------------------- errors


def _fake_font(tmp_path: Path) -> Path:
    font = tmp_path / "fake.sf2"
    font.write_bytes(b"not really a soundfont")
    return font


def test_missing_fluidsynth_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(
        SynthesisUnavailable,
        match=r"set in .*set: fluidsynth not installed \(not on PATH\); apt-get install "
        r"fluidsynth \(elsewhere: .*--soundfont or \$CHORDREC_SOUNDFONTS\), then make data$",
    ):
        build_ood_set(tmp_path / "set", songs_per_part=1, soundfonts=[_fake_font(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "fake.sf2"]
    assert issubclass(SynthesisUnavailable, SynthesisError)
    assert issubclass(SynthesisError, UserError)


def test_failing_fluidsynth_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fluidsynth"
    fake.write_text("#!/bin/sh\necho 'fluidsynth: error: cannot load soundfont' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(
        SynthesisError,
        match=r"song (validation|test)-000 \(.*fake\.sf2\): fluidsynth failed \(exit status 3\): .*cannot load",
    ):
        build_ood_set(tmp_path / "set", songs_per_part=1, soundfonts=[_fake_font(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "fake.sf2"]


def test_audio_of_the_wrong_length_fails_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fluidsynth that stops elsewhere than the labels' end is caught, not mislabelled."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fluidsynth"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy, soundfile\n"
        "out = sys.argv[sys.argv.index('-F') + 1]\n"
        "soundfile.write(out, numpy.zeros((44100, 2)), 44100, format='FLAC')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SynthesisError, match=r"rendered 1\.000 s but the labels end at"):
        build_ood_set(
            tmp_path / "set", 0, 1, parts=("validation",), soundfonts=[_fake_font(tmp_path)]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "fake.sf2"]


def test_missing_soundfont_names_it_and_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "FluidR3_GM.sf2"
    monkeypatch.setattr(
        synthetic, "DEBIAN_SOUNDFONTS", (synthetic.Soundfont(missing, "fluid-soundfont-gm"),)
    )
    with pytest.raises(
        SynthesisUnavailable,
        match=rf"soundfont {re.escape(str(missing))} missing; apt-get install fluid-soundfont-gm ",
    ):
        build_ood_set(tmp_path / "set", songs_per_part=1)
    # one named on purpose (an argument, --soundfont, $CHORDREC_SOUNDFONTS) is an error
    with pytest.raises(SynthesisError, match=r"soundfont .*other\.sf2 not found$") as raised:
        build_ood_set(tmp_path / "set", songs_per_part=1, soundfonts=[tmp_path / "other.sf2"])
    assert not isinstance(raised.value, SynthesisUnavailable)
    monkeypatch.setenv("CHORDREC_SOUNDFONTS", f"{tmp_path / 'a.sf2'}{os.pathsep}{missing}")
    with pytest.raises(
        SynthesisError, match=r"soundfont .*a\.sf2 not found \(named in \$CHORDREC_SOUNDFONTS\)$"
    ):
        build_ood_set(tmp_path / "set", songs_per_part=1)
    assert not (tmp_path / "set").exists()


def test_soundfonts_come_from_the_argument_the_environment_or_debian(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHORDREC_SOUNDFONTS", raising=False)
    debian = [sf.path for sf in synthetic.DEBIAN_SOUNDFONTS]
    assert synthetic.soundfont_paths(None) == debian
    monkeypatch.setenv("CHORDREC_SOUNDFONTS", "")  # set but empty: the default
    assert synthetic.soundfont_paths(None) == debian
    monkeypatch.setenv(
        "CHORDREC_SOUNDFONTS", f"{tmp_path / 'a.sf2'}{os.pathsep}{tmp_path / 'b.sf3'}"
    )
    assert synthetic.soundfont_paths(None) == [tmp_path / "a.sf2", tmp_path / "b.sf3"]
    assert synthetic.soundfont_paths([tmp_path / "c.sf2"]) == [tmp_path / "c.sf2"]


def test_data_synth_without_fluidsynth_fails_or_with_optional_skips_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`chordrec data synth` cannot build without fluidsynth: an error naming what to
    install; with --optional (what `make data` runs) one line saying so, exit 0. Either
    way nothing is written but the lock."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    monkeypatch.delenv("CHORDREC_SOUNDFONTS", raising=False)
    missing = tmp_path / "FluidR3_GM.sf2"  # a machine without Debian's soundfonts either
    monkeypatch.setattr(
        synthetic, "DEBIAN_SOUNDFONTS", (synthetic.Soundfont(missing, "fluid-soundfont-gm"),)
    )
    dest = tmp_path / "ood-synth"
    argv = ["data", "synth", "--dest", str(dest)]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"chordrec: error: cannot build the out-of-domain set in {dest}: ")
    assert f"fluidsynth not installed (not on PATH), soundfont {missing} missing; " in err
    assert "apt-get install fluidsynth fluid-soundfont-gm (elsewhere: " in err
    assert cli.main([*argv, "--optional"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"chordrec: skipped: cannot build the out-of-domain set in {dest}: ")
    assert "then make data (until then, runs skip out-of-domain scoring; data=rwc_pop+synth" in err
    # a soundfont named on purpose that is not there is an error, --optional or not
    assert cli.main([*argv, "--optional", "--soundfont", str(tmp_path / "mine.sf2")]) == 1
    assert (
        capsys.readouterr().err == f"chordrec: error: soundfont {tmp_path / 'mine.sf2'} not found\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ood-synth.lock"]


def test_ood_songs_on_a_missing_set_names_make_data(tmp_path: Path) -> None:
    with pytest.raises(
        OODSetError,
        match=r"ood-synth/manifest\.json: no out-of-domain set there; build it with `make data`",
    ):
        ood_songs(tmp_path / "ood-synth", "validation")
    assert issubclass(OODSetError, UserError) and issubclass(OODSetError, ValueError)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"parts": {"validation": [{"name": "x"}]}}'])
def test_ood_songs_on_a_corrupt_manifest(tmp_path: Path, text: str) -> None:
    (tmp_path / MANIFEST_FILE).write_text(text)
    with pytest.raises(OODSetError, match=r"manifest\.json: corrupt manifest .*`make data`"):
        ood_songs(tmp_path, "validation")


def _manifest(tmp_path: Path) -> None:
    entry = {
        "name": "validation-000",
        "files": {
            kind: {"path": f"validation/validation-000.{suffix}", "sha256": "0" * 64}
            for kind, suffix in (("audio", "flac"), ("lab", "lab"), ("midi", "mid"))
        },
    }
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"parts": {"validation": [entry]}}))


def test_ood_songs_on_an_unknown_part_or_a_missing_file(tmp_path: Path) -> None:
    _manifest(tmp_path)
    with pytest.raises(
        OODSetError, match=r"no part 'train' \(the set has validation\).*`make data`"
    ):
        ood_songs(tmp_path, "train")
    with pytest.raises(
        OODSetError, match=r"validation-000\.flac: missing from the out-of-domain set.*`make data`"
    ):
        ood_songs(tmp_path, "validation")
    (tmp_path / "validation").mkdir()
    for suffix in ("flac", "lab"):
        (tmp_path / "validation" / f"validation-000.{suffix}").write_text("")
    assert ood_songs(tmp_path, "validation") == [
        (
            tmp_path / "validation" / "validation-000.flac",
            tmp_path / "validation" / "validation-000.lab",
        )
    ]


# ------------------------------------------------- folders chordrec did not make (issue 24)


def tree_snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under ``root``: its mode and, for a file, its bytes."""
    return {
        str(path.relative_to(root)): (
            path.lstat().st_mode,
            path.read_bytes() if path.is_file() else b"",
        )
        for path in sorted(root.rglob("*"))
    }


def user_music_folder(root: Path) -> Path:
    """A folder of the user's: an album chordrec did not make."""
    (root / "album").mkdir(parents=True)
    (root / "album" / "track01.flac").write_bytes(os.urandom(4096))
    (root / "album" / "cover.jpg").write_bytes(os.urandom(1024))
    (root / "notes.txt").write_text("playlist for Friday\n")
    return root


@pytest.mark.parametrize("force", [False, True])
def test_data_synth_never_replaces_a_folder_it_did_not_make(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    force: bool,
) -> None:
    """`chordrec data synth --dest ~/Music` (a wrong folder) is refused in one line naming
    the folder and --dest, with or without --force, and the folder stays byte for byte."""
    # the fast soundfonts and one song per part: a build that is not refused is quick
    fast = tuple(sf for sf in synthetic.DEBIAN_SOUNDFONTS if sf.path in FAST_FONTS)
    monkeypatch.setattr(synthetic, "DEBIAN_SOUNDFONTS", fast)
    music = user_music_folder(tmp_path / "Music")
    before = tree_snapshot(music)
    argv = ["data", "synth", "--dest", str(music), "--songs-per-part", "1"]
    assert cli.main(argv + ["--force"] * force) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"chordrec: error: {music}: not replaced: ")
    assert "it holds other files" in err and "--dest" in err and "manifest.json" in err
    assert tree_snapshot(music) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".Music.lock", "Music"]


def test_a_manifest_of_another_program_is_not_a_set(tmp_path: Path) -> None:
    """A folder whose manifest.json chordrec did not write (a web app's) is not replaced,
    by a build or by ensure with force, before anything is rendered."""
    app = tmp_path / "app"
    app.mkdir()
    (app / MANIFEST_FILE).write_text('{"name": "my app", "parts": {}}\n')
    (app / "index.html").write_text("<html></html>\n")
    before = tree_snapshot(app)
    with pytest.raises(ForeignDirectoryError, match=rf"^{re.escape(str(app))}: not"):
        build_ood_set(app, 0, 1, parts=("validation",), soundfonts=FAKE_FONTS)
    with pytest.raises(ForeignDirectoryError, match="even with --force"):
        ensure_ood_set(app, 0, 1, parts=("validation",), soundfonts=FAKE_FONTS, force=True)
    assert tree_snapshot(app) == before
    assert issubclass(ForeignDirectoryError, UserError)


def test_an_empty_folder_gets_the_set(tmp_path: Path) -> None:
    _skip_without_fluidsynth()
    dest = tmp_path / "empty"
    dest.mkdir()
    settings = dict(parts=("validation",), soundfonts=FAST_FONTS[:1], song_seconds=(5.0, 6.0))
    assert ensure_ood_set(dest, 0, 1, **settings) == dest
    assert len(ood_songs(dest, "validation")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".empty.lock", "empty"]
