"""The checkpoint file format: one owner for writing and reading ``.pt`` files.

A checkpoint is a dict of tensors and plain data (model and optimizer state, epoch,
RNG states, history, the run's resolved ``config`` and, once the run is scored, its
``decoding``): written atomically, read with ``torch.load(weights_only=True)`` so that
loading never unpickles code, and mapped onto the device that reads it, so that a run
trained on a GPU is resumed, re-evaluated or transcribed on a CPU-only machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from chordrec.errors import UserError
from chordrec.io.atomic_write import write_atomic


class CheckpointError(UserError, ValueError):
    """A file that is not a loadable chordrec checkpoint."""


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`~chordrec.io.atomic_write.write_atomic`):
    a reader never sees a half-written checkpoint. Returns ``path``."""
    write_atomic(path, lambda tmp: torch.save(state, tmp), force=True)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, its tensors mapped onto ``device``.
    Raises :class:`CheckpointError` naming the file when it is missing, corrupt or holds
    anything but tensors and plain data."""
    try:
        state = torch.load(path, map_location=torch.device(device), weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, OSError on bad files
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a chordrec checkpoint (holds a {type(state).__name__})")
    return state
