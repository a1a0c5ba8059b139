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
  RWC-Pop is recorded, the two agree. Its front end, :func:`estimate_tuning` and
  :func:`cqt_magnitude`, reproduces ``librosa.estimate_tuning`` and ``librosa.cqt``
  number for number (the tuning to the bit, the CQT to within float32 rounding) at
  about a third of their time, from librosa's public filter functions.
* :func:`beat_frames` tracks beats as chroma frame indices, shape (beats,) int64.

``docs/features.md`` compares this chroma with the data set's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import scipy.fft
import scipy.sparse
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
MAX_SAMPLES = 172_800_000
"""Audio of more samples (frames × channels) is refused: 30 minutes of 48 kHz stereo
(``chordrec transcribe --max-samples`` changes it). Checked in the file's header before
decoding, with :data:`MAX_DURATION_S`: the duration bounds the chroma's memory, the
samples bound decoding's, which grows with the sample rate (40 s at 655,350 Hz are
26 million samples, 15 times those of 40 s at 44.1 kHz)."""
SILENCE_DB = -60.0
"""A frame this many dB below the loudest frame is silent (``librosa.effects.trim``'s default)."""
_SILENCE_FRAME = 2048
"""Samples whose RMS decides a frame's silence (centred on the frame)."""
FALLBACK_BEAT_FRAMES = 43
"""Beat spacing of the fallback grid, frames (about 0.5 s, 120 BPM, the data set's median)."""

_READ_BLOCK_SAMPLES = 1 << 19
"""Samples (frames × channels) decoded at a time, mixed down to mono as they come: 6 s of
44.1 kHz stereo, fewer frames for more channels, so that the buffer stays 2 MB."""
_BINS_PER_OCTAVE = 36
_N_OCTAVES = 7
_TUNING_N_FFT = 2048
"""librosa.estimate_tuning's FFT size (hop a quarter of it)."""
_TUNING_FMIN, _TUNING_FMAX, _TUNING_THRESHOLD = 150.0, 4000.0, 0.1
"""librosa.piptrack's defaults: band searched for peaks, Hz; peak threshold re the frame's maximum."""
_RESAMPLE_KW = {"res_type": "soxr_hq", "scale": True}
"""How librosa.cqt resamples between octaves (its defaults)."""
_FFT_BLOCK_FRAMES = 256
"""STFT frames transformed at a time (a few MB: cache-sized, memory bounded)."""
_SLIDING_CHUNK_FRAMES = 1024
"""STFT frames summed from blocks at a time by :func:`_sliding_band`."""
_SLIDING_MAX_HOP_FRACTION = 8
"""CQT octaves whose hop is at most this fraction of the FFT size sum block DFTs
(:func:`_sliding_band`), the others take FFTs of frames (faster there)."""


@dataclass(frozen=True)
class _Octave:
    """One octave of librosa.cqt's multirate filter bank.

    ``sr``: its sample rate, Hz; ``hop``: its hop, samples at ``sr``; ``n_fft``: its
    FFT size; ``band``: the FFT bins its filters touch; ``basis``: the filters' FFTs
    on those bins, sparse (filters, band bins) complex64, librosa's values exactly.
    """

    sr: float
    hop: int
    n_fft: int
    band: slice
    basis: scipy.sparse.csr_matrix


@dataclass(frozen=True)
class _CqtPlan:
    """librosa.cqt's filter bank for one sample rate and tuning.

    ``downsample``: the early decimation factor (1: none); ``octaves``: top octave
    first, each one's signal half the rate of the one before; ``scale``: the square
    roots of the filter lengths, shape (bins, 1), lowest bin first.
    """

    downsample: int
    octaves: tuple[_Octave, ...]
    scale: np.ndarray


class AudioError(UserError, ValueError):
    """An audio file is unreadable, empty, too short or too long, or its features could not
    be computed; the message names the file."""


@dataclass(frozen=True)
class AudioLimits:
    """The most audio :func:`load_audio` decodes, checked in the file's header first:
    ``max_duration`` seconds and ``max_samples`` samples (frames × channels, at the
    file's own rate); ``math.inf``: no limit. Raises ValueError naming the limit when
    one is not positive."""

    max_duration: float = MAX_DURATION_S
    max_samples: float = MAX_SAMPLES

    def __post_init__(self) -> None:
        for name, value in (("max_duration", self.max_duration), ("max_samples", self.max_samples)):
            if not value > 0:  # NaN too
                raise ValueError(f"{name} must be a positive number, got {value}")

    def max_frames(self, sr: int, channels: int) -> int | None:
        """The most frames of a file at ``sr`` Hz with ``channels`` that may be decoded,
        None for no limit."""
        limit = min(self.max_duration * sr, self.max_samples / channels)
        return None if math.isinf(limit) else math.floor(limit)

    def check(self, path: Path, sr: int, channels: int, frames: int) -> None:
        """Raise :class:`AudioError` when ``frames`` frames of ``path`` (at ``sr`` Hz,
        ``channels`` channels) are over a limit, naming the file, its length (and its rate,
        channels and samples for the sample limit), the limit and the option that raises
        it."""
        if frames > self.max_duration * sr:
            raise self._too_long(path, f"{frames / sr:.1f} s; the limit is")
        if frames * channels > self.max_samples:
            plural = "s" if channels > 1 else ""
            raise self._too_many_samples(
                path,
                f"{frames / sr:.1f} s at {sr} Hz × {channels} channel{plural} = "
                f"{frames * channels:,} samples; the limit is",
            )

    def overrun(self, path: Path, sr: int, channels: int) -> AudioError:
        """The error for ``path`` having decoded past :meth:`max_frames` where its header
        said it would not; it names the limit that stopped it."""
        if self.max_duration * sr <= self.max_samples / channels:
            return self._too_long(path, "more than the limit")
        return self._too_many_samples(path, "more than the limit")

    def _too_long(self, path: Path, length: str) -> AudioError:
        return AudioError(
            f"{path}: too long ({length} {self.max_duration:g} s, --max-duration SECONDS raises it)"
        )

    def _too_many_samples(self, path: Path, length: str) -> AudioError:
        return AudioError(
            f"{path}: too many samples to decode ({length} {self.max_samples:,.0f} samples, "
            "--max-samples N raises it)"
        )


DEFAULT_LIMITS = AudioLimits()
"""30 minutes and :data:`MAX_SAMPLES` samples."""


def load_audio(
    path: str | Path, sr: int = SAMPLE_RATE, limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Read an audio file as mono float32 samples at ``sr`` Hz, shape (samples,).

    Reads any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...); channels are
    averaged block by block, other sample rates resampled. Audio over ``limits`` (its
    duration, or its samples: frames × channels at the file's rate) is refused from the
    file's header before anything is decoded, and decoding never goes past them, so
    memory stays bounded whatever the file's size, rate and channels. Raises
    :class:`AudioError` naming the file when it is missing, unreadable, empty,
    non-finite, shorter than :data:`MIN_DURATION_S` or over ``limits``.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        with sf.SoundFile(path) as audio:
            file_sr, channels = audio.samplerate, audio.channels
            limits.check(path, file_sr, channels, audio.frames)
            limit = limits.max_frames(file_sr, channels)
            # one frame past the limit tells a header that understates the length
            blocks = audio.blocks(
                frames=-1 if limit is None else limit + 1,
                dtype="float32",
                always_2d=True,
                out=np.empty((max(1, _READ_BLOCK_SAMPLES // channels), channels), np.float32),
            )
            mono = [_mix_down(block) for block in blocks]
    except (sf.SoundFileError, RuntimeError, TypeError) as exc:
        detail = getattr(exc, "error_string", exc)
        raise AudioError(f"{path}: not a readable audio file (libsndfile: {detail})") from None
    if not mono:
        raise AudioError(f"{path}: holds no audio samples")
    y = np.concatenate(mono)
    del mono
    if limit is not None and len(y) > limit:
        raise limits.overrun(path, file_sr, channels)
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


def _mix_down(block: np.ndarray) -> np.ndarray:
    """The mean of the channels, shape (samples,) float32, from a block (samples,
    channels) float32: ``block.mean(axis=1, dtype=np.float32)``'s values, a third of its
    time for stereo (one sum and one halving, exact, instead of a reduction along rows)."""
    if block.shape[1] != 2:
        return block.mean(axis=1, dtype=np.float32)
    mono = block[:, 0] + block[:, 1]
    mono *= np.float32(0.5)
    return mono


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
    rms = np.sqrt(_mean_squares(y, _SILENCE_FRAME, HOP_LENGTH))
    return rms <= rms.max() * 10 ** (SILENCE_DB / 20)


def _mean_squares(y: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """The mean square of each centred frame of ``y`` (samples,) float32, zeros beyond
    its ends: shape (1 + len(y) // hop,) float32, ``librosa.feature.rms(y=y, ...) ** 2``
    before its square root to the bit (the same pairwise float32 sum per frame), a block
    of :data:`_FFT_BLOCK_FRAMES` frames at a time instead of all frames' squares at once
    (170 MB for 4 minutes)."""
    n_frames = 1 + len(y) // hop
    mean_squares = np.empty(n_frames, np.float32)
    for first in range(0, n_frames, _FFT_BLOCK_FRAMES):
        count = min(_FFT_BLOCK_FRAMES, n_frames - first)
        frames = _frames(y, first, count, frame_length, hop, np.float32)
        mean_squares[first : first + count] = np.mean(np.square(frames), axis=-1)
    return mean_squares


def _segment(y: np.ndarray, start: int, length: int, dtype: type = np.float64) -> np.ndarray:
    """Samples ``start .. start + length - 1`` of ``y`` as ``dtype`` (default float64),
    shape (length,), zeros where the range runs off either end (``start`` may be
    negative)."""
    segment = np.zeros(length, dtype)
    inside = slice(max(start, 0), min(start + length, len(y)))
    if inside.start < inside.stop:
        segment[inside.start - start : inside.stop - start] = y[inside]
    return segment


def _frames(
    y: np.ndarray, first: int, count: int, n_fft: int, hop: int, dtype: type = np.float64
) -> np.ndarray:
    """Centred frames ``first .. first + count - 1`` of ``y`` as ``dtype`` (default
    float64), shape (count, n_fft): frame ``i`` holds samples ``i * hop - n_fft // 2`` on,
    zeros beyond the signal (librosa.stft's framing with ``center=True,
    pad_mode="constant"``). A view of one small zero-padded copy; ``y``: samples, shape
    (samples,)."""
    segment = _segment(y, first * hop - n_fft // 2, (count - 1) * hop + n_fft, dtype)
    return np.lib.stride_tricks.sliding_window_view(segment, n_fft)[::hop]


def _stft_blocks(
    y: np.ndarray, n_fft: int, hop: int, window: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """librosa.stft's columns, :data:`_FFT_BLOCK_FRAMES` frames at a time: pairs of the
    first frame's index and the block, shape (frames, 1 + n_fft // 2) complex64.

    The same numbers to the bit: float64 frames times the float64 ``window`` (shape
    (n_fft,); None: all ones), a float64 real FFT (scipy.fft, librosa's default), rounded to
    complex64; centred frames, ``1 + len(y) // hop`` of them. Row-major, unlike
    librosa's column-major matrix, so that nothing is transposed whole."""
    n_frames = 1 + len(y) // hop
    for first in range(0, n_frames, _FFT_BLOCK_FRAMES):
        frames = _frames(y, first, min(_FFT_BLOCK_FRAMES, n_frames - first), n_fft, hop)
        if window is not None:
            frames = frames * window
        yield first, scipy.fft.rfft(frames, axis=-1).astype(np.complex64)


def _parabolic_shift(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Librosa's parabolic peak interpolation at ``mid``: the vertex's offset in bins
    from the middle of three neighbouring magnitudes, 0 where it lies a bin or more
    away. float32 inputs of one shape; float32 out, computed in float64 as librosa's
    compiled stencil does (``a = x[1] + x[-1] - 2 * x[0]``, ``b = (x[1] - x[-1]) / 2``)."""
    a = (right + left).astype(np.float64) - 2.0 * mid
    b = (right - left).astype(np.float64) / 2.0
    far = np.abs(b) >= np.abs(a)
    shift = -b / np.where(far, 1.0, a)
    shift[far] = 0.0
    return shift.astype(np.float32)


def _band_peaks(
    spectrum: np.ndarray, threshold: np.ndarray, first_bin: int, sr: float
) -> tuple[np.ndarray, np.ndarray]:
    """librosa.piptrack's peaks within one band of bins: (pitches in Hz, magnitudes),
    each shape (peaks,) float32, in no particular order.

    ``spectrum``: magnitudes, shape (frames, band bins + 2) float32, bins ``first_bin
    - 1`` to one past the band (neighbours for the local maxima and the interpolation);
    ``threshold``: per frame, shape (frames, 1) float32. A bin is a peak where its
    thresholded magnitude is a local maximum; its pitch and magnitude are interpolated
    on a parabola through its unthresholded neighbours, with piptrack's arithmetic.
    """
    kept = spectrum * (spectrum > threshold)
    frame, bin_ = np.nonzero((kept[:, 1:-1] > kept[:, :-2]) & (kept[:, 1:-1] >= kept[:, 2:]))
    left, mid, right = (spectrum[frame, bin_ + offset] for offset in range(3))
    shift = _parabolic_shift(left, mid, right)
    slope = (right - left) / 2.0  # np.gradient's centred difference
    pitches = ((bin_ + first_bin) + shift) * float(sr) / _TUNING_N_FFT
    magnitudes = mid + 0.5 * slope * shift
    return pitches.astype(np.float32), magnitudes


def _tuning_band(sr: float) -> slice | None:
    """The FFT bins piptrack searches for peaks (``150 <= f < min(4000, sr / 2)`` Hz at
    librosa.estimate_tuning's FFT size), None if there are none (``sr`` under 300 Hz).
    They never include bin 0 or the Nyquist bin, so each has a neighbour either side."""
    freqs = librosa.fft_frequencies(sr=sr, n_fft=_TUNING_N_FFT)
    fmax = np.minimum(_TUNING_FMAX, float(sr) / 2)
    inside = np.flatnonzero((_TUNING_FMIN <= freqs) & (freqs < fmax))
    return slice(int(inside[0]), int(inside[-1]) + 1) if len(inside) else None


def estimate_tuning(y: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """The audio's deviation from A440 tuning in semitones, in [-0.5, 0.5) at a
    resolution of 0.01 (librosa's pitch-tracking estimate on a 12-bin-per-octave grid).
    ``y``: mono samples at ``sr`` Hz, shape (samples,).

    The value of ``librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=12)`` to the bit,
    computed on piptrack's band only (150-4000 Hz, 179 of 1025 bins at 44.1 kHz): the
    same STFT magnitudes (:func:`_stft_blocks`), thresholded at a tenth of each frame's
    maximum over the whole spectrum, the same peaks with piptrack's arithmetic
    (:func:`_band_peaks`), the same median magnitude cut and the same
    ``librosa.pitch_tuning`` histogram.
    """
    band = _tuning_band(sr)
    if band is None:  # no peaks to find: librosa's warning and answer
        return float(librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=12))
    window = librosa.filters.get_window("hann", _TUNING_N_FFT, fftbins=True)
    pitches, magnitudes = [], []
    for _, block in _stft_blocks(y, _TUNING_N_FFT, _TUNING_N_FFT // 4, window):
        spectrum = np.abs(block)
        threshold = _TUNING_THRESHOLD * spectrum.max(axis=1, keepdims=True)
        found = _band_peaks(spectrum[:, band.start - 1 : band.stop + 1], threshold, band.start, sr)
        pitches.append(found[0])
        magnitudes.append(found[1])
    pitch, magnitude = np.concatenate(pitches), np.concatenate(magnitudes)
    voiced = pitch > 0
    cut = np.median(magnitude[voiced]) if voiced.any() else 0.0
    tuning = librosa.pitch_tuning(pitch[(magnitude >= cut) & voiced], resolution=0.01)
    return float(tuning)


def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    """Librosa's relative filter bandwidths (alpha) for ascending ``freqs`` in Hz, shape
    (bins,): from the local octave resolution, one-sided at the ends (a copy of
    librosa.filters._relative_bandwidth, which is private)."""
    bpo = np.empty_like(freqs)
    logf = np.log2(freqs)
    bpo[0] = 1 / (logf[1] - logf[0])
    bpo[-1] = 1 / (logf[-1] - logf[-2])
    bpo[1:-1] = 2 / (logf[2:] - logf[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


def _early_downsample_count(sr: float, filter_cutoff: float, hop: int) -> int:
    """How many times librosa.cqt halves the signal before its first octave: while the
    filters stay below a quarter of the Nyquist frequency and the hop, divided by two
    each octave, stays an integer."""
    count1 = max(0, int(np.ceil(np.log2(sr / 2.0 / filter_cutoff)) - 1) - 1)
    twos = (hop & -hop).bit_length() - 1
    return min(count1, max(0, twos - _N_OCTAVES + 1))


def _octave(sr: float, base_sr: float, hop: int, freqs: np.ndarray, alpha: np.ndarray) -> _Octave:
    """One octave's filters as librosa.cqt builds them (its ``__vqt_filter_fft`` with
    the rescaling for downsampling), restricted to the FFT bins they touch. ``sr``: the
    octave's rate, ``base_sr``: the rate after early downsampling, Hz; ``freqs``,
    ``alpha``: the octave's centre frequencies, Hz, and relative bandwidths, (filters,)."""
    basis, lengths = librosa.filters.wavelet(
        freqs=freqs, sr=sr, filter_scale=1, norm=1, pad_fft=True, window="hann", alpha=alpha
    )
    n_fft = basis.shape[1]
    basis *= lengths[:, np.newaxis] / float(n_fft)
    fft_basis = scipy.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    fft_basis = librosa.util.sparsify_rows(fft_basis, quantile=0.01, dtype=np.complex64)
    fft_basis[:] *= np.sqrt(base_sr / sr)
    band = slice(int(fft_basis.indices.min()), int(fft_basis.indices.max()) + 1)
    return _Octave(sr, hop, n_fft, band, fft_basis[:, band])


@functools.lru_cache(maxsize=8)
def _cqt_plan(sr: float, tuning: float) -> _CqtPlan:
    """The filter bank of ``librosa.cqt(sr=sr, hop_length=HOP_LENGTH, n_bins=252,
    bins_per_octave=36, tuning=tuning)`` (C1 up, 7 octaves; ``tuning`` in CQT bins),
    built once per rate and tuning (the estimates fall on a grid of 101 values)."""
    fmin = librosa.note_to_hz("C1") * 2.0 ** (tuning / _BINS_PER_OCTAVE)
    freqs = librosa.interval_frequencies(
        n_bins=_N_OCTAVES * _BINS_PER_OCTAVE,
        fmin=fmin,
        intervals="equal",
        bins_per_octave=_BINS_PER_OCTAVE,
        sort=True,
    )
    alpha = _relative_bandwidth(freqs)
    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, window="hann", alpha=alpha)
    downsample = 2 ** _early_downsample_count(sr, cutoff, HOP_LENGTH)
    base_sr = sr / float(downsample) if downsample > 1 else sr
    hop = HOP_LENGTH // downsample
    if hop % 2 ** (_N_OCTAVES - 1):  # librosa would stop halving: not reproduced
        raise ValueError(f"hop {HOP_LENGTH} has too few factors of two for the CQT")
    octaves, my_sr = [], base_sr
    for i in range(_N_OCTAVES):
        top = len(freqs) - i * _BINS_PER_OCTAVE
        span = slice(top - _BINS_PER_OCTAVE, top)
        octaves.append(_octave(my_sr, base_sr, hop, freqs[span], alpha[span]))
        hop, my_sr = hop // 2, my_sr / 2.0
    lengths, _ = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=base_sr, window="hann", alpha=alpha
    )
    scale = np.sqrt(lengths)[:, np.newaxis]
    scale.flags.writeable = False  # shared by every call
    return _CqtPlan(downsample, tuple(octaves), scale)


def _fft_band(y: np.ndarray, n_fft: int, hop: int, band: slice) -> np.ndarray:
    """Bins ``band`` of librosa.stft (window of ones), shape (band bins, 1 + len(y) //
    hop) complex64, from FFTs of whole frames (:func:`_stft_blocks`)."""
    spectrum = np.empty((band.stop - band.start, 1 + len(y) // hop), np.complex64)
    for first, block in _stft_blocks(y, n_fft, hop):
        spectrum[:, first : first + len(block)] = block[:, band].T
    return spectrum


@functools.lru_cache(maxsize=32)
def _sliding_dft_tables(
    n_fft: int, hop: int, first_bin: int, stop_bin: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The constants of :func:`_sliding_band` for bins ``first_bin .. stop_bin - 1``:
    the DFT of a ``hop``-sample block at those bins, shape (hop, 2 * bins) float64, real
    and imaginary parts interleaved; and, for block or frame ``i``, the phase turning it
    from its own time origin to sample 0 and the one turning a frame back, each shape
    (n_fft // hop, bins) complex128, row ``i % (n_fft // hop)``."""
    blocks_per_frame = n_fft // hop
    bins = np.arange(first_bin, stop_bin)
    block = np.exp(-2j * np.pi * ((np.arange(hop)[:, np.newaxis] * bins) % n_fft) / n_fft)
    phase = (np.arange(blocks_per_frame)[:, np.newaxis] * bins) % blocks_per_frame
    to_origin = np.exp(-2j * np.pi * phase / blocks_per_frame)
    tables = block.view(np.float64), to_origin, to_origin.conj()
    for table in tables:
        table.flags.writeable = False  # shared by every call
    return tables


def _sliding_band(y: np.ndarray, n_fft: int, hop: int, band: slice) -> np.ndarray:
    """Bins ``band`` of librosa.stft (window of ones), shape (band bins, 1 + len(y) //
    hop) complex64, for a hop of a small fraction of the frame: each frame is
    ``n_fft // hop`` blocks of ``hop`` samples, so its DFT is the sum of theirs, phased.

    Per chunk of frames: the blocks' DFTs at the band's bins (one matrix product),
    turned to a common time origin, summed over each frame's blocks (pairwise, by
    doubling), turned back to each frame's origin. All in float64: the rounded result
    is that of librosa's float64 FFT except for a value in about a million, by 1 ulp.
    Its cost grows with the samples times the band, an FFT's with the frames."""
    blocks_per_frame = n_fft // hop
    chunk = blocks_per_frame * max(1, _SLIDING_CHUNK_FRAMES // blocks_per_frame)  # frames
    block_dft, to_origin, to_frame = _sliding_dft_tables(n_fft, hop, band.start, band.stop)
    n_frames, n_bins = 1 + len(y) // hop, band.stop - band.start
    spectrum = np.empty((n_bins, n_frames), np.complex64)
    for first in range(0, n_frames, chunk):
        segment = _segment(y, first * hop - n_fft // 2, (chunk + blocks_per_frame) * hop)
        sums = (segment.reshape(-1, hop) @ block_dft).view(np.complex128)
        sums.reshape(-1, blocks_per_frame, n_bins)[...] *= to_origin
        width = 1
        while width < blocks_per_frame:  # sums[i]: blocks i .. i + 2 * width - 1
            sums = sums[:-width] + sums[width:]
            width *= 2
        frames = sums[:chunk].reshape(-1, blocks_per_frame, n_bins) * to_frame
        count = min(chunk, n_frames - first)
        spectrum[:, first : first + count] = frames.reshape(chunk, n_bins)[:count].T
    return spectrum


def _octave_response(y: np.ndarray, octave: _Octave) -> np.ndarray:
    """One octave's complex filter responses, shape (filters, 1 + len(y) // hop)
    complex64: librosa's sparse basis times its STFT (window of ones), with only the
    basis's band of the STFT computed, laid out bin by bin for the product.
    ``y``: the octave's signal at ``octave.sr``, shape (samples,)."""
    if octave.n_fft % octave.hop == 0 and octave.hop * _SLIDING_MAX_HOP_FRACTION <= octave.n_fft:
        spectrum = _sliding_band(y, octave.n_fft, octave.hop, octave.band)
    else:
        spectrum = _fft_band(y, octave.n_fft, octave.hop, octave.band)
    return octave.basis @ spectrum


def cqt_magnitude(y: np.ndarray, sr: int = SAMPLE_RATE, tuning: float = 0.0) -> np.ndarray:
    """``np.abs(librosa.cqt(y, sr=sr, hop_length=512, n_bins=252, bins_per_octave=36,
    tuning=tuning))``, shape (252, frames) float32, bins from C1 (shifted by ``tuning``,
    in fractions of a bin) up, ``frames`` about ``1 + len(y) // 512``.

    librosa's multirate algorithm with its numbers: early decimation, per octave a
    centred STFT times the sparse filter FFTs (each filter only on its bins), then
    halving (soxr_hq), trimming to the shortest octave, length normalisation. Faster
    than librosa.cqt by computing the STFT row by row and only on the filters' band.
    ``y``: mono float32 samples at ``sr`` Hz, shape (samples,).
    """
    plan = _cqt_plan(sr, tuning)
    if plan.downsample > 1:
        y = librosa.resample(y, orig_sr=plan.downsample, target_sr=1, **_RESAMPLE_KW)
    responses = []
    for i, octave in enumerate(plan.octaves):
        if i:
            y = librosa.resample(y, orig_sr=2, target_sr=1, **_RESAMPLE_KW)
        responses.append(_octave_response(y, octave))
    n_frames = min(response.shape[1] for response in responses)
    magnitude = np.empty((len(plan.scale), n_frames), np.float32)
    for i, response in enumerate(responses):
        rows = slice(
            len(plan.scale) - (i + 1) * _BINS_PER_OCTAVE, len(plan.scale) - i * _BINS_PER_OCTAVE
        )
        response = response[:, :n_frames]
        response /= plan.scale[rows]  # in complex128, rounded to complex64, as librosa
        np.abs(response, out=magnitude[rows])
    return magnitude


@first_call_locked  # librosa's numba cache, filled by one process at a time
def chroma_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """CENS chroma like the data set's: shape (frames, 12) float32, frames = ``1 + len(y) // 512``.

    ``y``: mono samples at 44.1 kHz, shape (samples,). Pitch classes C..B; each
    non-silent row has unit L2 norm, silent rows (see :data:`SILENCE_DB`) are zero.
    """
    y = _check_signal(y, sr)
    tuning_bins = estimate_tuning(y, sr) * _BINS_PER_OCTAVE / 12  # librosa's unit: CQT bins
    cqt = cqt_magnitude(y, sr, tuning_bins)
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
