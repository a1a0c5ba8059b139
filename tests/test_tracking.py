"""The tracking package: its public names, that it alone talks to MLflow (and never
imports torch itself), its defaults, and reading runs back."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import chordrec
from chordrec import constants, tracking
from chordrec.errors import UserError

PACKAGE = Path(tracking.__file__).resolve().parents[1]


def test_every_public_name_is_importable_from_the_package() -> None:
    assert sorted(tracking.__all__) == sorted(set(tracking.__all__))
    passwords = {"flatten", "holds_password", "redact", "refuse_password"}  # no MLflow there
    for name in tracking.__all__:
        home = "chordrec.passwords" if name in passwords else "chordrec.tracking."
        assert getattr(tracking, name).__module__.startswith(home)
    assert issubclass(tracking.TrackingError, UserError)
    assert tracking.TrackingError is tracking.store.TrackingError


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_only_the_tracking_package_imports_mlflow() -> None:
    outside = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "tracking" not in path.relative_to(PACKAGE).parts
        and any(m.split(".")[0] == "mlflow" for m in _imported_modules(path))
    ]
    assert outside == []


@pytest.mark.slow
def test_the_tracking_package_does_not_import_torch() -> None:
    for path in sorted((PACKAGE / "tracking").glob("*.py")):
        assert not any(m.split(".")[0] == "torch" for m in _imported_modules(path)), path
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, chordrec.tracking; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "False"


@pytest.mark.slow
def test_the_defaults_are_chordrecs_constants(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = tracking.configure()
    assert uri == f"sqlite:///{(tmp_path / constants.STORE_DIR).resolve() / 'mlflow.db'}"
    with tracking.RunTracker(system_metrics=False) as tracker:
        pass
    run = MlflowClient().get_run(tracker.run_id)
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == constants.EXPERIMENT
    assert (
        Path(experiment.artifact_location.removeprefix("file://"))
        == (tmp_path / constants.STORE_DIR / "artifacts").resolve()
    )


@pytest.mark.slow
def test_metric_history_reads_any_run_by_its_id(tmp_path: Path) -> None:
    tracking.configure(tmp_path)
    with tracking.RunTracker(store_dir=tmp_path, system_metrics=False) as tracker:
        tracker.log_metrics({"val/acc": 0.5}, step=1)
        tracker.log_metrics({"val/acc": 0.75, "train/lr": 0.1}, step=2)
    assert tracking.metric_history(tracker.run_id) == {
        "val/acc": {1: 0.5, 2: 0.75},
        "train/lr": {2: 0.1},
    }
    with pytest.raises(tracking.TrackingError, match="no MLflow run 'missing'"):
        tracking.metric_history("missing")


@pytest.mark.slow
def test_a_run_logged_with_the_old_names_is_read_with_the_current_ones(tmp_path: Path) -> None:
    """A store written before metrics were named by section: flat names, sizes as
    metrics, and a run resumed across the renaming that has both names."""
    tracking.configure(tmp_path)
    with tracking.RunTracker(store_dir=tmp_path, system_metrics=False) as tracker:
        tracker.log_metrics({"val_acc": 0.5, "lr": 0.1, "epoch_time_s": 3.0}, step=1)
        tracker.log_metrics({"val/acc": 0.75, "train/lr": 0.05}, step=2)  # resumed, new names
        tracker.log_metrics(
            {
                "test_frame_acc": 0.7,
                "val_frame_acc_viterbi": 0.6,
                "viterbi_self_transition": 0.99,
                "epochs_run": 2,
                "size_train_chunks32": 12,
                "size_validation_steps": 345,
            }
        )
    assert tracking.metric_history(tracker.run_id) == {
        "val/acc": {1: 0.5, 2: 0.75},
        "train/lr": {1: 0.1, 2: 0.05},
        "time/epoch_s": {1: 3.0},
        "test/frame_acc": {0: 0.7},
        "val/frame_acc_viterbi": {0: 0.6},
        "decode/self_transition": {0: 0.99},
        "fit/epochs_run": {0: 2.0},
    }
    assert tracking.run_metrics(tracker.run_id)["decode/self_transition"] == 0.99
    (record,) = tracking.find_runs(constants.EXPERIMENT)
    assert record.metrics["test/frame_acc"] == 0.7 and record.metrics["fit/epochs_run"] == 2
    assert not any(k.startswith("size_") for k in record.metrics)
    assert record.params == {"sizes.train.chunks32": "12", "sizes.validation.steps": "345"}


@pytest.mark.slow
def test_run_checkpoint_names_what_is_missing(tmp_path: Path) -> None:
    tracking.configure(tmp_path)
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    with tracking.RunTracker(store_dir=tmp_path, system_metrics=False) as tracker:
        tracker.log_checkpoint(checkpoint)
    path = tracking.run_checkpoint(tracker.run_id, "last", tmp_path / "download")
    assert path == tmp_path / "download" / "last.pt" and path.read_bytes() == b"weights"
    with pytest.raises(tracking.TrackingError, match="has no checkpoints/best.pt"):
        tracking.run_checkpoint(tracker.run_id, "best", tmp_path / "download")
    with pytest.raises(tracking.TrackingError, match="no MLflow run 'missing'"):
        tracking.run_checkpoint("missing")


@pytest.mark.slow
def test_a_logged_model_requires_the_installed_torch(tmp_path: Path) -> None:
    tracking.configure(tmp_path)
    with tracking.RunTracker(store_dir=tmp_path, system_metrics=False) as tracker:
        uri = tracker.log_model(torch.nn.Linear(12, 3), np.zeros((1, 12), np.float32))
    requirements = Path(mlflow.artifacts.download_artifacts(uri)) / "requirements.txt"
    lines = requirements.read_text().split()
    assert f"torch=={version('torch').split('+')[0]}" in lines
    assert f"chordrec=={chordrec.__version__}" in lines
