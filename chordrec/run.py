"""What one run is made of (data, model, examples) and what it records at the end.

Sits between the Hydra entry point and the pieces: it takes a resolved config,
loads and validates the songs, builds the model and the examples, and after
training evaluates the best checkpoint and hands every summary to the tracker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from chordrec.data.chords import class_names
from chordrec.data.fetch import DataFetchError, dataset_digest
from chordrec.data.sequences import (
    LEVELS,
    MODES,
    BatchedExamples,
    SongSteps,
    count_chunks,
    song_chunks,
    song_steps,
)
from chordrec.data.songs import load_songs, song_names, split_songs
from chordrec.decoding import DECODE_METHODS, decode, tune_self_transition
from chordrec.errors import ConfigError
from chordrec.fit import FitResult, evaluate
from chordrec.inference import InferenceRecipe
from chordrec.io.checkpoints import load_checkpoint, save_checkpoint
from chordrec.metrics import (
    aggregate_chord_scores,
    chord_scores,
    confusion_matrix,
    per_class_recall,
    read_lab,
)
from chordrec.models import build_model
from chordrec.report import figures
from chordrec.tracking import RunTracker

log = logging.getLogger(__name__)

PARTS = ("train", "validation", "test")


@dataclass
class RunContext:
    """Everything a run trains and evaluates on."""

    config: Any
    parts: dict[str, list[SongSteps]]
    train_examples: BatchedExamples
    model: nn.Module

    @property
    def validation(self) -> list[SongSteps]:
        return self.parts["validation"]

    @property
    def test(self) -> list[SongSteps]:
        return self.parts["test"]


def default_run_name(cfg: Any) -> str:
    """``<preset or model>-<level>-<mode>-L<seq_len>``."""
    name = cfg.preset or cfg.model_name
    return f"{name}-{cfg.data.level}-{cfg.seq_mode}-L{cfg.seq_len}"


def check_settings(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the setting when a top-level or evaluation
    setting is out of range, before any data is loaded."""
    if not isinstance(cfg.seq_len, int) or cfg.seq_len < 1:
        raise ConfigError(f"seq_len must be a positive number of steps, got {cfg.seq_len!r}")
    if cfg.seq_mode not in MODES:
        raise ConfigError(f"seq_mode must be one of {', '.join(MODES)}, got {cfg.seq_mode!r}")
    if cfg.data.level not in LEVELS:
        raise ConfigError(f"data.level must be one of {', '.join(LEVELS)}, got {cfg.data.level!r}")
    if cfg.decode not in DECODE_METHODS:
        raise ConfigError(f"decode must be one of {', '.join(DECODE_METHODS)}, got {cfg.decode!r}")
    if cfg.seq_mode == "window" and (cfg.trainer.eval_seq_len or cfg.trainer.eval_overlap):
        raise ConfigError("trainer.eval_seq_len and trainer.eval_overlap are for seq_mode=sequence")
    if not isinstance(cfg.trainer.max_epochs, int) or cfg.trainer.max_epochs < 0:
        raise ConfigError(f"trainer.max_epochs must be >= 0, got {cfg.trainer.max_epochs!r}")
    if not isinstance(cfg.data.batch_size, int) or cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {cfg.data.batch_size!r}")


def build_context(cfg: Any) -> RunContext:
    """Load the split's songs at the configured level, the training examples, the model."""
    check_settings(cfg)
    root = Path(cfg.data.root)
    names = song_names(root)
    split = split_songs(
        names, cfg.split.train, cfg.split.test, cfg.split.validation, cfg.split.max_songs
    )
    parts = {
        part: [song_steps(s, cfg.data.level) for s in load_songs(root, split[part])]
        for part in PARTS
    }
    model = build_model(cfg.model)
    min_len = getattr(model, "min_input_length", 1)
    if cfg.seq_len < min_len:
        raise ConfigError(
            f"model needs seq_len >= {min_len} (its conv blocks pool the time axis), got {cfg.seq_len}"
        )
    if cfg.trainer.eval_seq_len is not None and cfg.trainer.eval_seq_len < max(min_len, 2):
        raise ConfigError(
            f"trainer.eval_seq_len must be >= {max(min_len, 2)}, got {cfg.trainer.eval_seq_len}"
        )
    if getattr(model, "in_features", 12) != 12:
        raise ConfigError(
            f"model expects {model.in_features} input features but chroma has 12 "
            "(crnn_tagging is the report's Table 1 reference, not a chroma model)"
        )
    examples = BatchedExamples(
        parts["train"], cfg.seq_len, cfg.seq_mode, cfg.data.augment, cfg.data.random_offset
    )
    return RunContext(cfg, parts, examples, model)


def dataset_summary(context: RunContext) -> dict[str, int]:
    """Sizes of each part: songs, frames, beats, steps at the run's level, the run's
    examples (windows or chunks) and the report's 32-step chunks."""
    cfg = context.config
    sizes: dict[str, int] = {}
    for part, songs in context.parts.items():
        steps = [s.n_steps for s in songs]
        sizes[f"{part}_songs"] = len(songs)
        sizes[f"{part}_frames"] = sum(s.song.n_frames for s in songs)
        sizes[f"{part}_beats"] = sum(len(s.song.beats) - 1 for s in songs)
        sizes[f"{part}_steps"] = sum(steps)
        sizes[f"{part}_examples"] = (
            sum(steps)
            if cfg.seq_mode == "window"
            else sum(len(song_chunks(s.features, s.labels, cfg.seq_len)[1]) for s in songs)
        )
        sizes[f"{part}_chunks32"] = count_chunks(steps, 32)
    return sizes


def record_dataset(tracker: RunTracker, context: RunContext) -> None:
    """Log the data set's identity (tag) and the split sizes (metrics ``size_*``)."""
    root = Path(context.config.data.root)
    try:
        digest = dataset_digest(root)
    except (DataFetchError, OSError) as exc:
        digest = f"unverified ({exc})"[:250]
    tracker.set_tags({"dataset_sha256": digest, "dataset_root": str(root.resolve())})
    tracker.log_metrics({f"size_{k}": v for k, v in dataset_summary(context).items()})


@dataclass
class ResumeState:
    run_id: str
    checkpoint: dict[str, Any]


def resume_state(run_id: str, store_dir: Path, checkpoint_dir: Path) -> ResumeState:
    """The last checkpoint of MLflow run ``run_id`` (model, optimizer, RNG, history, config);
    its last and best checkpoints are downloaded into ``checkpoint_dir``."""
    tracker = RunTracker(store_dir=store_dir)
    path = tracker.download_checkpoint(run_id, "last", checkpoint_dir)
    tracker.download_checkpoint(run_id, "best", checkpoint_dir)
    checkpoint = load_checkpoint(path)
    log.info("resuming run %s after epoch %d", run_id, checkpoint["epoch"])
    return ResumeState(run_id, checkpoint)


def load_initial_weights(
    model: nn.Module, model_config: dict[str, Any], run_id: str, store_dir: Path, dest: Path
) -> None:
    """Load the best weights of MLflow run ``run_id`` into ``model`` (config
    ``init_from``). Raises ValueError when that run's model config differs from
    ``model_config`` (this run's), naming both."""
    path = RunTracker(store_dir=store_dir).download_checkpoint(run_id, "best", dest)
    checkpoint = load_checkpoint(path)
    theirs, ours = checkpoint["config"]["model"], model_config
    if theirs != ours:
        raise ConfigError(
            f"init_from={run_id}: that run's model {theirs} differs from this run's {ours}"
        )
    model.load_state_dict(checkpoint["model"])
    log.info("starting from the best weights of run %s (epoch %d)", run_id, checkpoint["epoch"])


def _decoded(log_probs: list[np.ndarray], method: str, self_transition: float) -> list[np.ndarray]:
    return [decode(lp, method, self_transition) for lp in log_probs]


def _accuracy(predicted: list[np.ndarray], songs: list[SongSteps]) -> float:
    correct = sum(int((p == s.song.labels).sum()) for p, s in zip(predicted, songs, strict=True))
    return correct / sum(s.song.n_frames for s in songs)


def _chord_scores(
    predicted: list[np.ndarray], songs: list[SongSteps], root: Path
) -> dict[str, float]:
    """MIREX scores (majmin, root, seg...) against the original ``labs/`` annotations,
    duration-weighted over songs."""
    per_song, durations = [], []
    for classes, steps in zip(predicted, songs, strict=True):
        intervals, labels = read_lab(root / "labs" / f"{steps.song.name}.lab")
        per_song.append(chord_scores(classes, intervals, labels))
        durations.append(float(intervals[-1, 1] - intervals[0, 0]))
    return aggregate_chord_scores(per_song, durations)


def finish_run(
    tracker: RunTracker,
    context: RunContext,
    result: FitResult,
    device: torch.device,
    cfg: Any,
    best_checkpoint: Path,
) -> dict[str, float]:
    """Evaluate the best-validation weights on validation and test and log the final
    metrics, figures and model; returns the final metrics.

    Frame accuracy is reported for argmax and for Viterbi decoding (self-transition
    tuned on validation only); ``val_frame_acc`` / ``test_frame_acc`` use ``cfg.decode``.
    MIREX chord scores (``*_majmin``, ``*_root``, ``*_seg``...) come from the
    ``cfg.decode`` predictions against the original ``labs/`` annotations.

    The run's :class:`~chordrec.inference.InferenceRecipe`, with the tuned
    self-transition, is then written into ``best_checkpoint`` (created from the
    evaluated weights if training wrote none) and logged again as
    ``checkpoints/best.pt``: what transcription loads decodes as the run was scored.
    """
    model = context.model
    model.load_state_dict(result.best_state)
    model.to(device)
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    recipe = InferenceRecipe.from_config(config)
    seq_len, mode, overlap = recipe.seq_len, recipe.seq_mode, recipe.overlap
    batch, amp = cfg.trainer.eval_batch_size, cfg.trainer.amp
    val = evaluate(
        model, context.validation, seq_len, mode, device, batch, overlap=overlap, amp=amp
    )
    test = evaluate(model, context.test, seq_len, mode, device, batch, overlap=overlap, amp=amp)
    self_transition, _ = tune_self_transition(
        val.log_probs, [s.song.labels for s in context.validation]
    )
    recipe = replace(recipe, self_transition=self_transition)
    summary: dict[str, float] = {"viterbi_self_transition": self_transition}
    predictions = {}
    for part, evaluation, songs in (("val", val, context.validation), ("test", test, context.test)):
        for method in DECODE_METHODS:
            predicted = _decoded(evaluation.log_probs, method, self_transition)
            summary[f"{part}_frame_acc_{method}"] = _accuracy(predicted, songs)
            if method == cfg.decode:
                predictions[part] = predicted
        summary[f"{part}_frame_acc"] = summary[f"{part}_frame_acc_{cfg.decode}"]
        scores = _chord_scores(predictions[part], songs, Path(cfg.data.root))
        summary.update({f"{part}_{key}": value for key, value in scores.items()})
    summary.update(
        {
            "val_loss_best": val.loss,
            "test_loss": test.loss,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "converged": float(result.converged),
            "train_time_s": result.train_time_s,
        }
    )
    tracker.log_metrics(summary)
    tracker.set_tags(
        {"converged": "yes" if result.converged else "no", "stop_reason": result.stop_reason}
    )
    reference = np.concatenate([s.song.labels for s in context.test])
    confusion = confusion_matrix(np.concatenate(predictions["test"]), reference)
    recall = per_class_recall(confusion)
    tracker.log_dict(
        {
            "test_per_class_recall": {
                name: None if np.isnan(r) else float(r)
                for name, r in zip(class_names(), recall, strict=True)
            },
            "test_per_song_frame_acc": {
                s.song.name: float((p == s.song.labels).mean())
                for p, s in zip(predictions["test"], context.test, strict=True)
            },
        },
        "evaluation.json",
    )
    for part, songs in (("val", context.validation), ("test", context.test)):
        tracker.log_arrays(
            {s.song.name: p.astype(np.int8) for p, s in zip(predictions[part], songs, strict=True)},
            f"predictions/{part}.npz",
        )
    tracker.log_figure(figures.confusion_matrix_figure(confusion), "confusion_test.png")
    if result.history:
        tracker.log_figure(figures.learning_curves(result.history), "learning_curves.png")
    song = context.test[0]
    tracker.log_figure(
        figures.chord_timeline(
            song.song.chroma,
            song.song.labels,
            predictions["test"][0],
            title=f"{song.song.name} (test)",
        ),
        f"timeline_{song.song.name}.png",
    )
    tracker.log_checkpoint(write_recipe(best_checkpoint, recipe, model, config))
    if cfg.tracking.log_model:
        example = song_chunks(song.features, song.labels, seq_len)[0][:2].astype(np.float32)
        tracker.log_model(model.cpu().eval(), example)
    return summary


def write_recipe(
    path: Path, recipe: InferenceRecipe, model: nn.Module, config: dict[str, Any]
) -> Path:
    """Add ``recipe`` (key ``inference``) to the checkpoint at ``path``; where training
    wrote none (a training-free model, ``trainer.max_epochs=0``), write one holding
    ``model``'s weights and ``config``. Returns ``path``."""
    if path.exists():
        state = load_checkpoint(path)
    else:
        state = {"epoch": 0, "model": model.state_dict(), "config": config}
    state["inference"] = recipe.to_dict()
    return save_checkpoint(state, path)
