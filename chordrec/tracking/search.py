"""Runs across an experiment: finding them as plain records, and the runs that studies
(a parent run others nest under) and result tables (a run holding one text) add."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Run, RunStatus
from mlflow.tracking import MlflowClient

from chordrec.errors import ConfigError
from chordrec.tracking.legacy import current_metrics, legacy_sizes
from chordrec.tracking.store import TrackingError, create_run, ensure_experiment, retry_locked


@dataclass(frozen=True)
class RunRecord:
    """A run as plain data: what result tables are built from."""

    run_id: str
    run_name: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    experiment_id: str = ""


_STUDY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_study_id(study: str) -> str:
    """Return ``study`` if it is a valid study id: 1-100 letters, digits, '.', '_' or
    '-', starting with a letter or digit. It becomes a run tag, a Hydra override and an
    MLflow filter, where a comma would start a sweep and a quote end the filter; raises
    :class:`~chordrec.errors.ConfigError` naming the id otherwise."""
    if not _STUDY_ID.fullmatch(study):
        raise ConfigError(
            f"study id {study!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return study


def find_runs(
    experiment: str | None = None, study: str | None = None, parent_run_id: str | None = None
) -> list[RunRecord]:
    """Runs of experiment ``experiment`` (all experiments if None), only those tagged
    ``study=<study>`` and those nested under run ``parent_run_id`` if given, newest
    first, with current metric names (an old run's
    ``size_*`` metrics become ``sizes.*`` params: :mod:`~chordrec.tracking.legacy`). Raises :class:`TrackingError` if the
    experiment does not exist, ConfigError for an invalid study id."""
    if study is not None:
        check_study_id(study)
    client = MlflowClient()
    if experiment is not None:
        found = retry_locked(lambda: client.get_experiment_by_name(experiment))
        if found is None:
            raise TrackingError(
                f"no MLflow experiment {experiment!r} in {mlflow.get_tracking_uri()}"
            )
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in retry_locked(lambda: client.search_experiments())]
    conditions = []
    if study:
        conditions.append(f"tags.study = '{study}'")
    if parent_run_id:
        if not parent_run_id.isalnum():
            raise ConfigError(f"not an MLflow run id: {parent_run_id!r}")
        conditions.append(f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    query = " and ".join(conditions)
    runs = retry_locked(
        lambda: client.search_runs(
            ids, filter_string=query, order_by=["attributes.start_time DESC"], max_results=5000
        )
    )
    return [_record(r) for r in runs]


def runs_by_id(run_ids: Sequence[str]) -> list[RunRecord]:
    """Runs ``run_ids`` (in that order) as records with current metric names; a
    :class:`TrackingError` names the first id the store does not hold."""
    client = MlflowClient()
    records = []
    for run_id in run_ids:
        try:
            records.append(_record(retry_locked(lambda r=run_id: client.get_run(r))))
        except mlflow.exceptions.MlflowException as exc:
            raise TrackingError(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}") from exc
    return records


def _record(run: Run) -> RunRecord:
    """``run`` as plain data, with current metric names (and an old run's ``size_*``
    metrics as ``sizes.*`` params: :mod:`~chordrec.tracking.legacy`)."""
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        params={**legacy_sizes(run.data.metrics), **run.data.params},
        metrics=current_metrics(run.data.metrics),
        tags=dict(run.data.tags),
        experiment_id=run.info.experiment_id,
    )


def start_parent_run(
    experiment: str, name: str, tags: Mapping[str, str], store_dir: str | Path
) -> str:
    """Create a RUNNING run that other runs nest under (a study); returns its id."""
    experiment_id = ensure_experiment(experiment, store_dir)
    return create_run(experiment_id, name, {k: str(v) for k, v in tags.items()}).info.run_id


def find_experiment_id(experiment: str) -> str | None:
    """The id of experiment ``experiment``, or None when the store has none by that name."""
    found = retry_locked(lambda: MlflowClient().get_experiment_by_name(experiment))
    return None if found is None else found.experiment_id


def find_sweep_parent(experiment: str, sweep_id: str) -> str | None:
    """The id of the parent run of sweep ``sweep_id`` (tags ``kind=sweep``,
    ``sweep_id``) in ``experiment``, the earliest if several (the one that every worker
    of a sweep keeps), or None."""
    if not sweep_id.isalnum():
        raise ConfigError(f"not a sweep id: {sweep_id!r}")
    experiment_id = find_experiment_id(experiment)
    if experiment_id is None:
        return None
    runs = retry_locked(
        lambda: MlflowClient().search_runs(
            [experiment_id],
            filter_string=f"tags.kind = 'sweep' and tags.sweep_id = '{sweep_id}'",
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            max_results=1,
        )
    )
    return runs[0].info.run_id if runs else None


def reopen_parent_run(run_id: str, tags: Mapping[str, str]) -> None:
    """Mark parent run ``run_id`` RUNNING again (a relaunched sweep), drop the ``error``
    of its last launch and update ``tags``."""
    client = MlflowClient()
    run = retry_locked(lambda: client.get_run(run_id))
    retry_locked(lambda: client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING)))
    if "error" in run.data.tags:
        retry_locked(lambda: client.delete_tag(run_id, "error"))
    set_run_tags(run_id, tags)


def delete_run(run_id: str) -> None:
    """Delete run ``run_id`` (MLflow keeps it in the trash)."""
    retry_locked(lambda: MlflowClient().delete_run(run_id))


def record_study(run_id: str, results: Mapping[str, Any]) -> None:
    """Log an Optuna study's standing to its parent run ``run_id``: ``results`` as
    ``study.yaml``; tags ``best_trial``, ``best_run_id`` and ``best.<setting>`` for each
    best param; metrics ``study/best_value`` and ``study/trials_<state>`` at the step of
    the study's trial count (tags and metrics, not params: every worker of a study
    updates them)."""
    client = MlflowClient()
    counts = dict(results.get("trials") or {})
    step = sum(counts.values())
    tags = {"best_trial": results.get("best_trial"), "best_run_id": results.get("best_run_id")}
    tags.update({f"best.{k}": v for k, v in dict(results.get("best_params") or {}).items()})
    set_run_tags(run_id, {k: str(v) for k, v in tags.items() if v is not None})
    now = int(time.time() * 1000)
    metrics = [Metric(f"study/trials_{state}", float(n), now, step) for state, n in counts.items()]
    if results.get("best_value") is not None:
        metrics.append(Metric("study/best_value", float(results["best_value"]), now, step))
    retry_locked(lambda: client.log_batch(run_id, metrics=metrics))
    log_text_to_run(run_id, yaml.safe_dump(dict(results), sort_keys=False), "study.yaml")


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Set ``tags`` on run ``run_id`` (which need not be active)."""
    client = MlflowClient()
    for key, value in tags.items():
        retry_locked(lambda k=key, v=value: client.set_tag(run_id, k, str(v)))


def end_parent_run(run_id: str, succeeded: bool) -> None:
    """End a run made by :func:`start_parent_run`: FINISHED, or FAILED."""
    status = RunStatus.to_string(RunStatus.FINISHED if succeeded else RunStatus.FAILED)
    retry_locked(lambda: MlflowClient().set_terminated(run_id, status))


def log_text_to_run(run_id: str, text: str, name: str) -> None:
    """Write ``text`` as artifact ``name`` of run ``run_id`` (which need not be active)."""
    retry_locked(lambda: MlflowClient().log_text(run_id, text, name))


def log_figure_to_run(run_id: str, figure: Any, name: str) -> None:
    """Write matplotlib ``figure`` as artifact ``name`` (e.g. ``figures/factors.png``) of
    run ``run_id`` (which need not be active), replacing an artifact of that name."""
    retry_locked(lambda: MlflowClient().log_figure(run_id, figure, name))


def log_metrics_to_run(run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log ``metrics`` to run ``run_id`` (which need not be active) at ``step``."""
    now = int(time.time() * 1000)
    points = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    retry_locked(lambda: MlflowClient().log_batch(run_id, metrics=points))


def create_run_with_text(
    experiment: str, name: str, text: str, artifact: str, tags: Mapping[str, str]
) -> str:
    """A small FINISHED run holding one text artifact (e.g. a result table); returns its id."""
    client = MlflowClient()
    found = retry_locked(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        raise TrackingError(f"no MLflow experiment {experiment!r}")
    run = create_run(found.experiment_id, name, tags)
    log_text_to_run(run.info.run_id, text, artifact)
    retry_locked(lambda: client.set_terminated(run.info.run_id, "FINISHED"))
    return run.info.run_id
