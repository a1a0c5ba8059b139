"""The report's stop rule: under the plateau schedule a run ends converged once its
learning rate falls below ``trainer.min_lr``, at the epoch the schedule's patience and
factor fix; early stopping ends a run ``early_stopping_patience`` epochs after its best."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from chordrec.data.sequences import BatchedExamples, song_steps
from chordrec.fit import TrainerSettings, build_scheduler, fit, seed_everything
from chordrec.inference.predictor import build_predictor
from chordrec.io.checkpoints import load_checkpoint
from chordrec.models import build_model
from chordrec.train import run
from tests.conftest import CONF
from tests.test_device import SPEC
from tests.test_inference import _songs

CPU = torch.device("cpu")

# The report's settings, as the default run reads them.
PLATEAU = OmegaConf.to_container(OmegaConf.load(CONF / "scheduler" / "plateau.yaml"))
MIN_LR = float(OmegaConf.load(CONF / "trainer" / "default.yaml").min_lr)
LR = float(OmegaConf.load(CONF / "optimizer" / "adam.yaml").lr)

# A forced plateau: after the first epoch's, no validation loss counts as an improvement
# (an absolute threshold no loss can beat).
FORCED_PLATEAU = {"threshold_mode": "abs", "threshold": 1e9}

CONFIG = {"model": SPEC, "data": {"level": "frame"}, "seq_len": 16, "seq_mode": "sequence"}


def plateau_schedule(lr: float, factor: float, patience: int, min_lr: float) -> list[float]:
    """Each epoch's learning rate up to the epoch that takes it below ``min_lr``, when
    only the first epoch improves the validation loss: the lr is multiplied by ``factor``
    after every ``patience + 1`` epochs without improvement, so the k-th reduction ends
    epoch ``1 + k (patience + 1)``, and the run stops after the first reduction below
    ``min_lr``."""
    reductions = 0
    while lr * factor**reductions >= min_lr:
        reductions += 1
    last_epoch = 1 + reductions * (patience + 1)
    return [
        lr * factor ** max(0, (epoch - 2) // (patience + 1)) for epoch in range(1, last_epoch + 1)
    ]


def _fit(
    tmp_path: Path,
    scheduler: dict,
    settings: TrainerSettings,
    lr: float = LR,
    resume_from: dict | None = None,
):
    """fit.fit on generated songs (4 to train on, 2 to validate) with a small GRU."""
    seed_everything(0)
    model = build_model(SPEC)
    train = [song_steps(s, "frame") for s in _songs(4, 0)]
    validation = [song_steps(s, "frame") for s in _songs(2, 1)]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return fit(
        model,
        BatchedExamples(train, 16, "sequence"),
        validation,
        optimizer,
        build_scheduler(scheduler, optimizer),
        settings,
        CPU,
        tmp_path,
        build_predictor(model, CONFIG, CPU),
        resume_from=resume_from,
    )


@pytest.mark.parametrize(
    ("factor", "patience", "min_lr", "epochs"),
    [
        # 1e-3 -> 2e-4 -> 4e-5 -> 8e-6 < 1e-5: three reductions, four epochs apart
        (PLATEAU["factor"], PLATEAU["patience"], MIN_LR, 13),
        # 1e-3 -> 5e-4 -> 2.5e-4 < 3e-4: two reductions, one epoch apart
        (0.5, 0, 3e-4, 3),
    ],
    ids=["report", "patience-0"],
)
def test_a_plateau_ends_converged_once_the_lr_falls_below_min_lr(
    tmp_path: Path, factor, patience, min_lr, epochs
) -> None:
    scheduler = {**PLATEAU, **FORCED_PLATEAU, "factor": factor, "patience": patience}
    settings = TrainerSettings(max_epochs=100, min_lr=min_lr, progress=False)
    result = _fit(tmp_path, scheduler, settings)
    expected = plateau_schedule(LR, factor, patience, min_lr)
    assert len(expected) == epochs
    assert (result.stop_reason, result.converged) == ("lr_below_min", True)
    assert result.epochs_run == len(expected) < settings.max_epochs
    assert result.history["train/lr"] == pytest.approx(expected)
    assert min(result.history["train/lr"]) >= min_lr  # it stopped at the first epoch it could

    # resumed from its last checkpoint, the converged run trains no further epoch
    last = load_checkpoint(tmp_path / "last.pt")
    resumed = _fit(tmp_path, scheduler, settings, resume_from=last)
    assert (resumed.stop_reason, resumed.converged) == ("lr_below_min", True)
    assert resumed.epochs_run == result.epochs_run
    assert resumed.history == last["history"]


def test_early_stopping_ends_patience_epochs_after_the_best_epoch(tmp_path: Path) -> None:
    patience = 2
    settings = TrainerSettings(
        max_epochs=100, min_lr=MIN_LR, early_stopping_patience=patience, progress=False
    )
    result = _fit(tmp_path, PLATEAU, settings, lr=0.05)
    assert (result.stop_reason, result.converged) == ("early_stopping", False)
    assert result.epochs_run == result.best_epoch + patience
    accuracy = result.history["val/acc"]
    best = accuracy[result.best_epoch - 1]
    assert result.best_epoch > 1  # the boundary counts from the best epoch, not the first
    assert all(a < best for a in accuracy[: result.best_epoch - 1])
    assert all(a <= best for a in accuracy[result.best_epoch :])
    assert len(accuracy) == result.epochs_run


@pytest.mark.integration
def test_a_real_run_below_min_lr_is_logged_converged(train_config) -> None:
    cfg = train_config(
        "model=rnn_baseline",
        "seq_len=32",
        "split.max_songs=1",
        "ood.part=null",
        "trainer.max_epochs=6",
        "trainer.min_lr=1e-4",
        "scheduler.patience=0",
        *(f"+scheduler.{key}={value}" for key, value in FORCED_PLATEAU.items()),
    )
    run(cfg)
    mlflow.set_tracking_uri(f"sqlite:///{cfg.tracking.store_dir}/mlflow.db")
    client = MlflowClient()
    (record,) = client.search_runs([client.get_experiment_by_name("chordrec").experiment_id])
    expected = plateau_schedule(
        cfg.optimizer.lr, cfg.scheduler.factor, cfg.scheduler.patience, cfg.trainer.min_lr
    )
    assert len(expected) == 3 < cfg.trainer.max_epochs
    assert record.info.status == "FINISHED"
    assert record.data.tags["converged"] == "yes"
    assert record.data.tags["stop_reason"] == "lr_below_min"
    assert record.data.metrics["fit/converged"] == 1.0
    assert record.data.metrics["fit/epochs_run"] == len(expected)
    history = sorted(
        client.get_metric_history(record.info.run_id, "train/lr"), key=lambda m: m.step
    )
    assert [m.step for m in history] == list(range(1, len(expected) + 1))
    assert [m.value for m in history] == pytest.approx(expected)
