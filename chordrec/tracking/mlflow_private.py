"""The only places chordrec reaches into MLflow's private state, one function each.

MLflow has no public way to let go of an active run without telling the tracking store
that it ended: :func:`mlflow.end_run` writes the run's status, which a server that
stopped answering cannot take. :class:`~chordrec.tracking.runs.RunTracker` then leaves
the run RUNNING, to be resumed, and forgets it here. Each function names the private
attribute it uses; ``tests/test_mlflow_private.py`` checks both on the installed MLflow
and fails naming the attribute if an upgrade removes it.
"""

from __future__ import annotations

import os

import mlflow.tracking.fluent

CHECKED_ON = ("3.0.0", "3.17.2")
"""The MLflow versions whose source these functions were checked against (the floor in
``pyproject.toml`` and the version in ``requirements.lock``)."""


def forget_active_run(run_id: str) -> None:
    """Drop run ``run_id`` from this thread's stack of active runs, if it is on top, and
    clear ``$MLFLOW_RUN_ID``, without writing anything to the store: MLflow's private
    ``mlflow.tracking.fluent._active_run_stack`` (a thread-local list of
    :class:`mlflow.ActiveRun`), popped as :func:`mlflow.end_run` pops it."""
    stack = mlflow.tracking.fluent._active_run_stack.get()
    if stack and stack[-1].info.run_id == run_id:
        stack.pop()
    os.environ.pop("MLFLOW_RUN_ID", None)  # as end_run clears it


def stop_system_metrics(run_id: str) -> None:
    """Stop the system-metrics monitor that :func:`mlflow.start_run` started for run
    ``run_id`` (``log_system_metrics=True``), if any: MLflow's private
    ``mlflow.tracking.fluent.run_id_to_system_metrics_monitor`` (run id →
    ``SystemMetricsMonitor``), finished as :func:`mlflow.end_run` finishes it."""
    monitor = mlflow.tracking.fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
    if monitor is not None:
        monitor.finish()
