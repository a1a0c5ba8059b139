"""The training loop: fit a model on training examples, pick the best epoch on validation.

It knows nothing about where its metrics go: after every epoch it writes checkpoint
files and hands the epoch's metrics and checkpoint paths to an observer.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
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
)
from chordrec.inference.predictor import Predictor, uses_mixed_precision
from chordrec.io.checkpoints import load_checkpoint, save_checkpoint
from chordrec.targets import allowed_class

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


class EpochObserver(Protocol):
    """Receives each finished epoch: its metrics (``train/loss``, ``train/acc``,
    ``train/lr``, ``val/loss``, ``val/acc``, ``time/epoch_s``) and the checkpoint files
    written for it (``last`` always, ``best`` when validation accuracy improved)."""

    def __call__(self, epoch: int, metrics: dict[str, float], checkpoints: dict[str, Path]) -> None:
        """Take one finished epoch's metrics and the checkpoints written for it."""


@dataclass
class TrainerSettings:
    """What the training loop needs to know: epochs, learning-rate floor, early stopping."""

    max_epochs: int = 200
    min_lr: float = 1e-5
    early_stopping_patience: int | None = None
    batch_size: int = 32
    num_workers: int = 0
    window_stride: int = 1
    grad_clip: float | None = None
    amp: bool = True
    progress: bool = True


@dataclass
class FitResult:
    """What :func:`fit` returns: per-epoch history, best epoch and epochs run."""

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
    # running sums kept as tensors: no conversion to Python numbers per batch
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    counted = torch.zeros((), dtype=torch.int64, device=device)
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
            logits = model.last_step_logits(x) if train.mode == "window" else model.step_logits(x)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if settings.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            mask = y != IGNORE_LABEL
            n = mask.sum()
            loss_sum += loss.detach().double() * n
            correct += (logits.argmax(-1).eq(y) & mask).sum()
            counted += n
        if not bar.disable and bar.n % 25 == 0:  # a refresh costs as much as a small batch
            bar.set_postfix(
                loss=f"{float(loss_sum / counted):.3f}", acc=f"{float(correct / counted):.3f}"
            )
    bar.close()
    total_loss, total_correct, total = float(loss_sum), int(correct), int(counted)
    if not math.isfinite(total_loss):
        raise FloatingPointError(f"training loss became {total_loss} ({desc})")
    return total_loss / total, total_correct / total


def fit(
    model: nn.Module,
    train: BatchedExamples,
    validation: Sequence[SongSteps],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau,
    settings: TrainerSettings,
    device: torch.device,
    checkpoint_dir: Path,
    predictor: Predictor,
    observer: EpochObserver | None = None,
    resume_from: dict[str, Any] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
) -> FitResult:
    """Train until the learning rate falls below ``min_lr`` (converged), validation
    accuracy stops improving for ``early_stopping_patience`` epochs, or ``max_epochs``.
    Each epoch is validated by ``predictor`` (which runs ``model``), as the run's final
    evaluation and transcription run it.

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
        elapsed = float(sum(history.get("time/epoch_s", [])))
        log.info("resuming after epoch %d", start_epoch - 1)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best["epoch"] and (checkpoint_dir / "best.pt").exists():
        best_state = load_checkpoint(checkpoint_dir / "best.pt", device)["model"]
    stop_reason, converged, epochs_run = "max_epochs", False, start_epoch - 1
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and _lr(optimizer) < settings.min_lr:  # resumed after the stop rule had fired
        stop_reason, converged = "lr_below_min", True
    for epoch in range(start_epoch, settings.max_epochs + 1):
        if converged:
            break
        started = time.perf_counter()
        order = train.epoch_order(settings.window_stride)
        train_loss, train_acc = train_epoch(
            model, train, order, optimizer, scaler, settings, device, desc=f"epoch {epoch}"
        )
        val = predictor.evaluate(validation)
        lr = _lr(optimizer)
        if plateau:
            scheduler.step(val.loss)
        else:
            scheduler.step()
        epoch_time = time.perf_counter() - started
        elapsed += epoch_time
        metrics = {
            "train/loss": train_loss,
            "train/acc": train_acc,
            "train/lr": lr,
            "val/loss": val.loss,
            "val/acc": val.frame_accuracy,
            "time/epoch_s": epoch_time,
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
            train_loss,
            train_acc,
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


def build_optimizer(
    spec: Mapping[str, Any], params: Any, source: str = "the optimizer config"
) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer from its config (``_target_`` plus keyword arguments).
    Only the optimizers :func:`chordrec.targets.allowed_class` allows are built: a config
    read from a checkpoint (resume) never names arbitrary code. Raises ConfigError naming
    the target and ``source`` for another target."""
    return allowed_class("optimizer", spec.get("_target_", ""), source)(params, **_arguments(spec))


def build_scheduler(
    spec: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    source: str = "the scheduler config",
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """A ``torch.optim.lr_scheduler`` scheduler from its config, like
    :func:`build_optimizer` (only the schedulers that
    :func:`chordrec.targets.allowed_class` allows)."""
    return allowed_class("scheduler", spec.get("_target_", ""), source)(
        optimizer, **_arguments(spec)
    )


def _arguments(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "_target_"}


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
