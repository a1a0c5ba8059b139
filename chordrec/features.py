"""From audio to the data set's features: CENS chroma and beats (the only librosa user).

The RWC-Pop chroma (see the data set README) is librosa-style ``chroma_cens`` at
44.1 kHz, hop 512 samples (frame ``i`` at ``i * 512 / 44100`` s, about 86.13 frames
per second, ``1 + samples // 512`` frames), 12 bins from C, each non-silent row of
unit L2 norm and silent rows all zero. :func:`chroma_features` computes it with
librosa 0.11's ``chroma_cens`` at its defaults (CQT from C1 over 7 octaves at 36
bins per octave with estimated tuning, L1 norm, 4-level quantisation at 0.05 /
0.1 / 0.2 / 0.4, 41-frame Hann smoothing, L2 norm) plus one change, silence.

What matches, measured on all 2,102,200 frames of the data set against librosa
on synthesised harmonic triads (a 3-minute song of 90 random major/minor chords
with bass, 18,090 frames):

* Frame grid: the data set's frame counts equal ``1 + samples // 512`` for the
  songs' durations (the annotations end within one frame of the last frame),
  as librosa's centred frames give.
* Norms: every non-silent row has L2 norm 1 (1 ± 1e-7) in both.
* Temporal smoothing: the mean frame-to-frame change |d chroma| around chord
  changes has a full width at half maximum of 19 frames in the data set (12,565
  annotated changes) and 18 frames in librosa's output at the synthetic
  changes, as a 41-tap Hann window (FWHM about 20) gives; the data set's temporal
  power spectrum dips by 3.7 dB at the window's first null (2/42 cycles per
  frame), librosa's by 3.9 dB; lag-1 autocorrelation is 0.999 in the data set.
* Quantisation: rows inside steady passages are exactly proportional to the
  4-level integer codes, e.g. the row ``[1, 1, 3, 1, 0, 0, 1, 1, 0, 1, 1, 2] /
  sqrt(20)`` that ends 17 of the 100 songs; both hold about 16.5 million (data
  set) or thousands (librosa) of distinct float32 values, i.e. smoothed, not
  quantised output.
* Value range: never above 1 (a lone pitch class would give 1): the data set's
  maximum is 0.743, row maxima 0.37 / 0.52 / 0.69 at the 1 / 50 / 99th
  percentile; librosa on the sparse synthetic triads reaches 0.825 (row maxima
  0.52 / 0.73 / 0.82).

What does not match:

* Silence. librosa 0.11 L1-normalises the ~1e-36 leakage that its CQT leaves in
  digital silence into full-scale rows (5 s of zeros after music gave no zero
  row), while the data set has all-zero rows there (114-115 trailing frames in
  99 of the 100 songs, 10,689 in all). Here a frame is silent when its CQT
  magnitude sum lies :data:`SILENCE_DB` below the loudest frame's; silent frames
  are zeroed before the quantisation (so they do not leak into the smoothing)
  and in the output.
* Value distribution, an effect of the audio, not of the settings: synthetic
  triads are sparse (59 % of librosa's values are 0, median 0) where recorded
  music spreads energy over all bins (2.5 % zeros, median 0.23, 90th
  percentile 0.45 vs 0.57), so a model trained on the data set sees cleaner
  chroma from synthetic audio than from recordings.
* Tuning: estimated per file here; the data set's tuning handling is unknown
  (RWC recordings are close to A440, where both agree).
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100
"""Sample rate of the data set's chroma, Hz."""
HOP_LENGTH = 512
"""Hop between chroma frames, samples."""
MIN_DURATION_S = 1.0
"""Shorter audio is refused (too little for chroma smoothing and beat tracking)."""
SILENCE_DB = -80.0
"""A frame whose CQT magnitude sum is this many dB below the loudest frame's is silent."""
FALLBACK_BEAT_FRAMES = 43
"""Beat spacing of the fallback grid, frames (about 0.5 s, 120 BPM, the data set's median)."""

_BINS_PER_OCTAVE = 36
_N_OCTAVES = 7


class AudioError(ValueError):
    """An audio file is unreadable, empty or too short; the message names the file."""


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 samples at ``sr`` Hz, shape (samples,).

    Reads any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...); channels are
    averaged, other sample rates resampled. Raises :class:`AudioError` naming the
    file when it is missing, unreadable, empty, non-finite or shorter than
    :data:`MIN_DURATION_S`.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        data, file_sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None
    if data.size == 0:
        raise AudioError(f"{path}: holds no audio samples")
    duration = len(data) / file_sr
    if duration < MIN_DURATION_S:
        raise AudioError(
            f"{path}: too short ({duration:.2f} s; at least {MIN_DURATION_S:g} s needed)"
        )
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: holds NaN or infinite samples")
    y = data.mean(axis=1, dtype=np.float32)
    if file_sr != sr:
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr)
    return np.ascontiguousarray(y, dtype=np.float32)


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


def frame_count(n_samples: int) -> int:
    """Chroma frames of ``n_samples`` samples: ``1 + n_samples // 512`` (centred frames)."""
    return 1 + n_samples // HOP_LENGTH


def chroma_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """CENS chroma like the data set's: shape (frames, 12) float32, frames = ``1 + len(y) // 512``.

    ``y``: mono samples at 44.1 kHz, shape (samples,). Pitch classes C..B; each
    non-silent row has unit L2 norm, silent rows (see :data:`SILENCE_DB`) are zero.
    """
    y = _check_signal(y, sr)
    cqt = np.abs(
        librosa.cqt(
            y,
            sr=sr,
            hop_length=HOP_LENGTH,
            n_bins=_N_OCTAVES * _BINS_PER_OCTAVE,
            bins_per_octave=_BINS_PER_OCTAVE,
        )
    )
    energy = cqt.sum(axis=0)
    silent = energy <= max(float(energy.max()) * 10 ** (SILENCE_DB / 20), np.finfo(np.float32).tiny)
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


def beat_frames(y: np.ndarray, sr: int, n_frames: int) -> np.ndarray:
    """Beat positions as chroma frame indices, shape (beats,) int64, strictly increasing.

    ``y``: mono samples at 44.1 kHz; ``n_frames``: the song's chroma frames. Uses
    ``librosa.beat.beat_track`` at hop 512; beats outside ``[0, n_frames)`` are
    dropped. If fewer than 2 remain, a fixed grid every
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
        return beats
    grid = np.arange(0, n_frames, FALLBACK_BEAT_FRAMES, dtype=np.int64)
    return grid if len(grid) >= 2 else np.array([0, n_frames - 1], dtype=np.int64)
