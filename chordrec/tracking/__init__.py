"""Everything chordrec says to MLflow goes through this package; no other part of
chordrec imports ``mlflow``.

Callers use the names below (``from chordrec import tracking``); each module holds one
concern and imports only those beneath it (``store`` ← ``runs`` ← ``registry``, and
``store`` ← ``search``):

- :mod:`~chordrec.tracking.store`: where MLflow writes: :func:`configure` (SQLite store
  ``<store>/mlflow.db`` with artifacts under ``<store>/artifacts``, or
  ``$MLFLOW_TRACKING_URI``, or a server checked by :func:`check_server`),
  :func:`retry_locked` for writes that find SQLite locked, :func:`ensure_experiment`,
  :func:`server_command`, and :class:`TrackingError`.
- :mod:`~chordrec.tracking.runs`: one training run: :class:`RunTracker` (start or resume,
  log, end with the right status), its tags (:func:`base_tags`, :func:`git_state`,
  :func:`process_tags`), :func:`flatten` for params, reading a run back
  (:func:`get_run`, :func:`metric_history`) and :func:`check_resumable`.
- :mod:`~chordrec.tracking.registry`: what runs leave for later use: a run's checkpoint
  (:func:`run_checkpoint`), registered model versions (:func:`register_run_model`,
  :func:`registered_run_id`).
- :mod:`~chordrec.tracking.search`: runs across an experiment: :func:`find_runs` (as
  :class:`RunRecord` values), a study's parent run (:func:`start_parent_run`,
  :func:`end_parent_run`, :func:`check_study_id`) and runs holding one text such as a
  result table (:func:`create_run_with_text`, :func:`log_text_to_run`).

The defaults (store directory, experiment, registered model) are those of
:mod:`chordrec.constants`.
"""

from __future__ import annotations

from chordrec.tracking.registry import register_run_model, registered_run_id, run_checkpoint
from chordrec.tracking.runs import (
    RunTracker,
    base_tags,
    check_resumable,
    flatten,
    get_run,
    git_state,
    metric_history,
    process_tags,
)
from chordrec.tracking.search import (
    RunRecord,
    check_study_id,
    create_run_with_text,
    end_parent_run,
    find_runs,
    log_text_to_run,
    start_parent_run,
)
from chordrec.tracking.store import (
    TrackingError,
    artifact_root,
    check_server,
    configure,
    ensure_experiment,
    retry_locked,
    server_command,
    store_uri,
)

__all__ = [
    # store
    "TrackingError",
    "artifact_root",
    "check_server",
    "configure",
    "ensure_experiment",
    "retry_locked",
    "server_command",
    "store_uri",
    # runs
    "RunTracker",
    "base_tags",
    "check_resumable",
    "flatten",
    "get_run",
    "git_state",
    "metric_history",
    "process_tags",
    # registry
    "register_run_model",
    "registered_run_id",
    "run_checkpoint",
    # search
    "RunRecord",
    "check_study_id",
    "create_run_with_text",
    "end_parent_run",
    "find_runs",
    "log_text_to_run",
    "start_parent_run",
]
