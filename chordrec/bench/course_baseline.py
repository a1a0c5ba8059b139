"""A faithful re-implementation of the course's baseline training loop, as a yardstick
for window mode (many-to-one) in :mod:`chordrec.bench.training`.

What the course code does, per the report (``../shared/docs/original-report.md``) and
the figures measured on it: every example is the L frames ending at its target frame,
left zero-padded at a song's start, and all of them are built up front as one float64
array (1.9 GB for the training songs at L = 16); a ``TensorDataset`` and a
``DataLoader`` (batch 32) feed a bidirectional LSTM(64) run time-major (L, batch, 12)
whose last output goes through FC 128→25; Adam, cross-entropy, and the running loss and
accuracy read back every batch. Only the figures come from the course; this code is
written here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from chordrec.data.sequences import SongSteps


def course_windows(songs: Sequence[SongSteps], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's window as the course builds them: ``(examples, seq_len, 12)``
    float64, window t = frames t-L+1..t of its song, zeros before the song's start, and
    the target labels ``(examples,)`` int64. Memory: examples × L × 12 × 8 bytes."""
    total = sum(len(s.labels) for s in songs)
    windows = np.zeros((total, seq_len, 12), dtype=np.float64)
    labels = np.empty(total, dtype=np.int64)
    row = 0
    for song in songs:
        features = np.asarray(song.features, dtype=np.float64)
        for t in range(len(features)):
            first = max(0, t - seq_len + 1)
            windows[row, seq_len - (t + 1 - first) :] = features[first : t + 1]
            labels[row] = song.labels[t]
            row += 1
    return windows, labels


class CourseBiLSTM(nn.Module):
    """The course baseline: bidirectional LSTM(64), time-major input (L, batch, 12), FC
    128→25 on the last step's output."""

    def __init__(self, hidden_size: int = 64, n_classes: int = 25) -> None:
        super().__init__()
        self.lstm = nn.LSTM(12, hidden_size, bidirectional=True)
        self.fc = nn.Linear(2 * hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(L, batch, 12) → logits (batch, 25)."""
        out, _ = self.lstm(x)
        return self.fc(out[-1])


def course_loader(
    windows: np.ndarray, labels: np.ndarray, order: Sequence[int], batch_size: int = 32
) -> torch.utils.data.DataLoader:
    """The course's loader over the prebuilt windows, in ``order`` (its shuffle)."""
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(windows), torch.from_numpy(labels))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=list(order))


def course_train(
    model: CourseBiLSTM,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    seconds: float,
) -> tuple[int, float]:
    """The course's training loop over ``loader`` (from its start, again as needed) for
    about ``seconds``; returns (examples trained, seconds taken)."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    examples, running_loss, correct = 0, 0.0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, y in loader:
            x = x.float().permute(1, 0, 2)  # (L, batch, 12)
            out = model(x)
            loss = criterion(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            correct += (out.argmax(1) == y).sum().item()
            examples += len(y)
            if time.perf_counter() - start >= seconds:
                break
    return examples, time.perf_counter() - start
