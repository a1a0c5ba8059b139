"""A ``_target_`` read from a checkpoint or a store names only an allowed class
(chordrec.targets): a checkpoint naming other code is refused, and that code never runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from chordrec import tracking
from chordrec.errors import ConfigError
from chordrec.fit import build_optimizer, build_scheduler
from chordrec.io.checkpoints import save_checkpoint
from chordrec.models import build_model
from chordrec.run import download_checkpoint
from chordrec.targets import ALLOWED, allowed_class
from chordrec.transcribe import load_model
from tests.test_transcribe import LINEAR

OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 0.001}
SCHEDULER = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 3}


def _code(marker: Path) -> dict[str, str]:
    """A spec that, were it instantiated, would create ``marker``."""
    return {"_target_": "os.system", "command": f"touch {marker}"}


def test_every_listed_target_is_a_class_and_others_are_refused(tmp_path: Path) -> None:
    for kind, patterns in ALLOWED.items():
        for pattern in patterns:
            if not pattern.endswith(".*"):
                assert isinstance(allowed_class(kind, pattern, "the test"), type)
    assert allowed_class("pruner", "optuna.pruners.MedianPruner", "the test").__name__ == (
        "MedianPruner"
    )
    refused = [
        ("model", "os.system"),
        ("model", "torch.nn.Linear"),
        ("optimizer", "torch.optim.lr_scheduler.CosineAnnealingLR"),
        ("scheduler", "torch.optim.Adam"),
        ("pruner", "optuna.samplers.TPESampler"),
        ("pruner", "optuna.pruners._percentile.PercentilePruner"),
        ("sampler", "optuna.samplers.nsgaii.os.system"),
        ("sampler", ""),
    ]
    for kind, target in refused:
        with pytest.raises(ConfigError, match=f"{kind} _target_ '.*' in the test is not allowed"):
            allowed_class(kind, target, "the test")
    with pytest.raises(ConfigError, match="'optuna.pruners.TYPE_CHECKING' in x is not a class"):
        allowed_class("pruner", "optuna.pruners.TYPE_CHECKING", "x")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        allowed_class("sampler", "optuna.samplers.Nope", "x")


def test_build_functions_refuse_code_and_name_where_the_config_came_from(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = build_model(LINEAR)
    optimizer = build_optimizer(OPTIMIZER, model.parameters())
    assert isinstance(build_scheduler(SCHEDULER, optimizer), torch.optim.lr_scheduler.LRScheduler)
    with pytest.raises(ConfigError, match="model _target_ 'os.system' in a.pt is not allowed"):
        build_model(_code(marker), "a.pt")
    with pytest.raises(ConfigError, match="optimizer _target_ 'os.system' in b is not allowed"):
        build_optimizer(_code(marker), model.parameters(), "b")
    with pytest.raises(ConfigError, match="scheduler _target_ 'os.system' in c is not allowed"):
        build_scheduler(_code(marker), optimizer, "c")
    assert not marker.exists()


def test_a_checkpoint_file_naming_code_as_its_model_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = save_checkpoint(
        {
            "model": build_model(LINEAR).state_dict(),
            "config": {
                "model": _code(marker),
                "data": {"level": "frame"},
                "seq_len": 8,
                "seq_mode": "sequence",
            },
        },
        tmp_path / "best.pt",
    )
    with pytest.raises(ConfigError, match=f"model _target_ 'os.system' in {path} is not allowed"):
        load_model(str(path), "cpu")
    assert not marker.exists()


@pytest.mark.slow
def test_a_runs_checkpoint_naming_code_is_refused_when_read(tmp_path: Path) -> None:
    """Resume (``last.pt``), ``chordrec evaluate`` and ``init_from`` (``best.pt``) read a
    run's checkpoint from the store through ``download_checkpoint``."""
    marker = tmp_path / "ran"
    allowed = {"model": LINEAR, "optimizer": OPTIMIZER, "scheduler": SCHEDULER}
    store = tmp_path / "store"
    tracking.configure(store)

    def logged(config: dict) -> str:
        path = save_checkpoint(
            {"model": build_model(LINEAR).state_dict(), "config": config}, tmp_path / "last.pt"
        )
        with tracking.RunTracker(store_dir=store, system_metrics=False) as tracker:
            MlflowClient().log_artifact(tracker.run_id, str(path), "checkpoints")
        return tracker.run_id

    for kind in allowed:
        run_id = logged({**allowed, kind: _code(marker)})
        source = f"checkpoints/last.pt of run {run_id} \\({kind}\\)"
        with pytest.raises(ConfigError, match=f"{kind} _target_ 'os.system' in {source} is not"):
            download_checkpoint(run_id, "last", tmp_path / run_id)
    assert not marker.exists()
    run_id = logged(allowed)
    assert download_checkpoint(run_id, "last", tmp_path / run_id)["config"] == allowed
