"""MLflow's private state that chordrec uses (:mod:`chordrec.tracking.mlflow_private`):
still there, and still doing what chordrec relies on, on the installed MLflow.

Checked on MLflow 3.0.0 (the floor) and 3.17.2 (requirements.lock). A failure here
after an upgrade names the private attribute that changed: rewrite the one function
that uses it."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import mlflow
import mlflow.tracking.fluent as fluent
import pytest

from chordrec.tracking import mlflow_private

MLFLOW = importlib.metadata.version("mlflow")


@pytest.mark.parametrize("name", ["_active_run_stack", "run_id_to_system_metrics_monitor"])
def test_the_private_names_are_there(name: str) -> None:
    assert hasattr(fluent, name), (
        f"MLflow {MLFLOW} has no mlflow.tracking.fluent.{name} (checked on "
        f"{', '.join(mlflow_private.CHECKED_ON)}): rewrite chordrec.tracking.mlflow_private"
    )


@pytest.mark.slow  # an SQLite store's first migrations: seconds
def test_a_run_is_forgotten_and_its_monitor_stopped_without_ending_it(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.system_metrics.set_system_metrics_sampling_interval(1)
    try:
        run = mlflow.start_run(log_system_metrics=True)
        run_id = run.info.run_id
        monitor = fluent.run_id_to_system_metrics_monitor.get(run_id)
        assert monitor is not None, f"MLflow {MLFLOW} keeps no monitor by run id"
        mlflow_private.stop_system_metrics(run_id)
        mlflow_private.forget_active_run(run_id)
        assert mlflow.active_run() is None, f"MLflow {MLFLOW}: _active_run_stack not popped"
        assert run_id not in fluent.run_id_to_system_metrics_monitor
        assert monitor._process is None  # finished: its thread is gone
        # nothing was written to the store: the run is still RUNNING there
        assert mlflow.MlflowClient().get_run(run_id).info.status == "RUNNING"
    finally:
        mlflow.system_metrics.set_system_metrics_sampling_interval(None)
        while mlflow.active_run() is not None:
            mlflow.end_run()
