"""From songs to model inputs: level (frame or beat) and sequence mode (window or sequence).

Two ways to show a model ``L`` consecutive steps (frames or beats):

* ``window`` (the course code's many-to-one): one example per target step, the
  ``L`` steps ending at that target, left zero-padded at the start of a song; the
  model's last output predicts the target.
* ``sequence`` (many-to-many): each song cut into consecutive chunks of ``L``
  steps, the last chunk zero-padded at the end (padded steps carry the label
  :data:`IGNORE_LABEL` and are never scored); every step is predicted.

Both modes predict every step of every song exactly once at evaluation time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from chordrec.data.beats import beat_sync, beat_sync_labels, expand_beats_to_frames
from chordrec.data.chords import transpose_chroma, transpose_labels
from chordrec.data.songs import Song

IGNORE_LABEL = -100
LEVELS = ("frame", "beat")
MODES = ("window", "sequence")


@dataclass(frozen=True)
class SongSteps:
    """A song at one level: ``features`` (steps, 12), ``labels`` (steps,), plus what
    is needed to score at frame level (``song.labels``; ``song.beats`` at beat level)."""

    song: Song
    level: str
    features: np.ndarray
    labels: np.ndarray

    @property
    def n_steps(self) -> int:
        """The number of steps (frames or beats)."""
        return len(self.labels)

    def to_frames(self, step_values: np.ndarray) -> np.ndarray:
        """Per-step values (steps, ...) to per-frame values (frames, ...)."""
        if self.level == "frame":
            return step_values
        return expand_beats_to_frames(step_values, self.song.beats, self.song.n_frames)


def song_steps(song: Song, level: str) -> SongSteps:
    """The song at ``level`` 'frame' (chroma frames) or 'beat' (beat-synchronous spans)."""
    if level == "frame":
        return SongSteps(song, level, song.chroma, song.labels)
    if level == "beat":
        return SongSteps(
            song,
            level,
            beat_sync(song.chroma, song.beats),
            beat_sync_labels(song.labels, song.beats),
        )
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def count_chunks(n_steps: Sequence[int], length: int = 32) -> int:
    """The report's example count: per song ``floor(steps / length)``, summed."""
    return int(sum(n // length for n in n_steps))


def song_windows(features: np.ndarray, seq_len: int) -> np.ndarray:
    """Every step's window: (steps, seq_len, 12), window t = steps t-L+1..t, zero-padded
    at the song start. A read-only view of one padded copy (no per-window copies)."""
    padded = np.concatenate([np.zeros((seq_len - 1, features.shape[1]), features.dtype), features])
    return np.lib.stride_tricks.sliding_window_view(padded, seq_len, axis=0).transpose(0, 2, 1)


def song_chunks(
    features: np.ndarray, labels: np.ndarray, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive chunks: (chunks, seq_len, 12) and (chunks, seq_len) labels, the last chunk
    zero-padded with :data:`IGNORE_LABEL` labels; chunks = ceil(steps / seq_len)."""
    n_chunks = -(-len(labels) // seq_len)
    pad = n_chunks * seq_len - len(labels)
    x = np.concatenate([features, np.zeros((pad, features.shape[1]), features.dtype)])
    y = np.concatenate([labels, np.full(pad, IGNORE_LABEL, labels.dtype)])
    return x.reshape(n_chunks, seq_len, -1), y.reshape(n_chunks, seq_len)


@dataclass(frozen=True)
class ChromaAugment:
    """Random changes to training chroma that keep its chords, so that a model does not
    learn one recording style (config ``data.chroma_augment``); all zero: none.

    Per example: every pitch-class bin is scaled by a gain of ``bin_gain_db`` dB
    standard deviation (an instrument mix or a microphone's colour); with probability
    ``mix_prob`` another example of the batch is added at a weight drawn uniformly in
    ``[0, mix]`` (a second, unrelated sound: the label stays the first one's); then
    half-normal noise of ``noise`` standard deviation is added to every bin of every
    non-silent step. Steps are L2-normalised again; silent (all-zero) steps stay
    silent."""

    bin_gain_db: float = 0.0
    noise: float = 0.0
    mix: float = 0.0
    mix_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("bin_gain_db", "noise", "mix"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"chroma_augment.{name} must be >= 0, got {value}")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise ValueError(f"chroma_augment.mix_prob must lie in [0, 1], got {self.mix_prob}")

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return bool(self.bin_gain_db or self.noise or self.mix)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Augment a batch ``x`` (batch, steps, 12) float32; returns a new array. Random
        draws come from torch's RNG (seeded per run, DataLoader worker and epoch)."""
        batch = x.shape[0]
        silent = ~(x != 0).any(axis=-1, keepdims=True)
        out = x.astype(np.float32, copy=True)
        if self.bin_gain_db:
            gain_db = torch.randn(batch, 1, 12, dtype=torch.float64).numpy() * self.bin_gain_db
            out *= (10.0 ** (gain_db / 20)).astype(np.float32)
        if self.mix:
            partner = torch.randperm(batch).numpy()
            use = torch.rand(batch, dtype=torch.float64).numpy() < self.mix_prob
            weight = torch.rand(batch, dtype=torch.float64).numpy() * self.mix * use
            out += weight[:, None, None].astype(np.float32) * x[partner]
        if self.noise:
            out += np.abs(torch.randn(out.shape, dtype=torch.float32).numpy()) * self.noise
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        out = np.where(silent, 0.0, out / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


class BatchedExamples(torch.utils.data.Dataset):
    """Training examples of several songs, indexed by *lists* of example indices.

    Use with ``DataLoader(dataset, batch_size=None, sampler=BatchSampler(...))``: each
    item is a whole batch ``(x, y)``, x float32 (batch, seq_len, 12), y int64 (batch,)
    in window mode or (batch, seq_len) in sequence mode. ``augment='transpose'`` rotates
    each example by a random 0..11 semitones (chroma bins and chord roots alike),
    drawn from torch's RNG (seeded per DataLoader worker and epoch).

    ``random_offset`` (sequence mode, training): each chunk starts a random 0..L-1 steps
    after its fixed start (at most at the song's last step), drawn per example, so chunk
    boundaries move from epoch to epoch; steps past a song's end are padding
    (:data:`IGNORE_LABEL`). Off, the chunks are exactly :func:`song_chunks`.

    ``chroma_augment`` (:class:`ChromaAugment`) changes each batch's chroma after the
    transposition.

    ``pool`` (songs of another source, e.g. synthetic ones) with ``pool_fraction`` in
    (0, 1): their examples are indexed after those of ``songs``, and each epoch
    (:meth:`epoch_order`) trains on every example of ``songs`` and on as many examples
    drawn afresh from the pool as make ``pool_fraction`` of the epoch's examples.
    """

    def __init__(
        self,
        songs: Sequence[SongSteps],
        seq_len: int,
        mode: str,
        augment: str = "none",
        random_offset: bool = False,
        chroma_augment: ChromaAugment | None = None,
        pool: Sequence[SongSteps] = (),
        pool_fraction: float = 0.0,
    ):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if pool and not 0.0 < pool_fraction < 1.0:
            raise ValueError(f"pool_fraction must lie in (0, 1) with a pool, got {pool_fraction}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if augment not in ("none", "transpose"):
            raise ValueError(f"augment must be 'none' or 'transpose', got {augment!r}")
        if random_offset and mode != "sequence":
            raise ValueError("random_offset applies to sequence mode only")
        self.seq_len, self.mode, self.augment = seq_len, mode, augment
        self.random_offset = random_offset
        self.chroma_augment = chroma_augment if chroma_augment and chroma_augment.active else None
        self.base = self._count(songs)
        self.pool_fraction = pool_fraction if pool else 0.0
        songs = [*songs, *pool]
        if mode == "window":
            # One padded stream: each song preceded by seq_len - 1 zero rows.
            parts, targets, labels, offset = [], [], [], 0
            for s in songs:
                parts += [np.zeros((seq_len - 1, 12), np.float32), s.features]
                offset += seq_len - 1
                targets.append(offset + np.arange(s.n_steps))
                labels.append(s.labels)
                offset += s.n_steps
            self.stream = np.concatenate(parts).astype(np.float32)
            self.targets = np.concatenate(targets)
            self.labels = np.concatenate(labels)
            self._window = np.arange(-seq_len + 1, 1)
        else:
            # One stream: each song's chunks (ceil(steps / L) * L steps, padded as in
            # song_chunks) followed by L more padding steps for a shifted last chunk.
            parts, labels, starts, max_offsets, offset = [], [], [], [], 0
            for s in songs:
                x, y = song_chunks(s.features, s.labels, seq_len)
                parts += [x.reshape(-1, 12), np.zeros((seq_len, 12), np.float32)]
                labels += [y.reshape(-1), np.full(seq_len, IGNORE_LABEL, y.dtype)]
                fixed = seq_len * np.arange(len(x))
                starts.append(offset + fixed)
                max_offsets.append(np.minimum(seq_len - 1, s.n_steps - 1 - fixed))
                offset += (len(x) + 1) * seq_len
            self.stream = np.concatenate(parts).astype(np.float32)
            self.stream_labels = np.concatenate(labels)
            self.targets = np.concatenate(starts)
            self.max_offsets = np.concatenate(max_offsets)
            self._window = np.arange(seq_len)

    def _count(self, songs: Sequence[SongSteps]) -> int:
        """The number of examples of ``songs``: one per step (window mode) or chunk."""
        if self.mode == "window":
            return sum(s.n_steps for s in songs)
        return sum(-(-s.n_steps // self.seq_len) for s in songs)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def pool_per_epoch(self) -> int:
        """The examples an epoch draws from the pool: ``pool_fraction`` of the epoch's."""
        if not self.pool_fraction:
            return 0
        return round(self.base * self.pool_fraction / (1.0 - self.pool_fraction))

    def epoch_order(self, stride: int = 1) -> list[int]:
        """One epoch's examples in a random order (torch's RNG), a random ``1/stride`` of
        them: every example of ``songs`` and :attr:`pool_per_epoch` of the pool's, drawn
        without repeats until the pool is used up (then from a fresh pass over it)."""
        chosen = torch.arange(self.base)
        if self.pool_fraction:
            pool = len(self) - self.base
            passes = -(-self.pool_per_epoch // pool)
            drawn = torch.cat([torch.randperm(pool) for _ in range(passes)])
            chosen = torch.cat([chosen, self.base + drawn[: self.pool_per_epoch]])
        count = max(1, len(chosen) // max(1, stride))
        return chosen[torch.randperm(len(chosen))[:count]].tolist()

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        indices = np.asarray(indices)
        if self.mode == "window":
            x = self.stream[self.targets[indices][:, None] + self._window]
            y = self.labels[indices]
        else:
            starts = self.targets[indices]
            if self.random_offset:
                draw = torch.rand(len(indices), dtype=torch.float64).numpy()
                starts = starts + (draw * (self.max_offsets[indices] + 1)).astype(np.int64)
            x = self.stream[starts[:, None] + self._window]
            y = self.stream_labels[starts[:, None] + self._window]
        if self.augment == "transpose":
            shift = torch.randint(0, 12, (len(indices),)).numpy()
            x = transpose_chroma(x, shift[:, None])
            y = transpose_labels(y, shift if y.ndim == 1 else shift[:, None])
        if self.chroma_augment is not None:
            x = self.chroma_augment(x)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
