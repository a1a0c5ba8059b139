"""Everything chordrec says to MLflow goes through this package; no other part of
chordrec imports ``mlflow``.

Callers use the names below (``from chordrec import tracking``); each module holds one
concern and imports only those beneath it (``store`` ← ``runs`` ← ``registry``, and
``store`` ← ``search``):

- :mod:`~chordrec.tracking.store`: where MLflow writes: :func:`configure` (SQLite store
  ``<store>/mlflow.db`` with artifacts under ``<store>/artifacts``, or
  ``$MLFLOW_TRACKING_URI``, or a server checked by :func:`check_server`),
  :func:`retry_locked` for calls that find SQLite locked or a server not answering (each
  within ``tracking.server_wait_s``, a create never repeated after a lost reply),
  :func:`ensure_experiment`,
  :func:`ui_command` and :func:`tracking_server_command` (the commands that serve a store),
  and :class:`TrackingError`. :func:`redact` (every password form, for everything
  chordrec writes), :func:`holds_password`, :func:`refuse_password` (a setting or
  argument holding one) and :func:`flatten` are :mod:`chordrec.passwords`' (no MLflow
  there), re-exported here.
- :mod:`~chordrec.tracking.auth`: MLflow's basic-auth app for a server others reach:
  :func:`prepare_auth` (its settings and generated admin password, as :class:`AuthSetup`).
- :mod:`~chordrec.tracking.runs`: one training run: :class:`RunTracker` (start or resume,
  log, end with the right status), its tags (:func:`base_tags` with the versions of
  Python and the main libraries, :func:`git_state`, :func:`process_tags`), reading a
  run back (:func:`get_run`, :func:`run_metrics`, :func:`metric_history`,
  :func:`metric_steps`) and
  :func:`check_resumable`.
- :mod:`~chordrec.tracking.mlflow_private`: the only uses of MLflow's private state (letting
  go of a run without ending it when the server is gone), one function each, tested
  against the installed MLflow (``tests/test_mlflow_private.py``).
- :mod:`~chordrec.tracking.legacy`: runs logged before metrics were named by section
  (``train_loss`` → ``train/loss``), mapped by everything that reads runs back
  (:func:`current_metrics`).
- :mod:`~chordrec.tracking.registry`: what runs leave for later use: a run's checkpoint
  (:func:`run_checkpoint`), registered model versions (:func:`register_run_model`,
  :func:`registered_run_id`).
- :mod:`~chordrec.tracking.search`: runs across an experiment: :func:`find_runs` and
  :func:`runs_by_id` (as :class:`RunRecord` values), the parent run of a study or a
  sweep (:func:`start_parent_run`, :func:`find_sweep_parent`, :func:`reopen_parent_run`,
  :func:`end_parent_run`, :func:`set_run_tags`, :func:`delete_run`,
  :func:`check_study_id`), an Optuna study's standing on its parent (:func:`record_study`), what a sweep's summary
  logs to its parent (:func:`log_figure_to_run`, :func:`log_metrics_to_run`) and runs
  holding one text such as a result table (:func:`create_run_with_text`,
  :func:`log_text_to_run`).
- :mod:`~chordrec.tracking.ui`: addresses in the MLflow UI, pure functions of strings:
  where it is (:func:`ui_base_url`), an experiment's and a run's pages (:func:`experiment_url`,
  :func:`run_url`) and its pages comparing chosen runs (:func:`compare_url`,
  :func:`compare_table_url`).

The defaults (store directory, experiment, registered model) are those of
:mod:`chordrec.constants`.
"""

from __future__ import annotations

from chordrec.passwords import flatten, holds_password, redact, refuse_password
from chordrec.tracking.auth import AuthSetup, prepare_auth
from chordrec.tracking.legacy import current_metrics
from chordrec.tracking.registry import register_run_model, registered_run_id, run_checkpoint
from chordrec.tracking.runs import (
    DatasetRecord,
    RunTracker,
    base_tags,
    check_resumable,
    get_run,
    git_state,
    metric_history,
    metric_steps,
    process_tags,
    run_metrics,
)
from chordrec.tracking.search import (
    RunRecord,
    check_study_id,
    create_run_with_text,
    delete_run,
    end_parent_run,
    find_experiment_id,
    find_runs,
    find_sweep_parent,
    log_figure_to_run,
    log_metrics_to_run,
    log_text_to_run,
    record_study,
    reopen_parent_run,
    runs_by_id,
    set_run_tags,
    start_parent_run,
)
from chordrec.tracking.store import (
    ServerUnavailable,
    TrackingError,
    artifact_root,
    check_database,
    check_server,
    configure,
    current_uri,
    ensure_experiment,
    mlflow_client,
    retry_locked,
    store_uri,
    tracking_server_command,
    ui_command,
)
from chordrec.tracking.ui import (
    compare_table_url,
    compare_url,
    experiment_url,
    run_url,
    ui_base_url,
)

__all__ = [
    # auth
    "AuthSetup",
    "prepare_auth",
    # legacy
    "current_metrics",
    # store
    "ServerUnavailable",
    "TrackingError",
    "artifact_root",
    "check_database",
    "check_server",
    "configure",
    "current_uri",
    "ensure_experiment",
    "holds_password",
    "mlflow_client",
    "redact",
    "refuse_password",
    "retry_locked",
    "store_uri",
    "tracking_server_command",
    "ui_command",
    # runs
    "DatasetRecord",
    "RunTracker",
    "base_tags",
    "check_resumable",
    "flatten",
    "get_run",
    "git_state",
    "metric_history",
    "metric_steps",
    "process_tags",
    "run_metrics",
    # registry
    "register_run_model",
    "registered_run_id",
    "run_checkpoint",
    # search
    "RunRecord",
    "check_study_id",
    "create_run_with_text",
    "delete_run",
    "end_parent_run",
    "find_experiment_id",
    "find_runs",
    "find_sweep_parent",
    "log_figure_to_run",
    "log_metrics_to_run",
    "log_text_to_run",
    "record_study",
    "reopen_parent_run",
    "runs_by_id",
    "set_run_tags",
    "start_parent_run",
    # ui
    "compare_table_url",
    "compare_url",
    "experiment_url",
    "run_url",
    "ui_base_url",
]
