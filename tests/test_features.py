"""Audio loading, CENS chroma and beats on audio synthesised here (no recordings needed).

The synthesiser (also used by tests/test_transcribe.py) renders chords as sums of
harmonic tones: a bass note on the root and a close triad above it, with known
start and end times, silence for ``N``.
"""

from __future__ import annotations

import math
import tracemalloc
import warnings
from collections.abc import Sequence
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from chordrec.audio.features import (
    FALLBACK_BEAT_FRAMES,
    MAX_DURATION_S,
    MAX_SAMPLES,
    AudioError,
    AudioLimits,
    beat_frames,
    chroma_features,
    cqt_magnitude,
    estimate_tuning,
    fill_beat_gaps,
    load_audio,
    silent_frames,
    write_wav,
)
from chordrec.constants import HOP_LENGTH, SAMPLE_RATE
from chordrec.data.chords import PITCH_CLASSES

SR = SAMPLE_RATE
# Silence, a I-vi-IV-V-I progression in C, silence, the same kind of song a whole
# tone up in D (with a minor vi and ii), silence.
SONG: list[tuple[str, float]] = [
    ("N", 1.0),
    ("C:maj", 2.0),
    ("A:min", 2.0),
    ("F:maj", 2.0),
    ("G:maj", 2.0),
    ("C:maj", 2.0),
    ("N", 1.0),
    ("D:maj", 2.0),
    ("B:min", 2.0),
    ("G:maj", 2.0),
    ("A:maj", 2.0),
    ("D:maj", 2.0),
    ("E:min", 2.0),
    ("N", 1.5),
]


def chord_notes(label: str) -> list[int]:
    """MIDI notes of a Harte major/minor chord: bass root in octave 2, triad from middle C."""
    root_name, quality = label.split(":")
    root = PITCH_CLASSES.index(root_name)
    third = 4 if quality == "maj" else 3
    return [36 + root, 60 + root, 60 + root + third, 60 + root + 7]


def harmonic_tone(
    midi: int, n: int, sr: int, rng: np.random.Generator, cents: float = 0.0
) -> np.ndarray:
    """Eight harmonics (amplitude 1/h, random phases) of MIDI note ``midi`` tuned
    ``cents`` away from A440, shape (n,)."""
    f0 = 440.0 * 2 ** ((midi - 69 + cents / 100) / 12)
    t = np.arange(n) / sr
    return sum(
        np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
        for h in range(1, 9)
        if f0 * h < sr / 2
    )


def render_song(
    segments: Sequence[tuple[str, float]] = SONG,
    sr: int = SR,
    seed: int = 0,
    pulse: float | None = None,
    cents: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Audio (samples,) float32 of ``(label, seconds)`` segments, with the reference
    intervals (segments, 2) in seconds and labels. Each chord sounds once, decaying
    slowly, or, with ``pulse`` (seconds), is struck anew every pulse with a faster decay;
    every note is tuned ``cents`` away from A440."""
    rng = np.random.default_rng(seed)
    parts, intervals, labels, start = [], [], [], 0.0
    for label, seconds in segments:
        n = int(round(seconds * sr))
        if label == "N":
            parts.append(np.zeros(n))
        else:
            tones = sum(harmonic_tone(m, n, sr, rng, cents) for m in chord_notes(label))
            edge = np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.01 * sr)
            since = np.arange(n) / sr if pulse is None else (np.arange(n) / sr) % pulse
            envelope = np.minimum(1.0, edge) * np.exp(-(0.5 if pulse is None else 4.0) * since)
            parts.append(0.05 * tones * envelope)
        intervals.append((start, start + seconds))
        labels.append(label)
        start += seconds
    return np.concatenate(parts).astype(np.float32), np.array(intervals), labels


def write_song(path: Path, segments: Sequence[tuple[str, float]] = SONG, **kwargs) -> Path:
    """Render ``segments`` and write them as a 44.1 kHz mono WAV file at ``path``."""
    y, _, _ = render_song(segments, **kwargs)
    write_wav(path, y, SR)
    return path


@pytest.fixture(scope="module")
def song() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return render_song()


@pytest.fixture(scope="module")
def chroma(song) -> np.ndarray:
    return chroma_features(song[0], SR)


def _frames(start: float, end: float) -> slice:
    """Frames well inside ``[start, end)`` seconds (0.3 s margin for the smoothing)."""
    return slice(int((start + 0.3) * SR / HOP_LENGTH), int((end - 0.3) * SR / HOP_LENGTH))


# ------------------------------------------------------------------------ load_audio


@pytest.mark.slow
def test_load_audio_mixes_down_and_resamples(tmp_path: Path) -> None:
    y, _, _ = render_song([("C:maj", 2.0)], sr=22050)
    stereo = np.stack([y, 0.5 * y], axis=1)
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, 22050)
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert len(loaded) == pytest.approx(2 * len(y), abs=2)
    # the mix-down is the channel mean: 0.75 y, resampled to twice the rate
    assert np.abs(loaded).max() == pytest.approx(0.75 * np.abs(y).max(), rel=0.05)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_load_audio_mix_down_is_the_channel_mean_to_the_bit(tmp_path: Path, channels) -> None:
    """Read in several blocks, any channel count: the float32 mean of the channels."""
    rng = np.random.default_rng(channels)
    samples = rng.uniform(-1, 1, size=(600_001, channels)).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, samples, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), samples.mean(axis=1, dtype=np.float32))


@pytest.mark.parametrize("length", [SR // 100 + 1, 2048, 3 * SR + 333, 20 * SR])
def test_silent_frames_are_librosa_rms_to_the_bit(length) -> None:
    """The blockwise mean squares give librosa.feature.rms's frames exactly (quiet and
    loud passages, lengths around the frame and the block)."""
    rng = np.random.default_rng(length)
    y = rng.normal(size=length).astype(np.float32)
    y[: length // 3] *= 1e-4  # a quiet third: silent frames
    y[length // 2 : length // 2 + 3000] = 0.0
    rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=HOP_LENGTH)[0]
    expected = rms <= rms.max() * 10 ** (-60 / 20)
    got = silent_frames(y)
    assert not expected.all() and (expected.any() or length < SR)
    np.testing.assert_array_equal(got, expected)


def test_write_wav_round_trip(tmp_path: Path) -> None:
    """16-bit PCM WAV: what load_audio reads back is the channel mean within 16-bit steps."""
    y, _, _ = render_song([("A:min", 1.5)])
    stereo = np.stack([y, -0.5 * y], axis=1)
    path = tmp_path / "out.wav"
    write_wav(path, stereo, SR)
    info = sf.info(path)
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 2, SR)
    np.testing.assert_allclose(load_audio(path), 0.25 * y, atol=2 / 2**15)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _text(path: Path) -> None:
    path.write_text("this is not audio\n" * 100)


def _short(path: Path) -> None:
    sf.write(path, np.zeros(SR // 2, np.float32), SR)


def _no_samples(path: Path) -> None:
    sf.write(path, np.zeros(0, np.float32), SR)


@pytest.mark.parametrize(
    ("make", "name", "message"),
    [
        (_empty, "empty.wav", "file is empty"),
        (_text, "text.mp3", "not a readable audio file"),
        (_text, "text.wav", "not a readable audio file"),
        (_short, "short.wav", "too short (0.50 s"),
        (_no_samples, "none.wav", "no audio samples"),
    ],
)
def test_load_audio_refuses_bad_files_naming_them(tmp_path, make, name, message) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_load_audio_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "absent.wav")


def test_load_audio_refuses_audio_over_the_duration_limit(tmp_path: Path) -> None:
    path = tmp_path / "ten-seconds.wav"
    sf.write(path, np.zeros(10 * 8000, np.int16), 8000)  # silence, 8 kHz
    with pytest.raises(AudioError) as info:
        load_audio(path, limits=AudioLimits(max_duration=5))
    message = str(info.value)
    assert message == (
        f"{path}: too long (10.0 s; the limit is 5 s, --max-duration SECONDS raises it)"
    )
    assert len(load_audio(path, limits=AudioLimits(max_duration=10))) == 10 * SR  # at the limit
    assert len(load_audio(path, limits=AudioLimits(math.inf, math.inf))) == 10 * SR  # no limit
    for bad in (0, -1, math.nan):
        with pytest.raises(ValueError, match="max_duration must be a positive"):
            AudioLimits(max_duration=bad)


def test_a_three_hour_file_is_refused_from_its_header(tmp_path: Path) -> None:
    """The default limit (:data:`MAX_DURATION_S`) is checked before decoding: refusing
    3 hours allocates almost nothing, where decoding them would take 4.3 MB at the
    file's 100 Hz and 1.9 GB resampled to 44.1 kHz."""
    assert 10 * 60 <= MAX_DURATION_S < 3 * 3600
    path = tmp_path / "three-hours.wav"
    sf.write(path, np.zeros(3 * 3600 * 100, np.int16), 100)  # a 2.2 MB file
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"too long \(10800\.0 s; the limit is"):
            load_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 500_000


# ------------------------------------------------------------------------ chroma


@pytest.mark.slow
def test_chroma_has_the_data_set_layout(song, chroma) -> None:
    y, _, _ = song
    assert chroma.dtype == np.float32
    assert chroma.shape == (1 + len(y) // HOP_LENGTH, 12)
    norms = np.linalg.norm(chroma, axis=1)
    silent = norms == 0
    assert np.allclose(norms[~silent], 1.0, atol=1e-5)
    assert chroma.min() >= 0 and chroma.max() < 1.0


def test_chroma_bins_start_at_c_and_silence_is_zero(song, chroma) -> None:
    _, intervals, labels = song
    for (start, end), label in zip(intervals, labels, strict=True):
        rows = chroma[_frames(start, end)]
        if label == "N":
            assert (rows == 0).all(), f"silence at {start:.1f} s is not all-zero"
            continue
        notes = {m % 12 for m in chord_notes(label)}
        top3 = {int(i) for i in np.argsort(rows.mean(axis=0))[-3:]}
        assert top3 == notes, f"{label} at {start:.1f} s: strongest bins {top3}"


@pytest.mark.slow
@pytest.mark.parametrize("cents", [-40.0, 25.0, 45.0])
def test_detuned_audio_keeps_its_pitch_classes(cents: float) -> None:
    """Tuning is estimated within a semitone: librosa's default estimate, within one of
    the CQT's 36 bins per octave, wraps these deviations round to the wrong side."""
    y, intervals, labels = render_song(SONG[:6], cents=cents)
    assert estimate_tuning(y, SR) == pytest.approx(cents / 100, abs=0.03)
    per_bin = librosa.estimate_tuning(y=y, sr=SR, bins_per_octave=36) * 100 / 3  # cents
    assert abs(per_bin - cents) > 15  # what the chroma would have been computed with
    chroma = chroma_features(y, SR)
    for (start, end), label in zip(intervals, labels, strict=True):
        if label == "N":
            continue
        top3 = {int(i) for i in np.argsort(chroma[_frames(start, end)].mean(axis=0))[-3:]}
        assert top3 == {m % 12 for m in chord_notes(label)}, f"{label} at {start:.1f} s"


@pytest.mark.parametrize("cents", [-45.0, -20.0, 0.0, 13.0, 38.0, 49.0])
def test_tuning_is_librosas_estimate_exactly(cents: float) -> None:
    """The band-limited estimate returns librosa.estimate_tuning's value to the bit, on
    detuned chords with silence around them and on noise."""
    y, _, _ = render_song([("N", 0.5), *SONG[:4], ("N", 0.5)], cents=cents)
    noise = 0.1 * np.random.default_rng(int(cents) + 50).normal(size=len(y)).astype(np.float32)
    for signal in (y, noise, y + 0.01 * noise):
        expected = librosa.estimate_tuning(y=signal, sr=SR, bins_per_octave=12)
        assert estimate_tuning(signal, SR) == float(expected)


def _librosa_tuning(y: np.ndarray, sr: int = SR) -> float:
    with warnings.catch_warnings():  # short audio, no peaks: librosa says so
        warnings.simplefilter("ignore", UserWarning)
        return float(librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=12))


def test_tuning_is_librosas_estimate_exactly_at_the_edges() -> None:
    """To the bit also on a pure tone, on audio shorter than the FFT (2048), at other
    sample rates (8 kHz: the band ends at Nyquist; 400 kHz: it starts at bin 1; 250 Hz:
    it is empty) and on digital silence (no peaks: 0, with librosa's warning)."""
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 447.0 * t)).astype(np.float32)
    chord, _, _ = render_song([("G:maj", 1.0)], cents=-27.0)
    for signal in (tone, tone[:700], tone[: 2048 + 511], chord, chord[:5000]):
        assert estimate_tuning(signal, SR) == _librosa_tuning(signal)
    for sr in (8000, 22050, 400_000):
        assert estimate_tuning(chord, sr) == _librosa_tuning(chord, sr)
    with pytest.warns(UserWarning, match="empty frequency set"):
        assert estimate_tuning(chord, 250) == 0.0
    with pytest.warns(UserWarning, match="empty frequency set"):
        assert estimate_tuning(np.zeros(SR, np.float32), SR) == 0.0


def _librosa_cqt(y: np.ndarray, tuning: float) -> np.ndarray:
    """What chroma_features took its CQT from before :func:`cqt_magnitude`."""
    with warnings.catch_warnings():  # under ~2.5 s librosa zero-pads its lowest octave
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")
        cqt = librosa.cqt(
            y, sr=SR, hop_length=HOP_LENGTH, n_bins=252, bins_per_octave=36, tuning=tuning
        )
    return np.abs(cqt)


@pytest.mark.parametrize("tuning", [0.0, 0.21, 1.2, -1.2])  # CQT bins: 0, 7, ±40 cents
def test_cqt_magnitude_is_librosas(tuning: float) -> None:
    """librosa.cqt's magnitudes within float32 rounding (1e-6 of the maximum; in fact to
    the bit but for a value in a million or so), on chords and noise, 1.5 s to 8 s long,
    odd lengths included, with the same number of frames."""
    y, _, _ = render_song([("N", 0.3), *SONG[1:4], ("N", 1.0)], pulse=0.5)
    noise = 0.1 * np.random.default_rng(1).normal(size=5 * SR + 17).astype(np.float32)
    for signal in (y, y[: int(1.5 * SR)], y[: 3 * SR + 333], noise):
        expected = _librosa_cqt(signal, tuning)
        got = cqt_magnitude(signal, SR, tuning)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-6 * expected.max()


def _reference_chroma(y: np.ndarray) -> np.ndarray:
    """chroma_features written out on librosa's own estimate_tuning and cqt."""
    tuning = _librosa_tuning(y) * 3  # in CQT bins
    cqt = librosa.util.fix_length(_librosa_cqt(y, tuning), size=1 + len(y) // HOP_LENGTH)
    rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=HOP_LENGTH)[0]
    silent = rms <= rms.max() * 10 ** (-60 / 20)
    cqt[:, silent] = 0.0
    cens = librosa.feature.chroma_cens(
        C=cqt, sr=SR, hop_length=HOP_LENGTH, bins_per_octave=36, n_octaves=7
    )
    cens[:, silent] = 0.0
    return cens.T.astype(np.float32)


def test_chroma_is_the_librosa_cqt_formulas(song, chroma) -> None:
    """The faster front end changes nothing: the chroma equals the librosa.cqt-based
    formula's within 1e-5, in tune and detuned (struck chords, -40 cents)."""
    np.testing.assert_allclose(chroma, _reference_chroma(song[0]), rtol=0, atol=1e-5)
    detuned, _, _ = render_song(SONG[:6], pulse=0.5, cents=-40.0)
    np.testing.assert_allclose(
        chroma_features(detuned, SR), _reference_chroma(detuned), rtol=0, atol=1e-5
    )


def test_chroma_is_smoothed_over_tens_of_frames() -> None:
    """CENS spreads a chord change over its 41-frame Hann window: the frame-to-frame
    change stays small and is above half its peak for 15-40 frames (24 here; the
    CQT's long bass filters widen it beyond the window's own 20). Unsmoothed
    quantised chroma would jump within a few frames."""
    y, _, _ = render_song([("C:maj", 3.0), ("F#:maj", 3.0)])
    chroma = chroma_features(y, SR)
    change = np.linalg.norm(np.diff(chroma, axis=0), axis=1)
    centre = int(round(3.0 * SR / HOP_LENGTH))
    profile = change[centre - 40 : centre + 40]
    above = np.flatnonzero(profile >= profile.max() / 2)
    assert 15 <= above[-1] - above[0] + 1 <= 40
    assert change.max() < 0.2  # the chroma turns by a right angle, in small steps


@pytest.mark.parametrize("n", [3 * SR, 256 * 512 - 1, 256 * 512, 255 * 512 - 1, 255 * 512 + 1])
def test_chroma_has_one_frame_per_hop_plus_one(n: int) -> None:
    """librosa's CQT gives one frame more for some lengths (e.g. 256 * 512 - 1 samples)."""
    y = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    assert chroma_features(y, SR).shape == (1 + n // HOP_LENGTH, 12)


def test_chroma_of_digital_silence_is_zero() -> None:
    chroma = chroma_features(np.zeros(2 * SR, np.float32), SR)
    assert chroma.shape == (1 + 2 * SR // HOP_LENGTH, 12)
    assert not chroma.any()


@pytest.mark.parametrize(
    ("y", "sr", "message"),
    [
        (np.zeros((SR, 2), np.float32), SR, "mono"),
        (np.zeros(SR, np.float32), 22050, "44100"),
        (np.full(SR, np.nan, np.float32), SR, "NaN"),
        (np.zeros(100, np.float32), SR, "shorter than one hop"),
    ],
)
def test_chroma_validates_its_input(y, sr, message) -> None:
    with pytest.raises(ValueError, match=message):
        chroma_features(y, sr)


# ------------------------------------------------------------------------ beats


@pytest.mark.slow
def test_beat_frames_follow_a_click_track() -> None:
    y = np.zeros(8 * SR, np.float32)
    click = np.random.default_rng(0).standard_normal(400).astype(np.float32) * np.hanning(400)
    for start in range(SR // 4, len(y) - 400, SR // 2):  # 120 BPM
        y[start : start + 400] += click
    n = 1 + len(y) // HOP_LENGTH
    beats = beat_frames(y, SR, n)
    assert beats.dtype == np.int64
    assert (np.diff(beats) > 0).all() and beats[0] >= 0 and beats[-1] < n
    assert np.median(np.diff(beats)) == pytest.approx(SR / 2 / HOP_LENGTH, abs=2)
    # beats sit on the clicks (within two frames)
    offsets = (beats * HOP_LENGTH - SR // 4) % (SR // 2)
    assert (np.minimum(offsets, SR // 2 - offsets) <= 2 * HOP_LENGTH).mean() > 0.8


def test_beat_frames_fall_back_to_a_grid() -> None:
    y = np.zeros(3 * SR, np.float32)  # nothing to track
    n = 1 + len(y) // HOP_LENGTH
    beats = beat_frames(y, SR, n)
    assert beats.tolist() == list(range(0, n, FALLBACK_BEAT_FRAMES))
    assert beat_frames(y, SR, 10).tolist() == [0, 9]  # shorter than two grid steps
    with pytest.raises(ValueError, match="at least 2 frames"):
        beat_frames(y, SR, 1)


def test_fill_beat_gaps_extends_and_splits_at_the_tracked_pace() -> None:
    beats = np.array([10, 20, 30, 60, 70, 100])
    assert fill_beat_gaps(beats, 125).tolist() == list(range(0, 125, 10))
    assert fill_beat_gaps(np.array([0, 10, 24]), 25).tolist() == [0, 10, 24]  # 1.4 periods kept


# --------------------------------------------------------------- samples (issue 24)


def write_silence_flac(path: Path, seconds: int, sr: int) -> Path:
    """``seconds`` of 16-bit mono silence at ``sr`` Hz as FLAC, a second at a time (a
    few hundred bytes a second, whatever the rate)."""
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16", format="FLAC") as audio:
        second = np.zeros(sr, np.int16)
        for _ in range(seconds):
            audio.write(second)
    return path


def test_a_high_sample_rate_file_is_refused_from_its_header_by_its_samples(tmp_path) -> None:
    """4.5 minutes at 655,350 Hz (FLAC's highest rate; a 0.7 MB file) are within the
    duration limit but 177 million samples, which decoding as it was needed about 2.3 GB
    for (13 bytes a sample measured): refused by :data:`MAX_SAMPLES` from the header,
    with almost nothing allocated, in a message naming the length, rate, channels, the
    limit and the option."""
    assert 44_100 * 2 * MAX_DURATION_S <= MAX_SAMPLES < 655_350 * 270
    path = write_silence_flac(tmp_path / "high-rate.flac", 270, 655_350)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as info:
            load_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 500_000
    assert str(info.value) == (
        f"{path}: too many samples to decode (270.0 s at 655350 Hz × 1 channel = "
        "176,944,500 samples; the limit is 172,800,000 samples, --max-samples N raises it)"
    )


def test_the_sample_limit_counts_every_channel(tmp_path) -> None:
    """10 s at 8 kHz: 80,000 samples mono, 160,000 stereo; a limit of 100,000 passes the
    one and refuses the other, the duration limit aside."""
    mono, stereo = tmp_path / "mono.wav", tmp_path / "stereo.wav"
    sf.write(mono, np.zeros(80_000, np.int16), 8000)
    sf.write(stereo, np.zeros((80_000, 2), np.int16), 8000)
    limits = AudioLimits(max_duration=math.inf, max_samples=100_000)
    assert len(load_audio(mono, limits=limits)) == 10 * SR
    with pytest.raises(AudioError) as info:
        load_audio(stereo, limits=limits)
    assert str(info.value) == (
        f"{stereo}: too many samples to decode (10.0 s at 8000 Hz × 2 channels = "
        "160,000 samples; the limit is 100,000 samples, --max-samples N raises it)"
    )
    for bad in (0, -1, math.nan):
        with pytest.raises(ValueError, match="max_samples must be a positive"):
            AudioLimits(max_samples=bad)


def test_many_channels_are_decoded_through_a_small_buffer(tmp_path) -> None:
    """A 256-channel file of a second: decoded a few thousand frames at a time (a 2 MB
    buffer), where a buffer of a fixed number of frames took 268 MB whatever the file's
    length; the channels' mean all the same."""
    path = tmp_path / "many.wav"
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, (8000, 256)).astype(np.float32)
    sf.write(path, samples, 8000, subtype="FLOAT")
    tracemalloc.start()
    try:
        y = load_audio(path, sr=8000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000
    np.testing.assert_array_equal(y, samples.mean(axis=1, dtype=np.float32))
