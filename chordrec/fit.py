"""The training loop: fit a model on training examples, pick the best epoch on validation.

It knows nothing about where its metrics go: after every epoch it writes checkpoint
files and hands the epoch's metrics and checkpoint paths to an observer.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from chordrec.data.sequences import (
    IGNORE_LABEL,
    BatchedExamples,
    SongSteps,
    song_chunks,
    song_windows,
)
from chordrec.io.checkpoints import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cpu' / 'cuda' / 'cuda:N' as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is available")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def predict_log_probs(
    model: nn.Module,
    steps: SongSteps,
    seq_len: int,
    mode: str,
    device: torch.device,
    batch_size: int = 1024,
    overlap: bool = False,
    amp: bool = False,
) -> np.ndarray:
    """Log class posteriors for every step of one song: (steps, classes) float32.

    ``window`` mode predicts step t from the ``seq_len`` steps ending at t (the
    model's last output); ``sequence`` mode predicts all steps of consecutive chunks.
    With ``overlap`` (sequence mode), chunks start every ``seq_len // 2`` steps, so every
    step lies in two chunks, and its posterior is their average weighted by a triangle
    that peaks mid-chunk: no step is predicted from one side of its context only.
    ``amp``: run in float16 on CUDA (:func:`uses_mixed_precision`).
    """
    model.eval()
    if mode == "window":
        inputs = song_windows(steps.features, seq_len)
    elif overlap:
        return _overlapped_log_probs(model, steps.features, seq_len, device, batch_size, amp)
    else:
        inputs, _ = song_chunks(steps.features, steps.labels, seq_len)
    logits = _batched_logits(model, inputs, mode, device, batch_size, amp)
    return torch.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1]).numpy()[: steps.n_steps]


def _batched_logits(
    model: nn.Module,
    inputs: np.ndarray,
    mode: str,
    device: torch.device,
    batch_size: int,
    amp: bool,
) -> torch.Tensor:
    """The model's float32 CPU logits for ``inputs`` (examples, seq_len, features), run in
    batches: (examples, classes) in window mode, (examples, seq_len, classes) otherwise."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        x = torch.from_numpy(np.array(inputs[start : start + batch_size], dtype=np.float32))
        with torch.autocast("cuda", dtype=torch.float16, enabled=uses_mixed_precision(device, amp)):
            x = x.to(device)
            logits = model(x)[:, -1] if mode == "window" else model.step_logits(x)
        outputs.append(logits.float().cpu())
    return torch.cat(outputs)


def _overlapped_log_probs(
    model: nn.Module,
    features: np.ndarray,
    seq_len: int,
    device: torch.device,
    batch_size: int,
    amp: bool,
) -> np.ndarray:
    if seq_len < 2:
        raise ValueError(f"overlapped chunks need seq_len >= 2, got {seq_len}")
    hop, n = seq_len // 2, len(features)
    # hop zero steps before the song, seq_len after: step i sits at hop + i and lies in
    # the two chunks starting at the multiples of hop in (hop + i - seq_len, hop + i].
    padded = np.concatenate(
        [
            np.zeros((hop, features.shape[1]), np.float32),
            features,
            np.zeros((seq_len, features.shape[1]), np.float32),
        ]
    )
    starts = np.arange(0, hop + n, hop)
    inputs = np.lib.stride_tricks.sliding_window_view(padded, seq_len, axis=0)[starts]
    probs = torch.softmax(
        _batched_logits(model, inputs.transpose(0, 2, 1), "sequence", device, batch_size, amp),
        -1,
    ).numpy()
    position = np.arange(seq_len)
    weight = np.minimum(position + 1, seq_len - position).astype(np.float32)
    total = np.zeros((len(padded), probs.shape[-1]), np.float32)
    weights = np.zeros(len(padded), np.float32)
    for start, chunk in zip(starts, probs, strict=True):
        total[start : start + seq_len] += weight[:, None] * chunk
        weights[start : start + seq_len] += weight
    mean = total[hop : hop + n] / weights[hop : hop + n, None]
    return np.log(np.maximum(mean, np.finfo(np.float32).tiny))


@dataclass
class Evaluation:
    """Step-level loss and frame-level accuracy over songs, and each song's
    frame-level log posteriors (frames, classes)."""

    loss: float
    frame_accuracy: float
    n_frames: int
    log_probs: list[np.ndarray]


def evaluate(
    model: nn.Module,
    songs: Sequence[SongSteps],
    seq_len: int,
    mode: str,
    device: torch.device,
    batch_size: int = 1024,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
    overlap: bool = False,
    amp: bool = False,
) -> Evaluation:
    """Score every frame of ``songs``: beat-level predictions are spread over their
    frames. ``decode`` maps frame log posteriors to classes (default argmax);
    ``overlap`` and ``amp`` as in :func:`predict_log_probs`."""
    loss_sum, n_steps, correct, n_frames, frame_log_probs = 0.0, 0, 0, 0, []
    for steps in songs:
        log_probs = predict_log_probs(model, steps, seq_len, mode, device, batch_size, overlap, amp)
        loss_sum += float(-log_probs[np.arange(steps.n_steps), steps.labels].sum())
        n_steps += steps.n_steps
        frame_lp = steps.to_frames(log_probs)
        predicted = decode(frame_lp) if decode else frame_lp.argmax(axis=1)
        correct += int((predicted == steps.song.labels).sum())
        n_frames += steps.song.n_frames
        frame_log_probs.append(frame_lp)
    return Evaluation(loss_sum / n_steps, correct / n_frames, n_frames, frame_log_probs)


def uses_mixed_precision(device: torch.device, amp: bool) -> bool:
    """Whether training and evaluation run in float16 autocast: only on CUDA, and only
    when ``amp`` (``trainer.amp``) asks for it."""
    return amp and device.type == "cuda"


class EpochObserver(Protocol):
    """Receives each finished epoch: its metrics and the checkpoint files written for it
    (``last`` always, ``best`` when validation accuracy improved)."""

    def __call__(
        self, epoch: int, metrics: dict[str, float], checkpoints: dict[str, Path]
    ) -> None: ...


@dataclass
class TrainerSettings:
    max_epochs: int = 200
    min_lr: float = 1e-5
    early_stopping_patience: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 1024
    eval_seq_len: int | None = None  # steps per chunk when evaluating (None: training's)
    eval_overlap: bool = False  # sequence mode: half-overlapping evaluation chunks
    num_workers: int = 0
    window_stride: int = 1
    grad_clip: float | None = None
    amp: bool = True
    progress: bool = True


@dataclass
class FitResult:
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    converged: bool
    stop_reason: str
    train_time_s: float
    best_state: dict[str, torch.Tensor] = field(repr=False)

    @classmethod
    def untrained(cls, model: nn.Module) -> FitResult:
        """The result of not training a model that has nothing to train."""
        return cls({}, 0, 0, False, "training_free", 0.0, model.state_dict())


def _state(model, optimizer, scheduler, scaler, epoch, history, best) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "history": history,
        "best": best,
    }


def train_epoch(
    model: nn.Module,
    train: BatchedExamples,
    order: Sequence[int],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    settings: TrainerSettings,
    device: torch.device,
    desc: str = "train",
) -> tuple[float, float]:
    """One pass over the examples ``order`` (indices into ``train``) in batches; returns
    the mean loss and accuracy over the predicted steps (padding excluded)."""
    batches = [
        order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)
    ]
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=None,
        sampler=batches,
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
    )
    use_amp = scaler.is_enabled()
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL)
    model.train()
    loss_sum, correct, counted = 0.0, 0, 0
    bar = tqdm(
        loader,
        desc=desc,
        leave=False,
        disable=not settings.progress,
        unit="batch",
        dynamic_ncols=True,
    )
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            logits = model(x)[:, -1] if train.mode == "window" else model.step_logits(x)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if settings.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        mask = y != IGNORE_LABEL
        n = int(mask.sum())
        loss_sum += loss.item() * n
        correct += int((logits.argmax(-1) == y)[mask].sum())
        counted += n
        if bar.n % 25 == 0:  # refreshing the bar every batch costs as much as a small batch
            bar.set_postfix(loss=f"{loss_sum / counted:.3f}", acc=f"{correct / counted:.3f}")
    bar.close()
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"training loss became {loss_sum} ({desc})")
    return loss_sum / counted, correct / counted


def fit(
    model: nn.Module,
    train: BatchedExamples,
    validation: Sequence[SongSteps],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau,
    settings: TrainerSettings,
    device: torch.device,
    checkpoint_dir: Path,
    observer: EpochObserver | None = None,
    resume_from: dict[str, Any] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
) -> FitResult:
    """Train until the learning rate falls below ``min_lr`` (converged), validation
    accuracy stops improving for ``early_stopping_patience`` epochs, or ``max_epochs``.

    The scheduler steps once per epoch: a ``ReduceLROnPlateau`` on the validation loss
    (and only then does ``min_lr`` end training), any other (e.g. cosine annealing over
    ``max_epochs``) on the epoch count.

    Every epoch writes ``last.pt`` (and ``best.pt`` on a new best validation accuracy)
    under ``checkpoint_dir``: model, optimizer, scheduler, scaler, epoch, RNG states,
    metric history and ``checkpoint_extra`` (e.g. the run's config), all loadable with
    ``torch.load(..., weights_only=True)``. ``resume_from`` is such a checkpoint:
    training continues after its epoch. Epochs are numbered from 1.
    """
    model.to(device)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    use_amp = uses_mixed_precision(device, settings.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: dict[str, list[float]] = {}
    best = {"epoch": 0, "val_acc": -math.inf}
    start_epoch, elapsed = 1, 0.0
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        optimizer.load_state_dict(resume_from["optimizer"])
        scheduler.load_state_dict(resume_from["scheduler"])
        if resume_from["scaler"]:  # empty when the run so far trained without mixed precision
            scaler.load_state_dict(resume_from["scaler"])
        set_rng_state(resume_from["rng"])
        history = {k: list(v) for k, v in resume_from["history"].items()}
        best = dict(resume_from["best"])
        start_epoch = int(resume_from["epoch"]) + 1
        elapsed = float(sum(history.get("epoch_time_s", [])))
        log.info("resuming after epoch %d", start_epoch - 1)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best["epoch"] and (checkpoint_dir / "best.pt").exists():
        best_state = load_checkpoint(checkpoint_dir / "best.pt", device)["model"]
    n_per_epoch = max(1, len(train) // max(1, settings.window_stride))
    stop_reason, converged, epochs_run = "max_epochs", False, start_epoch - 1
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and _lr(optimizer) < settings.min_lr:  # resumed after the stop rule had fired
        stop_reason, converged = "lr_below_min", True
    for epoch in range(start_epoch, settings.max_epochs + 1):
        if converged:
            break
        started = time.perf_counter()
        order = torch.randperm(len(train))[:n_per_epoch].tolist()
        train_loss, train_acc = train_epoch(
            model, train, order, optimizer, scaler, settings, device, desc=f"epoch {epoch}"
        )
        val = evaluate(
            model,
            validation,
            settings.eval_seq_len or train.seq_len,
            train.mode,
            device,
            settings.eval_batch_size,
            overlap=settings.eval_overlap,
            amp=settings.amp,
        )
        lr = _lr(optimizer)
        if plateau:
            scheduler.step(val.loss)
        else:
            scheduler.step()
        epoch_time = time.perf_counter() - started
        elapsed += epoch_time
        metrics = {
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val.loss,
            "val_acc": val.frame_accuracy,
            "lr": lr,
            "epoch_time_s": epoch_time,
        }
        for key, value in metrics.items():
            history.setdefault(key, []).append(value)
        written = {}
        if val.frame_accuracy > best["val_acc"]:
            best = {"epoch": epoch, "val_acc": val.frame_accuracy}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state = _state(model, optimizer, scheduler, scaler, epoch, history, best)
        state.update(checkpoint_extra or {})
        if best["epoch"] == epoch:
            written["best"] = save_checkpoint(state, checkpoint_dir / "best.pt")
        written["last"] = save_checkpoint(state, checkpoint_dir / "last.pt")
        log.info(
            "epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.1f s",
            epoch,
            metrics["train_loss"],
            metrics["train_acc"],
            val.loss,
            val.frame_accuracy,
            lr,
            epoch_time,
        )
        if observer is not None:
            observer(epoch, metrics, written)
        epochs_run = epoch
        if plateau and _lr(optimizer) < settings.min_lr:
            stop_reason, converged = "lr_below_min", True
        elif (
            settings.early_stopping_patience
            and epoch - best["epoch"] >= settings.early_stopping_patience
        ):
            stop_reason = "early_stopping"
            break
    return FitResult(
        history=history,
        best_epoch=int(best["epoch"]),
        epochs_run=epochs_run,
        converged=converged,
        stop_reason=stop_reason,
        train_time_s=elapsed,
        best_state=best_state,
    )


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
