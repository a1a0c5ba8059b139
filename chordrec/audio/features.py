"""From audio to the data set's features: CENS chroma and beats (the only librosa and
soundfile user).

* :func:`load_audio` reads an audio file as mono float32 samples at 44.1 kHz, shape
  (samples,); :func:`write_wav` writes samples as a WAV file.
* :func:`chroma_features` computes chroma like the data set's: shape (frames, 12)
  float32 with ``frames = 1 + samples // HOP_LENGTH``, frame ``i`` centred on sample ``i * HOP_LENGTH`` (``i / FRAME_RATE``
  seconds), pitch classes C..B, each non-silent row of unit L2 norm, silent rows
  all zero. It is librosa's ``chroma_cens`` at its defaults (CQT from C1 over 7
  octaves at 36 bins per octave, 4-level quantisation, 41-frame Hann smoothing)
  except for two things. Silence: frames :data:`SILENCE_DB` below the loudest are
  zeroed, as in the data set, where librosa would normalise the CQT's leakage into
  full-scale rows. Tuning: estimated per file within a semitone (±50 cents, see
  :func:`estimate_tuning`), where librosa's default estimates it within one of the
  CQT's 36 bins per octave (±16.7 cents) and wraps further deviations round to the
  wrong side, smearing the chroma into the neighbouring pitch class. Near A440, as
  RWC-Pop is recorded, the two agree.
* :func:`beat_frames` tracks beats as chroma frame indices, shape (beats,) int64.

``docs/features.md`` compares this chroma with the data set's.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from chordrec.compiled_cache import first_call_locked
from chordrec.constants import HOP_LENGTH, SAMPLE_RATE
from chordrec.errors import UserError

MIN_DURATION_S = 1.0
"""Shorter audio is refused (too little for chroma smoothing and beat tracking)."""
MAX_DURATION_S = 1800.0
"""Longer audio is refused, seconds (30 minutes; ``chordrec transcribe --max-duration``
changes it). Checked in the file's header before decoding, so a huge file costs
nothing (see :func:`load_audio`); what is transcribed needs memory in proportion to
its length (``docs/features.md`` has measured peaks)."""
SILENCE_DB = -60.0
"""A frame this many dB below the loudest frame is silent (``librosa.effects.trim``'s default)."""
FALLBACK_BEAT_FRAMES = 43
"""Beat spacing of the fallback grid, frames (about 0.5 s, 120 BPM, the data set's median)."""

_READ_BLOCK_FRAMES = 1 << 18
"""Frames decoded at a time (mixed down to mono as they come: 6 s at 44.1 kHz)."""
_BINS_PER_OCTAVE = 36
_TUNING_N_FFT = 2048
"""librosa.estimate_tuning's FFT size (hop a quarter of it)."""
_N_OCTAVES = 7


class AudioError(UserError, ValueError):
    """An audio file is unreadable, empty, too short or too long; the message names the file."""


def load_audio(
    path: str | Path, sr: int = SAMPLE_RATE, max_duration: float = MAX_DURATION_S
) -> np.ndarray:
    """Read an audio file as mono float32 samples at ``sr`` Hz, shape (samples,).

    Reads any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...); channels are
    averaged block by block, other sample rates resampled. Audio longer than
    ``max_duration`` seconds (``math.inf``: no limit) is refused from the file's
    header before anything is decoded, and decoding never goes past the limit, so
    memory stays bounded whatever the file's size. Raises :class:`AudioError` naming
    the file when it is missing, unreadable, empty, non-finite, shorter than
    :data:`MIN_DURATION_S` or longer than ``max_duration``; ValueError when
    ``max_duration`` is not positive.
    """
    if not max_duration > 0:  # NaN too
        raise ValueError(f"max_duration must be a positive number of seconds, got {max_duration}")
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        with sf.SoundFile(path) as audio:
            file_sr = audio.samplerate
            if audio.frames / file_sr > max_duration:
                raise _too_long(path, audio.frames / file_sr, max_duration)
            limit = -1 if math.isinf(max_duration) else math.floor(max_duration * file_sr)
            # one frame past the limit tells a header that understates the length
            blocks = audio.blocks(
                _READ_BLOCK_FRAMES,
                frames=limit if limit < 0 else limit + 1,
                dtype="float32",
                always_2d=True,
            )
            mono = [block.mean(axis=1, dtype=np.float32) for block in blocks]
    except (sf.SoundFileError, RuntimeError, TypeError) as exc:
        detail = getattr(exc, "error_string", exc)
        raise AudioError(f"{path}: not a readable audio file (libsndfile: {detail})") from None
    if not mono:
        raise AudioError(f"{path}: holds no audio samples")
    y = np.concatenate(mono)
    del mono
    if 0 <= limit < len(y):
        raise _too_long(path, None, max_duration)
    duration = len(y) / file_sr
    if duration < MIN_DURATION_S:
        raise AudioError(
            f"{path}: too short ({duration:.2f} s; at least {MIN_DURATION_S:g} s needed)"
        )
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: holds NaN or infinite samples")
    if file_sr != sr:
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr)
    return np.ascontiguousarray(y, dtype=np.float32)


def _too_long(path: Path, duration: float | None, max_duration: float) -> AudioError:
    """The refusal of audio over ``max_duration`` s, of ``duration`` s where known."""
    length = "more than the limit" if duration is None else f"{duration:.1f} s; the limit is"
    return AudioError(
        f"{path}: too long ({length} {max_duration:g} s, --max-duration SECONDS raises it)"
    )


def write_wav(path: str | Path, y: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write samples as a 16-bit PCM WAV file at ``sr`` Hz.

    ``y``: float samples in [-1, 1] (louder ones clip), shape (samples,) for mono or
    (samples, channels).
    """
    sf.write(Path(path), y, sr, subtype="PCM_16", format="WAV")


def _check_signal(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"audio must be mono, shape (samples,), got {y.shape}")
    if sr != SAMPLE_RATE:
        raise ValueError(f"audio must be at {SAMPLE_RATE} Hz (the data set's rate), got {sr}")
    if len(y) < HOP_LENGTH:
        raise ValueError(f"audio of {len(y)} samples is shorter than one hop ({HOP_LENGTH})")
    if not np.isfinite(y).all():
        raise ValueError("audio holds NaN or infinite samples")
    return y.astype(np.float32, copy=False)


def silent_frames(y: np.ndarray) -> np.ndarray:
    """Which chroma frames are silent, shape (frames,) bool: the RMS of the 2048 samples
    centred on the frame lies :data:`SILENCE_DB` or more below the loudest frame's (all
    frames of all-zero audio). ``y``: mono samples, shape (samples,)."""
    rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=HOP_LENGTH)[0]
    return rms <= rms.max() * 10 ** (SILENCE_DB / 20)


def estimate_tuning(y: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """The audio's deviation from A440 tuning in semitones, in [-0.5, 0.5) at a
    resolution of 0.01 (librosa's pitch-tracking estimate on a 12-bin-per-octave grid).
    ``y``: mono samples at ``sr`` Hz, shape (samples,).

    The value of ``librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=12)``, with a
    quarter of its work: its pitch tracker looks at 150-4000 Hz only, so it gets the
    spectrum's lowest quarter (bins 0-256 of 1025: those of a 512-point FFT at
    ``sr / 4``, the same frequencies exactly) and, as its per-frame threshold, a tenth
    of each frame's maximum over the whole spectrum, which is what it would compute.
    """
    spectrum = np.abs(librosa.stft(y, n_fft=_TUNING_N_FFT))
    band = spectrum[: _TUNING_N_FFT // 8 + 1]
    threshold = 0.1 * np.max(spectrum, axis=0, keepdims=True)  # piptrack's default, per frame
    return float(librosa.estimate_tuning(S=band, sr=sr / 4, bins_per_octave=12, ref=threshold))


@first_call_locked  # librosa's numba cache, filled by one process at a time
def chroma_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """CENS chroma like the data set's: shape (frames, 12) float32, frames = ``1 + len(y) // 512``.

    ``y``: mono samples at 44.1 kHz, shape (samples,). Pitch classes C..B; each
    non-silent row has unit L2 norm, silent rows (see :data:`SILENCE_DB`) are zero.
    """
    y = _check_signal(y, sr)
    tuning_bins = estimate_tuning(y, sr) * _BINS_PER_OCTAVE / 12  # librosa's unit: CQT bins
    with warnings.catch_warnings():
        # Under ~2.5 s the CQT's lowest, most downsampled octave is shorter than its
        # FFT; librosa zero-pads it and says so. Harmless: the frames stay aligned.
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        cqt = np.abs(
            librosa.cqt(
                y,
                sr=sr,
                hop_length=HOP_LENGTH,
                n_bins=_N_OCTAVES * _BINS_PER_OCTAVE,
                bins_per_octave=_BINS_PER_OCTAVE,
                tuning=tuning_bins,
            )
        )
    # The CQT's downsampled octaves round up a frame for some lengths: keep the grid.
    cqt = librosa.util.fix_length(cqt, size=1 + len(y) // HOP_LENGTH, axis=-1)
    silent = silent_frames(y)
    cqt[:, silent] = 0.0
    cens = librosa.feature.chroma_cens(
        C=cqt,
        sr=sr,
        hop_length=HOP_LENGTH,
        bins_per_octave=_BINS_PER_OCTAVE,
        n_octaves=_N_OCTAVES,
    )
    cens[:, silent] = 0.0
    return np.ascontiguousarray(cens.T, dtype=np.float32)


def fill_beat_gaps(beats: np.ndarray, n_frames: int) -> np.ndarray:
    """Extend tracked beats over the whole song at their own pace.

    ``beats``: (beats,) strictly increasing frame indices in ``[0, n_frames)``, at
    least 2. With ``period`` their median spacing, beats are added every ``period``
    frames before the first and after the last beat (within the song), and gaps
    longer than 1.5 periods are split evenly into steps of about one period (the
    tracker leaves silences and quiet passages unbeaten). Returns (beats',) int64.
    """
    beats = np.asarray(beats, dtype=np.int64)
    period = int(round(float(np.median(np.diff(beats)))))
    head = np.arange(beats[0] - period, -1, -period)[::-1]
    tail = np.arange(beats[-1] + period, n_frames, period)
    filled = [head, beats[:1]]
    for start, stop in zip(beats[:-1], beats[1:], strict=True):
        steps = int(round((stop - start) / period)) if stop - start > 1.5 * period else 1
        filled.append(np.round(np.linspace(start, stop, steps + 1)[1:]).astype(np.int64))
    filled.append(tail)
    return np.concatenate(filled).astype(np.int64)


@first_call_locked
def beat_frames(y: np.ndarray, sr: int, n_frames: int) -> np.ndarray:
    """Beat positions as chroma frame indices, shape (beats,) int64, strictly increasing.

    ``y``: mono samples at 44.1 kHz; ``n_frames``: the song's chroma frames. Uses
    ``librosa.beat.beat_track`` at hop 512; beats outside ``[0, n_frames)`` are
    dropped and the rest extended over the song by :func:`fill_beat_gaps` (the data
    set's beats cover whole songs). If fewer than 2 remain, a fixed grid every
    :data:`FALLBACK_BEAT_FRAMES` frames from frame 0 replaces them (its last beat
    at the last frame when the song is shorter than two grid steps). Always at
    least 2 beats; needs ``n_frames >= 2``.
    """
    y = _check_signal(y, sr)
    if n_frames < 2:
        raise ValueError(f"beat tracking needs at least 2 frames, got {n_frames}")
    _, beats = librosa.beat.beat_track(y=y, sr=sr, hop_length=HOP_LENGTH, units="frames")
    beats = np.unique(np.asarray(beats, dtype=np.int64))
    beats = beats[(beats >= 0) & (beats < n_frames)]
    if len(beats) >= 2:
        return fill_beat_gaps(beats, n_frames)
    grid = np.arange(0, n_frames, FALLBACK_BEAT_FRAMES, dtype=np.int64)
    return grid if len(grid) >= 2 else np.array([0, n_frames - 1], dtype=np.int64)
