"""One run's lifecycle: build, fit, score, log (``chordrec train`` and ``chordrec evaluate``).

:func:`train` takes a resolved training config and runs it end to end: it opens the
MLflow run (or reopens it to resume), loads and validates the songs, builds the model
and its examples, fits it (:mod:`chordrec.fit`), scores the best weights on validation
and test (:func:`score_run`, pure) and logs the scores, figures, checkpoints and model
(:func:`log_scores`). :func:`evaluate` re-scores a finished run's best weights as a new
run. Every model is run through one :class:`~chordrec.inference.predictor.Predictor`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from chordrec import ood, synth_train, tracking
from chordrec.allocator import freed_memory_kept
from chordrec.data.chords import class_names
from chordrec.data.fetch import (
    DATASET_NAME,
    DATASET_VERSION,
    GCT634_BASE_URL,
    DataFetchError,
    dataset_digest,
    ensure_dataset,
)
from chordrec.data.sequences import (
    LEVELS,
    MODES,
    BatchedExamples,
    ChromaAugment,
    SongSteps,
    count_chunks,
    song_chunks,
    song_steps,
)
from chordrec.data.songs import Song, load_songs, song_names, split_songs
from chordrec.decoding import DECODE_METHODS, decode, tune_beat_transitions, tune_self_transition
from chordrec.errors import ConfigError, UserError
from chordrec.fit import (
    EpochObserver,
    FitResult,
    TrainerSettings,
    build_optimizer,
    build_scheduler,
    fit,
    resolve_device,
    seed_everything,
)
from chordrec.inference.metrics import (
    aggregate_chord_scores,
    chord_scores,
    confusion_matrix,
    frame_accuracy,
    per_class_recall,
)
from chordrec.inference.predictor import InferenceRecipe, Predictor, build_predictor
from chordrec.io.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from chordrec.io.chord_files import read_lab
from chordrec.models import build_model, describe_model
from chordrec.passwords import check_no_passwords
from chordrec.report import figures
from chordrec.targets import check_run_config
from chordrec.transcribe import predictor_model
from chordrec.tuning import TrialReporter

log = logging.getLogger(__name__)

PARTS = ("train", "validation", "test")
SYNTH_PART = "synth"
"""The part of a run's synthetic training songs (``data.synth_fraction`` > 0)."""
DATASET_CONTEXTS = {
    "train": "training",
    SYNTH_PART: "training",
    "validation": "validation",
    "test": "test",
}
"""Each part's context as an MLflow dataset input."""
SYNTH_DATASET_NAME = "chordrec-synth/train"
"""The name of the synthetic training songs as an MLflow dataset."""
DATASET_PROFILE = ("songs", "frames", "beats")
"""What a part's MLflow dataset profile holds: only what the songs fix. MLflow keeps one
dataset per experiment for a name and digest, the first run's, so counts that depend on
a run's level or sequence length (steps, examples) are params ``sizes.*`` only."""
EXAMPLE_COLUMNS = {"chroma": "float", "chord": "integer"}
"""One step of the data set: a 12-bin chroma vector and its chord class (0-24)."""
OOD_COLUMNS = {"audio": "string", "chords": "string"}
"""One out-of-domain song: an audio file and its exact ``.lab`` annotation."""


OOD_SKIPPED_TAG = "ood_skipped"
"""The tag of a run that ``ood.part=auto`` scored on no out-of-domain songs: why (the set
is missing, what to install, ``make data``)."""


@dataclass
class RunContext:
    """Everything a run trains and evaluates on: the split's songs (and, with
    ``data.synth_fraction`` > 0, the synthetic training songs as part ``synth``, read
    from ``synth_set``), the training examples, the model and the out-of-domain songs it
    is scored on at the end (``(audio, lab)`` files of part ``ood_part``,
    :func:`out_of_domain`; none when that is ``None``, ``ood_skipped`` then saying why
    when ``ood.part=auto`` found no set)."""

    config: Any
    parts: dict[str, list[SongSteps]]
    train_examples: BatchedExamples
    model: nn.Module
    ood_songs: list[tuple[Path, Path]]
    ood_part: str | None = None
    ood_skipped: str | None = None
    synth_set: synth_train.TrainSet | None = None

    @property
    def validation(self) -> list[SongSteps]:
        """The validation part's songs."""
        return self.parts["validation"]

    @property
    def test(self) -> list[SongSteps]:
        """The test part's songs."""
        return self.parts["test"]


def default_run_name(cfg: Any) -> str:
    """``<preset or model>-<level>-<mode>-L<seq_len>``."""
    name = cfg.preset or cfg.model_name
    return f"{name}-{cfg.data.level}-{cfg.seq_mode}-L{cfg.seq_len}"


_SCHEDULERS = {"CosineAnnealingLR": "cosine schedule", "ReduceLROnPlateau": "lr ÷ on plateau"}


def describe_run(cfg: Any) -> str:
    """One line saying what a run is, from its resolved config (the MLflow run's
    description), e.g. ``BiGRU 2×128 after conv 16 at 1/2 rate, frame level, L=256
    sequence, random offsets, transposition, Viterbi; Adam lr 0.001, cosine schedule, up
    to 25 epochs; preset best; seed 0``."""
    augment = "transposition" if cfg.data.augment == "transpose" else "no augmentation"
    parts = [
        describe_model(cfg.model),
        f"{cfg.data.level} level",
        f"L={cfg.seq_len} {cfg.seq_mode}" + (", random offsets" if cfg.data.random_offset else ""),
        augment,
        "Viterbi" if cfg.decode == "viterbi" else str(cfg.decode),
    ]
    if synth_fraction(cfg):
        parts.append(f"{synth_fraction(cfg):.0%} synthetic training examples")
    line = ", ".join(parts)
    trains = cfg.model.get("_target_") != "chordrec.models.ChromaTemplates"
    if trains and cfg.trainer.max_epochs:
        optimizer = str(cfg.optimizer._target_).rsplit(".", 1)[-1]
        scheduler = str(cfg.scheduler._target_).rsplit(".", 1)[-1]
        line += (
            f"; {optimizer} lr {cfg.optimizer.lr}, {_SCHEDULERS.get(scheduler, scheduler)}, "
            f"up to {cfg.trainer.max_epochs} epoch{'s' if cfg.trainer.max_epochs != 1 else ''}"
        )
    if cfg.init_from:
        line += f"; from run {str(cfg.init_from)[:8]}"
    return line + (f"; preset {cfg.preset}" if cfg.preset else "") + f"; seed {cfg.seed}"


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
    fraction = synth_fraction(cfg)
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"data.synth_fraction must lie in [0, 1], got {fraction}")


def synth_fraction(cfg: Any) -> float:
    """The fraction of each epoch's training examples drawn from the synthetic training
    songs (``data.synth_fraction``; 0 in configs older than the setting)."""
    value = cfg.data.get("synth_fraction") or 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"data.synth_fraction must be a number in [0, 1], got {value!r}")
    return float(value)


def synthetic_songs(cfg: Any) -> tuple[synth_train.TrainSet, list[Song]]:
    """The synthetic training set of ``data.synth_root`` and its songs (the first
    ``split.max_songs`` only, when set). Raises ConfigError in one line naming the
    setting, the directory and the command that builds it when the set is missing."""
    try:
        train_set = synth_train.read_train_set(cfg.data.synth_root)
    except synth_train.SynthTrainError as exc:
        raise ConfigError(
            f"data.synth_fraction={synth_fraction(cfg):g} trains on synthetic songs, but "
            f"data.synth_root: {exc}"
        ) from None
    names = train_set.names[: cfg.split.max_songs or None]
    return train_set, load_songs(train_set.root, names)


def build_context(cfg: Any) -> RunContext:
    """Load the split's songs at the configured level (with ``data.synth_fraction`` > 0
    the synthetic training songs too: :func:`synthetic_songs`), the training examples
    (that fraction of each epoch's drawn from the synthetic songs), the model. With
    ``data.fetch_source`` set, first make sure ``data.root`` holds the verified data set,
    fetching it from that source if it is missing (a machine of a cluster)."""
    check_settings(cfg)
    fraction = synth_fraction(cfg)
    synth_set, synthetic = None, []
    if fraction:  # first: a missing set fails before the songs load
        synth_set, synthetic = synthetic_songs(cfg)
    root = Path(cfg.data.root)
    if cfg.data.get("fetch_source"):
        ensure_dataset(str(cfg.data.fetch_source), root)
    names = song_names(root)
    split = split_songs(
        names, cfg.split.train, cfg.split.test, cfg.split.validation, cfg.split.max_songs
    )
    if fraction == 1.0:  # data=synth: RWC-Pop's training songs are not in the mix
        split["train"] = []
    parts = {
        part: [song_steps(s, cfg.data.level) for s in load_songs(root, split[part])]
        for part in PARTS
    }
    if synth_set is not None:
        parts[SYNTH_PART] = [song_steps(s, cfg.data.level) for s in synthetic]
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
    songs, pool = parts["train"], parts.get(SYNTH_PART, [])
    if fraction == 1.0:
        songs, pool = pool, []
    examples = BatchedExamples(
        songs,
        cfg.seq_len,
        cfg.seq_mode,
        cfg.data.augment,
        cfg.data.random_offset,
        chroma_augment(cfg),
        pool=pool,
        pool_fraction=fraction if pool else 0.0,
    )
    return RunContext(cfg, parts, examples, model, *out_of_domain(cfg), synth_set=synth_set)


def chroma_augment(cfg: Any) -> ChromaAugment | None:
    """The run's chroma augmentation (``data.chroma_augment``; absent in older configs).
    Raises ConfigError naming a bad setting."""
    settings = cfg.data.get("chroma_augment")
    if not settings:
        return None
    try:
        return ChromaAugment(**{k: float(v) for k, v in settings.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.chroma_augment: {exc}") from None


def out_of_domain(cfg: Any) -> tuple[list[tuple[Path, Path]], str | None, str | None]:
    """The out-of-domain songs a run is scored on (config ``ood``), checked before
    training: ``(songs, part, skipped)``. ``ood.part=auto`` (the default) is the
    ``validation`` part when ``ood.root`` holds a set, else no songs and ``skipped``
    saying why (:func:`chordrec.ood.missing_set`: what is missing, how to get it); a part
    named explicitly (``validation``, ``test``) makes a missing set fail the run at
    once; null scores none. Raises ConfigError naming the setting or the missing set."""
    settings = cfg.get("ood") or {}
    part, max_songs = settings.get("part") or None, settings.get("max_songs")
    try:
        ood.check_settings(part, max_songs)
        skipped = ood.missing_set(settings["root"]) if part == ood.AUTO else None
        if skipped is not None or part is None:
            return [], None, skipped
        part = "validation" if part == ood.AUTO else part
        return ood.songs_of(settings["root"], part, max_songs), part, None
    except (UserError, ValueError) as exc:  # the set's own errors name `make data`
        raise ConfigError(
            f"ood: {exc} (ood.part=auto skips a missing set, ood.part=null scores no "
            "out-of-domain songs)"
        ) from None


def dataset_summary(context: RunContext) -> dict[tuple[str, str], int]:
    """Sizes of each part, keyed ``(part, what)``: songs, frames, beats, steps at the
    run's level, the run's examples (windows or chunks) and the report's 32-step chunks;
    for the synthetic songs also the examples each epoch draws from them (``per_epoch``)."""
    cfg = context.config
    sizes: dict[tuple[str, str], int] = {}
    for part, songs in context.parts.items():
        steps = [s.n_steps for s in songs]
        sizes[part, "songs"] = len(songs)
        sizes[part, "frames"] = sum(s.song.n_frames for s in songs)
        sizes[part, "beats"] = sum(len(s.song.beats) - 1 for s in songs)
        sizes[part, "steps"] = sum(steps)
        sizes[part, "examples"] = (
            sum(steps)
            if cfg.seq_mode == "window"
            else sum(len(song_chunks(s.features, s.labels, cfg.seq_len)[1]) for s in songs)
        )
        sizes[part, "chunks32"] = count_chunks(steps, 32)
    if SYNTH_PART in context.parts:  # how many of its examples an epoch trains on
        examples = context.train_examples
        sizes[SYNTH_PART, "per_epoch"] = examples.pool_per_epoch or len(examples)
    return sizes


def record_dataset(tracker: tracking.RunTracker, context: RunContext) -> None:
    """Log the data: its identity (tags ``dataset_sha256``, ``dataset_root``; with
    synthetic songs also ``synth_sha256``, ``synth_root``), one MLflow dataset input per
    part that holds songs (contexts ``training``, ``validation``, ``test``, with
    :data:`DATASET_PROFILE` as its profile): RWC-Pop's parts and, in the mix, the
    synthetic training songs (:data:`SYNTH_DATASET_NAME`, also ``training``), and every
    size as params ``sizes.<part>.<what>``."""
    root = Path(context.config.data.root)
    try:
        digest = dataset_digest(root)
    except (DataFetchError, OSError) as exc:
        digest = f"unverified ({exc})"[:250]
    tracker.set_tags({"dataset_sha256": digest, "dataset_root": str(root.resolve())})
    rwc_pop = {"version": DATASET_VERSION, "digest": digest, "source": GCT634_BASE_URL}
    # mirrors hold the same files, same checksums: the source is upstream's
    identities = {part: {"name": f"{DATASET_NAME}/{part}", **rwc_pop} for part in PARTS}
    # one MLflow dataset per part: MLflow keeps one input per dataset (name, digest) in a
    # run, so the parts need names
    synth = context.synth_set
    if synth is not None:
        tracker.set_tags({"synth_sha256": synth.digest, "synth_root": str(synth.root.resolve())})
        identities[SYNTH_PART] = {
            "name": SYNTH_DATASET_NAME,
            "version": synth.version,
            "digest": synth.digest,
            "source": synth.root.resolve().as_uri(),
        }
    sizes = dataset_summary(context)
    tracker.log_params({f"sizes.{part}.{what}": n for (part, what), n in sizes.items()})
    for part, identity in identities.items():
        if not sizes[part, "songs"]:  # RWC-Pop's training songs under data=synth
            continue
        tracker.log_dataset(
            tracking.DatasetRecord(
                **identity,
                profile={what: sizes[part, what] for what in DATASET_PROFILE},
                columns=EXAMPLE_COLUMNS,
            ),
            DATASET_CONTEXTS[part],
        )


MACHINE_SETTINGS = (
    "trainer.device",
    "trainer.num_threads",
    "trainer.progress",
    "data.root",
    "data.synth_root",
    "data.num_workers",
    "ood",
    "paths",
    "tracking",
    "optuna",
)
"""Settings a resumed or re-evaluated run takes from the command line, not from the
run's own config: where it runs, where its data and tracking store are. Everything
that shapes its results stays as the run began. The out-of-domain songs (``ood``) are
the command line's too: an older run is scored on today's set, and ``ood.part=test``
reports on the test part. So is the Optuna trial it reports to (``optuna``; none on a
plain command line): a trial's run that is re-evaluated or resumed never reports to the
study, which recorded how the trial ended when the sweep told it."""


def resumed_config(saved: Mapping[str, Any], command_line: DictConfig) -> DictConfig:
    """The config a resumed run continues with: its own ``saved`` config, with
    :data:`MACHINE_SETTINGS` and ``resume`` from ``command_line``."""
    cfg = OmegaConf.create(dict(saved))
    for key in MACHINE_SETTINGS:
        OmegaConf.update(cfg, key, OmegaConf.select(command_line, key), merge=False)
    cfg.resume = command_line.resume
    return cfg


def download_checkpoint(run_id: str, name: str, dest: Path) -> dict[str, Any]:
    """Checkpoint ``name`` ('best' or 'last') of MLflow run ``run_id``, downloaded into
    ``dest`` and loaded onto the CPU. Raises ConfigError when its config names a model,
    optimizer or scheduler that :func:`chordrec.targets.allowed_class` refuses."""
    checkpoint = load_checkpoint(tracking.run_checkpoint(run_id, name, dest))
    check_run_config(checkpoint.get("config") or {}, f"checkpoints/{name}.pt of run {run_id}")
    return checkpoint


def resume_checkpoint(run_id: str, checkpoint_dir: Path) -> dict[str, Any]:
    """The checkpoint run ``run_id`` resumes from, loaded onto the CPU, with its
    ``last.pt`` and ``best.pt`` in ``checkpoint_dir`` for training to go on from.

    ``checkpoint_dir`` is where the run wrote each epoch's checkpoints before logging
    them, and where the error of a run whose server stopped answering points. A
    ``last.pt`` there of the same or a later epoch than the run's logged one is kept
    (with its ``best.pt``) and resumed from; never is it replaced by an older logged
    copy. Otherwise the run's logged checkpoints go there. Raises
    :class:`~chordrec.io.checkpoints.CheckpointError` naming both when the local
    ``last.pt`` cannot be read (nothing is replaced), and ConfigError as
    :func:`download_checkpoint`."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    local = checkpoint_dir / "last.pt"
    with tempfile.TemporaryDirectory(prefix=".logged-", dir=checkpoint_dir) as tmp:
        logged = download_checkpoint(run_id, "last", Path(tmp))
        if local.exists():
            kept = _local_checkpoint(local, f"checkpoints/last.pt of run {run_id}", logged)
            if kept["epoch"] >= logged["epoch"]:
                log.info(
                    "resuming from %s (epoch %d), not the run's logged last.pt (epoch %d)",
                    local,
                    kept["epoch"],
                    logged["epoch"],
                )
                if not (checkpoint_dir / "best.pt").exists():
                    tracking.run_checkpoint(run_id, "best", checkpoint_dir)
                return kept
        tracking.run_checkpoint(run_id, "best", checkpoint_dir)
        os.replace(Path(tmp) / "last.pt", local)
    return logged


def _local_checkpoint(path: Path, logged_name: str, logged: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint at ``path``, its config checked as a logged one's; CheckpointError
    naming it and the logged checkpoint ``logged_name`` when it cannot be read or has
    no epoch."""
    try:
        checkpoint = load_checkpoint(path)
        checkpoint["epoch"] = int(checkpoint["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not resumed from ({exc}); remove it to resume from {logged_name} "
            f"(epoch {logged['epoch']})"
        ) from None
    check_run_config(checkpoint.get("config") or {}, str(path))
    return checkpoint


def load_initial_weights(
    model: nn.Module, model_config: Mapping[str, Any], run_id: str, dest: Path
) -> None:
    """Load the best weights of MLflow run ``run_id`` into ``model`` (config
    ``init_from``). Raises ConfigError when that run's model config differs from
    ``model_config`` (this run's), naming both."""
    checkpoint = download_checkpoint(run_id, "best", dest)
    theirs, ours = checkpoint["config"]["model"], dict(model_config)
    if theirs != ours:
        raise ConfigError(
            f"init_from={run_id}: that run's model {theirs} differs from this run's {ours}"
        )
    model.load_state_dict(checkpoint["model"])
    log.info("starting from the best weights of run %s (epoch %d)", run_id, checkpoint["epoch"])


def trainer_settings(cfg: Any) -> TrainerSettings:
    """The training loop's settings from a run's config."""
    return TrainerSettings(
        max_epochs=cfg.trainer.max_epochs,
        min_lr=cfg.trainer.min_lr,
        early_stopping_patience=cfg.trainer.early_stopping_patience,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        window_stride=cfg.data.window_stride,
        grad_clip=cfg.trainer.grad_clip,
        amp=cfg.trainer.amp,
        progress=cfg.trainer.progress,
    )


def run_predictor(
    model: nn.Module, cfg: Any, device: torch.device, self_transition: float | None = None
) -> Predictor:
    """The predictor a run validates, scores and is transcribed with."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    return build_predictor(
        model, config, device, cfg.trainer.amp, cfg.trainer.eval_batch_size, self_transition
    )


def epoch_predictor(model: nn.Module, cfg: Any, device: torch.device) -> Predictor:
    """The predictor of each epoch's validation: the run's, with the network run once
    per chunk even where the final scores average the 12 transpositions."""
    predictor = run_predictor(model, cfg, device)
    return replace(predictor, recipe=replace(predictor.recipe, transpose_average=False))


def _reporting(tracker: tracking.RunTracker, reporter: TrialReporter) -> EpochObserver:
    """The epoch observer of a search trial: log the epoch, then report it to the study
    (which may prune the trial: :class:`~chordrec.errors.TrialPruned`)."""

    def observe(epoch: int, metrics: dict[str, float], written: dict[str, Path]) -> None:
        tracker.log_epoch(epoch, metrics, written)
        reporter(epoch, metrics)

    return observe


def train(cfg: DictConfig, extra_tags: Mapping[str, str] | None = None) -> dict[str, float]:
    """Train, score and log one run (or resume ``cfg.resume``); returns its final metrics.

    The run ends FINISHED, FAILED (an exception, logged as its ``error`` tag) or KILLED
    (Ctrl-C, SIGTERM). ``extra_tags`` (e.g. the Hydra sweep) are added to a new run; one
    with a ``sweep_id`` tag nests under that sweep's parent run
    (:mod:`chordrec.sweeps`), unless ``tracking.parent_run_id`` names another. A
    password in any setting is refused (:func:`~chordrec.passwords.check_no_passwords`)."""
    check_no_passwords(cfg)
    tracking.configure(cfg.tracking.store_dir, cfg.tracking.uri, cfg.tracking.server_wait_s)
    resume = None
    if cfg.resume:
        tracking.check_resumable(cfg.resume)
        resume = resume_checkpoint(cfg.resume, _checkpoint_dir(cfg, cfg.resume))
        log.info("resuming run %s after epoch %d", cfg.resume, resume["epoch"])
        resume["history"] = tracking.current_metrics(resume["history"])  # an older run's
        cfg = resumed_config(resume["config"], cfg)
    seed_everything(cfg.seed)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    device = resolve_device(cfg.trainer.device)
    tags = {**tracking.base_tags(str(device)), **{k: str(v) for k, v in cfg.tracking.tags.items()}}
    if cfg.preset:
        tags["preset"] = str(cfg.preset)
    tags.update(extra_tags or {})
    tags["mlflow.note.content"] = describe_run(cfg)
    reporter = None
    if cfg.optuna.trial is not None:  # a trial of an Optuna search
        reporter = TrialReporter(
            str(cfg.optuna.storage), str(cfg.optuna.study), int(cfg.optuna.trial), cfg.optuna.metric
        )
        tags.update({"optuna_study": str(cfg.optuna.study), "optuna_trial": str(cfg.optuna.trial)})
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = str(cfg.tracking.parent_run_id)
    elif "sweep_id" in tags:  # a Hydra multirun's job: nest under the sweep's parent run
        parent = tracking.find_sweep_parent(cfg.tracking.experiment, tags["sweep_id"])
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    # large tensors reused, not zeroed again by the kernel each batch; handed back at the end
    with (
        freed_memory_kept(),
        tracking.RunTracker(
            experiment=cfg.tracking.experiment,
            store_dir=Path(cfg.tracking.store_dir).resolve(),
            run_name=cfg.run_name or default_run_name(cfg),
            tags=tags,
            resume_run_id=cfg.resume,
            system_metrics=cfg.tracking.system_metrics,
            system_metrics_interval_s=cfg.tracking.system_metrics_interval_s,
        ) as tracker,
    ):
        tracker.set_tags({**tracking.process_tags(), "device": str(device)})  # a resumed run's own
        log.info("MLflow run %s in %s", tracker.run_id, tracker.artifact_uri)
        if reporter is not None:
            reporter.attach_run(tracker.run_id)
        page = tracking.run_url(
            tracking.ui_base_url(tracking.current_uri()), tracker.experiment_id, tracker.run_id
        )
        print(f"MLflow run id: {tracker.run_id}  (UI: {page})", flush=True)
        if resume is None:
            tracker.log_config(config, OmegaConf.to_yaml(cfg, resolve=True))
        # Bad data or a model that does not fit the data fail here: the run ends FAILED
        # with the error as a tag, its config logged.
        context = build_context(cfg)
        if context.ood_skipped is not None:
            log.warning("no out-of-domain scores (ood.part=auto): %s", context.ood_skipped)
            tracker.set_tags({OOD_SKIPPED_TAG: context.ood_skipped})
        model = context.model
        if resume is None:
            record_dataset(tracker, context)
        else:
            tracker.backfill_history(resume["history"])
        checkpoint_dir = _checkpoint_dir(cfg, tracker.run_id)
        tracker.local_checkpoints = checkpoint_dir
        if cfg.init_from and resume is None:
            tracker.set_tags({"init_from": str(cfg.init_from)})
            load_initial_weights(
                model, config["model"], str(cfg.init_from), checkpoint_dir / "init"
            )
        if any(p.requires_grad for p in model.parameters()):
            optimizer = build_optimizer(config["optimizer"], model.parameters())
            result = fit(
                model,
                context.train_examples,
                context.validation,
                optimizer,
                build_scheduler(config["scheduler"], optimizer),
                trainer_settings(cfg),
                device,
                checkpoint_dir,
                epoch_predictor(model, cfg, device),
                observer=tracker.log_epoch if reporter is None else _reporting(tracker, reporter),
                resume_from=resume,
                checkpoint_extra={"config": config},
            )
        else:  # a training-free model (template matching): evaluate it as it is
            result = FitResult.untrained(model)
        model.load_state_dict(result.best_state)
        model.to(device)
        scores = score_run(context, run_predictor(model, cfg, device), result)
        log_scores(tracker, context, scores, result, checkpoint_dir / "best.pt", config)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # both are in the run's artifacts
        if context.ood_songs:
            predictor = replace(run_predictor(model.to(device), cfg, device), recipe=scores.recipe)
            scores.metrics.update(score_out_of_domain(tracker, predictor, context))
    log.info(
        "test frame accuracy %.4f (validation %.4f)",
        scores.metrics["test/frame_acc"],
        scores.metrics["val/frame_acc"],
    )
    return scores.metrics


def evaluate(run_id: str, command_line: DictConfig, overrides: Sequence[str]) -> dict[str, float]:
    """Score the best weights of MLflow run ``run_id`` as a new run (tag
    ``evaluated_run``), under the run's own config changed by ``overrides``
    (``key=value``, e.g. ``trainer.eval_overlap=false`` or ``decode=argmax``);
    :data:`MACHINE_SETTINGS` come from ``command_line``, which may hold no password
    (:func:`~chordrec.passwords.check_no_passwords`). Returns the final metrics."""
    check_no_passwords(command_line)
    tracking.configure(command_line.tracking.store_dir, command_line.tracking.uri)
    with tempfile.TemporaryDirectory(prefix="chordrec-evaluate-") as tmp:
        saved = download_checkpoint(run_id, "best", Path(tmp))["config"]
    cfg = resumed_config(saved, command_line)
    changes = OmegaConf.from_dotlist([o.removeprefix("+") for o in overrides])
    cfg = OmegaConf.merge(cfg, changes)
    assert isinstance(cfg, DictConfig)
    cfg.resume, cfg.init_from = None, run_id
    cfg.trainer.max_epochs = 0
    cfg.run_name = cfg.run_name or f"evaluate-{run_id[:8]}"
    return train(cfg, {"evaluated_run": run_id})


def _checkpoint_dir(cfg: Any, run_id: str) -> Path:
    """Where a run's checkpoints are written before they are logged."""
    return Path(cfg.tracking.store_dir).resolve() / "checkpoints-in-progress" / run_id


# ------------------------------------------------------------------ final scores


@dataclass(frozen=True)
class RunScores:
    """A run's final scores: ``metrics`` (``val/…``, ``test/…``, ``fit/…``, ``time/…``,
    ``decode/…``), the ``recipe`` it was scored
    with (self-transition tuned on validation), each part's decoded frame classes
    (``predictions['val'|'test']``, one array per song) and the test confusion matrix."""

    metrics: dict[str, float]
    recipe: InferenceRecipe
    predictions: dict[str, list[np.ndarray]]
    confusion: np.ndarray


def score_run(context: RunContext, predictor: Predictor, result: FitResult) -> RunScores:
    """Score ``predictor`` (the best-validation weights) on validation and test.

    Frame accuracy is reported for argmax and for Viterbi decoding (self-transition
    tuned on validation only), and for beat-aware Viterbi when the recipe decodes so (its
    two self-transitions tuned on validation: ``decode/self_transition`` between beats,
    ``decode/beat_self_transition`` at beats; plain Viterbi's is then
    ``decode/viterbi_self_transition``); ``val/frame_acc`` / ``test/frame_acc`` use the
    recipe's decoding. MIREX chord scores (``*/majmin``, ``*/root``, ``*/seg``...) come from those
    predictions against the original ``labs/`` annotations."""
    val = predictor.evaluate(context.validation)
    test = predictor.evaluate(context.test)
    val_labels = [s.song.labels for s in context.validation]
    self_transition, _ = tune_self_transition(val.log_probs, val_labels)
    recipe = replace(predictor.recipe, self_transition=self_transition)
    method = recipe.decode
    metrics: dict[str, float] = {"decode/self_transition": self_transition}
    tuned = {"viterbi": (self_transition, None)}
    if method == "beat_viterbi":
        between, at_beats, _ = tune_beat_transitions(
            val.log_probs, val_labels, [s.song.beats for s in context.validation]
        )
        recipe = replace(recipe, self_transition=between, beat_self_transition=at_beats)
        tuned[method] = (between, at_beats)
        metrics["decode/self_transition"] = between
        metrics["decode/beat_self_transition"] = at_beats
        metrics["decode/viterbi_self_transition"] = self_transition
    predictions = {}
    for part, evaluation, songs in (("val", val, context.validation), ("test", test, context.test)):
        labels = np.concatenate([s.song.labels for s in songs])
        for candidate in ("argmax", *tuned):
            p, p_beat = tuned.get(candidate, (self_transition, None))
            decoded = [
                decode(lp, candidate, p, s.song.beats, p_beat)
                for lp, s in zip(evaluation.log_probs, songs, strict=True)
            ]
            metrics[f"{part}/frame_acc_{candidate}"] = frame_accuracy(
                np.concatenate(decoded), labels
            )
            if candidate == method:  # the run's own decoding: its predictions
                predictions[part] = decoded
        metrics[f"{part}/frame_acc"] = metrics[f"{part}/frame_acc_{method}"]
        scores = _chord_scores(predictions[part], songs, Path(context.config.data.root))
        metrics.update({f"{part}/{key}": value for key, value in scores.items()})
    metrics.update(
        {
            "val/best_loss": val.loss,
            "test/loss": test.loss,
            "fit/epochs_run": result.epochs_run,
            "fit/best_epoch": result.best_epoch,
            "fit/converged": float(result.converged),
            "time/train_s": result.train_time_s,
        }
    )
    reference = np.concatenate([s.song.labels for s in context.test])
    confusion = confusion_matrix(np.concatenate(predictions["test"]), reference)
    return RunScores(metrics, recipe, predictions, confusion)


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


def log_scores(
    tracker: tracking.RunTracker,
    context: RunContext,
    scores: RunScores,
    result: FitResult,
    best_checkpoint: Path,
    config: dict[str, Any],
) -> None:
    """Log a run's final metrics and tags, ``evaluation.json``, the predictions, the
    figures, the best checkpoint with the scored recipe and (``tracking.log_model``)
    the model."""
    tracker.log_metrics(scores.metrics)
    tracker.set_tags(
        {"converged": "yes" if result.converged else "no", "stop_reason": result.stop_reason}
    )
    recall = per_class_recall(scores.confusion)
    tracker.log_dict(
        {
            "test_per_class_recall": {
                name: None if np.isnan(r) else float(r)
                for name, r in zip(class_names(), recall, strict=True)
            },
            "test_per_song_frame_acc": {
                s.song.name: float((p == s.song.labels).mean())
                for p, s in zip(scores.predictions["test"], context.test, strict=True)
            },
        },
        "evaluation.json",
    )
    for part, songs in (("val", context.validation), ("test", context.test)):
        tracker.log_arrays(
            {
                s.song.name: p.astype(np.int8)
                for p, s in zip(scores.predictions[part], songs, strict=True)
            },
            f"predictions/{part}.npz",
        )
    tracker.log_figure(figures.confusion_matrix_figure(scores.confusion), "confusion_test.png")
    if result.history:
        tracker.log_figure(figures.learning_curves(result.history), "learning_curves.png")
    song = context.test[0]
    tracker.log_figure(
        figures.chord_timeline(
            song.song.chroma,
            song.song.labels,
            scores.predictions["test"][0],
            title=f"{song.song.name} (test)",
        ),
        f"timeline_{song.song.name}.png",
    )
    model = context.model
    tracker.log_checkpoint(write_recipe(best_checkpoint, scores.recipe, model, config))
    if context.config.tracking.log_model:
        example = song_chunks(song.features, song.labels, scores.recipe.seq_len)[0][:2]
        tracker.log_model(model.cpu().eval(), example.astype(np.float32))


def score_out_of_domain(
    tracker: tracking.RunTracker, predictor: Predictor, context: RunContext
) -> dict[str, float]:
    """Transcribe the run's out-of-domain songs with ``predictor`` (the scored weights
    and recipe) as ``chordrec transcribe`` would, log the part's metrics
    (``ood_val/…`` or ``ood_test/…``), each song's scores (``ood/<part>.json``) and
    the songs as an MLflow dataset input (``chordrec-ood-synth/<part>``, context
    ``ood_validation`` or ``ood_test``; :func:`chordrec.ood.part_identity`); returns the
    metrics."""
    part = context.ood_part
    assert part is not None, "a run with no out-of-domain part has no songs to score"
    source = f"run {tracker.run_id}"
    scored = ood.score_part(predictor_model(predictor, source), part, context.ood_songs)
    tracker.log_metrics(scored.metrics)
    tracker.log_dict({name: asdict(s) for name, s in scored.songs.items()}, f"ood/{part}.json")
    identity = ood.part_identity(context.config.ood.root, part, list(scored.songs))
    tracker.log_dataset(
        tracking.DatasetRecord(
            **asdict(identity),
            profile={
                "songs": len(scored.songs),
                "seconds": round(sum(s.duration for s in scored.songs.values()), 1),
            },
            columns=OOD_COLUMNS,
        ),
        f"ood_{part}",
    )
    log.info(
        "out of domain (%s, %d songs): majmin %.4f, root %.4f, frame accuracy %.4f",
        part,
        len(scored.songs),
        *(scored.metrics[f"{ood.PREFIXES[part]}/{key}"] for key in ood.KEYS),
    )
    return scored.metrics


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
