"""One training run in MLflow: opening and closing it, what it logs, and reading it back.

:class:`RunTracker` is the run a training process logs to; the functions read any run
(:func:`get_run`, :func:`metric_history`) and decide whether one may be resumed
(:func:`process_tags`, :func:`check_resumable`).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import psutil
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import LoggedModelStatus, Metric, Run, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

import chordrec
from chordrec.constants import EXPERIMENT, STORE_DIR
from chordrec.errors import TrialPruned
from chordrec.passwords import flatten, holds_password, redact
from chordrec.tracking.legacy import current_metric_names, current_metrics, previous_metric_name
from chordrec.tracking.mlflow_private import forget_active_run, stop_system_metrics
from chordrec.tracking.store import (
    ServerUnavailable,
    TrackingError,
    created_run,
    ensure_experiment,
    request_filter,
    request_tag,
    retry_locked,
    server_answers,
)


def get_run(run_id: str, client: MlflowClient | None = None) -> Run:
    """MLflow run ``run_id``; :class:`TrackingError` naming the store when it is missing."""
    client = client or MlflowClient()
    try:
        return retry_locked(lambda: client.get_run(run_id))
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}") from exc


def run_metrics(run_id: str) -> dict[str, float]:
    """The last value of each metric of run ``run_id``, by current name
    (:mod:`~chordrec.tracking.legacy`); :class:`TrackingError` when the run is missing."""
    return current_metrics(get_run(run_id).data.metrics)


def metric_history(run_id: str, client: MlflowClient | None = None) -> dict[str, dict[int, float]]:
    """Logged per-step values of each metric of run ``run_id``: ``{metric: {step: value}}``,
    by current name (:mod:`~chordrec.tracking.legacy`; a run resumed across the renaming
    has both names, merged here); :class:`TrackingError` when the run is missing."""
    client = client or MlflowClient()
    run = get_run(run_id, client)
    history: dict[str, dict[int, float]] = {}
    for key, name in current_metric_names(run.data.metrics).items():
        points = retry_locked(lambda k=key: client.get_metric_history(run.info.run_id, k))
        history.setdefault(name, {}).update({m.step: m.value for m in points})
    return history


def metric_steps(run_id: str, metric: str, client: MlflowClient | None = None) -> dict[int, float]:
    """Logged per-step values of one metric of run ``run_id``, by its current name (or
    the name a run logged before the renaming: :mod:`~chordrec.tracking.legacy`):
    ``{step: value}``, empty when the run logged none."""
    client = client or MlflowClient()
    for key in (metric, previous_metric_name(metric)):
        points = retry_locked(lambda k=key: client.get_metric_history(run_id, k))
        if points:
            return {m.step: m.value for m in points}
    return {}


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """Tags ``git_commit`` and ``git_dirty`` for the checkout at ``cwd`` (or 'unknown')."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": str(bool(git("status", "--porcelain"))),
        }
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


RECORDED_VERSIONS = {
    "torch_version": "torch",
    "mlflow_version": "mlflow",
    "librosa_version": "librosa",
    "numpy_version": "numpy",
    "hydra_version": "hydra-core",
}
"""Tag → distribution whose installed version every run records (``python_version``
too). Read from the installed metadata, so this package never imports torch; torch's
carries its build (``2.13.0+cpu``, ``2.13.0+cu128``), which the lock file leaves open."""


def library_versions() -> dict[str, str]:
    """Tags ``python_version`` and :data:`RECORDED_VERSIONS`: the versions a run ran on
    (``not installed`` for a missing distribution)."""
    tags = {"python_version": platform.python_version()}
    for tag, distribution in RECORDED_VERSIONS.items():
        try:
            tags[tag] = version(distribution)
        except PackageNotFoundError:
            tags[tag] = "not installed"
    return tags


def base_tags(device: str) -> dict[str, str]:
    """Tags every run carries: chordrec version, the versions of Python and the main
    libraries (:func:`library_versions`), host, device, git state (of the checkout that
    holds the ``chordrec`` package)."""
    return {
        "chordrec_version": chordrec.__version__,
        **library_versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
        **git_state(Path(chordrec.__file__).resolve().parents[1]),
    }


DIGEST_LENGTH = 16
"""Hex digits of a data set's checksum kept as its MLflow dataset digest (MLflow's
column holds 36 characters; the full checksum is the run's ``dataset_sha256`` tag)."""


@dataclass(frozen=True)
class DatasetRecord:
    """A data set part as a run records it: ``name`` and ``version``, ``digest`` (the
    data set checksum), ``source`` (the URL it is fetched from), ``profile`` (sizes:
    songs, frames, level...) and the ``columns`` of one example (name → MLflow type)."""

    name: str
    version: str
    digest: str
    source: str
    profile: Mapping[str, Any]
    columns: Mapping[str, str]


class _ProfiledDataset(MetaDataset):
    """A metadata-only MLflow dataset that also carries a profile."""

    def __init__(self, record: DatasetRecord):
        schema = Schema([ColSpec(kind, name) for name, kind in record.columns.items()])
        super().__init__(
            HTTPDatasetSource(record.source),
            name=record.name,
            digest=record.digest[:DIGEST_LENGTH],
            schema=schema,
        )
        self._profile = {"version": record.version, **record.profile}

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


_DUPLICATE_ROW = ("unique constraint failed", "uniqueviolation", "duplicate key")
"""Lower-case fragments of a store's error for a row that another process inserted first."""


class _Interrupted(BaseException):
    """Raised in place of SIGTERM so the run is closed as KILLED."""


def _raise_interrupted(signum, frame) -> None:
    raise _Interrupted()


class RunTracker:
    """One MLflow run: start (or reopen for resume), log, end with the right status.

    Used as a context manager; an exception ends the run FAILED, Ctrl-C or SIGTERM
    ends it KILLED, a clean exit FINISHED.
    """

    def __init__(
        self,
        experiment: str = EXPERIMENT,
        store_dir: str | Path = STORE_DIR,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        resume_run_id: str | None = None,
        system_metrics: bool = True,
        system_metrics_interval_s: float = 10.0,
    ):
        self.experiment, self.store_dir = experiment, store_dir
        self.run_name, self.tags = run_name, dict(tags or {})
        self.resume_run_id = resume_run_id
        self.system_metrics = system_metrics
        self.interval = system_metrics_interval_s
        self.run_id = self.experiment_id = ""
        self.local_checkpoints: Path | None = None
        """Where the run's checkpoints are written before they are logged (named when
        the server goes away)."""
        self.client = MlflowClient()

    def __enter__(self) -> RunTracker:
        if self.system_metrics:
            mlflow.system_metrics.set_system_metrics_sampling_interval(self.interval)
            mlflow.system_metrics.set_system_metrics_samples_before_logging(1)
        if self.resume_run_id:
            run = get_run(self.resume_run_id, self.client)
            active = retry_locked(
                lambda: mlflow.start_run(
                    run_id=run.info.run_id, log_system_metrics=self.system_metrics
                )
            )
        else:
            experiment_id = ensure_experiment(self.experiment, self.store_dir)
            request = request_tag()
            active = retry_locked(
                lambda: mlflow.start_run(
                    experiment_id=experiment_id,
                    run_name=self.run_name,
                    tags={**self.tags, **request},
                    log_system_metrics=self.system_metrics,
                ),
                landed=lambda: self._start_created(experiment_id, request),
            )
        self.run_id, self.experiment_id = active.info.run_id, active.info.experiment_id
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupted)
        return self

    def _start_created(
        self, experiment_id: str, request: dict[str, str]
    ) -> mlflow.ActiveRun | None:
        """Make the run that an earlier try created with tag ``request`` (its reply
        lost) the active run; None when there is none."""
        run = created_run(experiment_id, request)
        if run is None:
            return None
        return mlflow.start_run(run_id=run.info.run_id, log_system_metrics=self.system_metrics)

    def __exit__(self, kind, exc, tb) -> bool:
        signal.signal(signal.SIGTERM, self._previous_sigterm)
        uri = mlflow.get_tracking_uri()
        if kind is not None and uri.startswith("http") and not server_answers(uri):
            self._leave_unended()
            raise ServerUnavailable(
                f"MLflow tracking server {redact(uri)} stopped answering and did not come back "
                f"within tracking.server_wait_s ({_first_line(exc)}); run {self.run_id} is "
                f"left RUNNING with the epochs it logged"
                + (
                    f", its last checkpoint is in {self.local_checkpoints}"
                    if self.local_checkpoints
                    else ""
                )
                + ". Once the server is back, finish it with: python -m chordrec.train "
                + _resume_command(self.run_id, uri)
            ) from exc
        if kind is None:
            status = RunStatus.to_string(RunStatus.FINISHED)
        elif issubclass(kind, KeyboardInterrupt | _Interrupted):
            status = RunStatus.to_string(RunStatus.KILLED)
        elif issubclass(kind, TrialPruned):
            status = RunStatus.to_string(RunStatus.KILLED)
            retry_locked(lambda: mlflow.set_tags({"pruned": "true", "pruned_reason": str(exc)}))
        else:
            status = RunStatus.to_string(RunStatus.FAILED)
            retry_locked(lambda: mlflow.set_tag("error", f"{kind.__name__}: {exc}"[:5000]))
        retry_locked(lambda: mlflow.end_run(status=status))
        if kind is _Interrupted:
            raise KeyboardInterrupt("terminated (SIGTERM)") from None
        return False

    def _leave_unended(self) -> None:
        """Forget the active run without telling the server (which does not answer), and
        stop its system-metrics monitor (MLflow's private state:
        :mod:`~chordrec.tracking.mlflow_private`)."""
        forget_active_run(self.run_id)
        stop_system_metrics(self.run_id)

    @property
    def artifact_uri(self) -> str:
        """Where the active run's artifacts go."""
        return mlflow.get_artifact_uri()

    def log_config(self, config: Mapping[str, Any], yaml_text: str) -> None:
        """The resolved config: flattened as params and whole as ``config.yaml``, any
        password in a URI (e.g. a ``tracking.uri`` naming a database) replaced by ``***``."""
        params = flatten(config)
        for key, value in params.items():
            hidden = redact(value)
            if hidden != value:
                yaml_text = yaml_text.replace(value, hidden)
                params[key] = hidden
        items = list(params.items())
        for start in range(0, len(items), 100):
            retry_locked(lambda s=start: mlflow.log_params(dict(items[s : s + 100])))
        retry_locked(lambda: mlflow.log_text(yaml_text, "config.yaml"))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` to the run, each value as a string."""
        values = {k: str(v) for k, v in params.items()}
        retry_locked(lambda: mlflow.log_params(values))

    def log_dataset(self, record: DatasetRecord, context: str) -> None:
        """Log ``record`` as the run's MLflow dataset input in ``context`` ('training',
        'validation', 'test'), tagged with its version: the UI's Dataset column."""
        dataset = _ProfiledDataset(record)
        for attempt in range(5):
            try:
                retry_locked(
                    lambda: mlflow.log_input(
                        dataset, context=context, tags={"version": record.version}
                    )
                )
                return
            except mlflow.exceptions.MlflowException as exc:
                # MLflow looks the dataset up, then inserts it: runs of one experiment
                # starting together can both insert it. Again, the lookup finds it.
                duplicate = any(m in str(exc).lower() for m in _DUPLICATE_ROW)
                if not duplicate or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set ``tags`` on the run, each value as a string."""
        retry_locked(lambda: mlflow.set_tags({k: str(v) for k, v in tags.items()}))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` (0 if None) in one batch whose timestamp is fixed
        before the first try, so that a retried write the store had already taken adds
        nothing (MLflow keeps one point per key, step, timestamp and value)."""
        timestamp = int(time.time() * 1000)
        points = [Metric(k, float(v), timestamp, step or 0) for k, v in metrics.items()]
        retry_locked(lambda: self.client.log_batch(self.run_id, metrics=points))

    def log_epoch(
        self, epoch: int, metrics: Mapping[str, float], checkpoints: Mapping[str, Path]
    ) -> None:
        """Upload the epoch's checkpoints, then its metrics at step ``epoch``: a run
        killed in between lacks the metrics, which :meth:`backfill_history` restores."""
        for path in checkpoints.values():
            self.log_checkpoint(path)
        self.log_metrics(metrics, step=epoch)

    def log_checkpoint(self, path: Path) -> None:
        """Upload a checkpoint file as ``checkpoints/<its name>``."""
        retry_locked(lambda: mlflow.log_artifact(str(path), "checkpoints"))

    def backfill_history(self, history: Mapping[str, list[float]]) -> int:
        """Log the epochs of ``history`` (epoch i+1 = index i) that the run lacks; returns
        how many values were added. Keeps a resumed run's history continuous."""
        logged = metric_history(self.run_id, self.client)
        added = 0
        for key, values in history.items():
            for index, value in enumerate(values):
                if index + 1 not in logged.get(key, {}):
                    self.log_metrics({key: value}, step=index + 1)
                    added += 1
        return added

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib ``figure`` as ``figures/<name>``."""
        retry_locked(lambda: mlflow.log_figure(figure, f"figures/{name}"))

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        """Log ``data`` as the JSON or YAML artifact ``name``."""
        retry_locked(lambda: mlflow.log_dict(dict(data), name))

    def log_arrays(self, arrays: Mapping[str, np.ndarray], name: str) -> None:
        """Log named arrays as one ``.npz`` artifact ``name`` (read back with
        ``np.load(..., allow_pickle=False)``)."""
        directory, file_name = os.path.split(name)
        with tempfile.TemporaryDirectory(prefix="chordrec-arrays-") as tmp:
            path = Path(tmp) / file_name
            np.savez_compressed(path, **arrays)
            retry_locked(lambda: mlflow.log_artifact(str(path), directory or None))

    def log_model(self, model: Any, input_example: np.ndarray) -> str:
        """Log the torch model (``mlflow.pytorch``) with an input example (batch, ...);
        returns its URI. The model takes any batch size: MLflow's pt2 format exports through
        torch.export, which would fix a batch of 1, so such an example is repeated.

        The logged model is tagged with a :func:`~chordrec.tracking.store.request_tag`:
        a try that fails after the server created it is finished on that logged model
        (or found finished), so the run never holds a second one."""
        if len(input_example) == 1:
            input_example = np.repeat(input_example, 2, axis=0)
        request = request_tag()
        unfinished: list[str] = []  # the logged model an earlier try created, not READY

        def log() -> str:
            return mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=input_example,
                pip_requirements=[
                    f"torch=={version('torch').split('+')[0]}",
                    f"chordrec=={chordrec.__version__}",
                ],
                tags=request,
                model_id=unfinished[-1] if unfinished else None,
            ).model_uri

        def logged() -> str | None:
            found = self.client.search_logged_models(
                [self.experiment_id], filter_string=request_filter(request), max_results=1
            )
            if not found:
                return None
            if found[0].status == LoggedModelStatus.READY:
                return found[0].model_uri
            unfinished.append(found[0].model_id)
            return None

        return retry_locked(log, landed=logged)


def _resume_command(run_id: str, uri: str) -> str:
    """The overrides that resume ``run_id`` on ``uri``: a URI that holds a password is
    not repeated (it came from the environment, which the user keeps set)."""
    if holds_password(uri):
        return f"resume={run_id} (with the same MLFLOW_TRACKING_URI and password environment)"
    return f"resume={run_id} tracking.uri={uri}"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """``exc``'s type and the first line of its message, at most ``limit`` characters."""
    line = next((x for x in str(exc).splitlines() if x.strip()), "")
    return f"{exc.__class__.__name__}: {line}"[:limit]


def process_tags() -> dict[str, str]:
    """Tags naming the process that logs a run (host, pid, start time), which
    :func:`check_resumable` reads to tell a live run from one whose process died."""
    return {
        "process_host": socket.gethostname(),
        "process_pid": str(os.getpid()),
        "process_started": str(psutil.Process().create_time()),
    }


def check_resumable(run_id: str) -> None:
    """Raise :class:`TrackingError` unless run ``run_id`` may be resumed: not FINISHED
    (it has its final metrics and model), and not RUNNING in a process that is alive.
    A RUNNING run whose process died (SIGKILL, a lost machine) is what resuming is for;
    one last logged from another host cannot be checked from here and is refused."""
    run = get_run(run_id)
    status, tags = run.info.status, run.data.tags
    if status == RunStatus.to_string(RunStatus.FINISHED):
        raise TrackingError(
            f"run {run_id} is FINISHED: resuming would log a second model; start a new run "
            f"(init_from={run_id} starts one from its best weights)"
        )
    if status != RunStatus.to_string(RunStatus.RUNNING):
        return  # KILLED (Ctrl-C, SIGTERM) or FAILED: its process has ended
    host, pid, started = (tags.get(k) for k in ("process_host", "process_pid", "process_started"))
    if host is None or pid is None or started is None:
        return  # logged before runs named their process: nothing to check
    if host != socket.gethostname():
        raise TrackingError(
            f"run {run_id} is RUNNING in process {pid} on host {host}, which cannot be checked "
            f"from {socket.gethostname()}; resume it on {host}, or once that process is gone"
        )
    if _process_alive(int(pid), float(started)):
        raise TrackingError(f"run {run_id} is still RUNNING in process {pid} on this host")


def _process_alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` exists and is the one created at ``started`` (not a later
    process that reuses its number)."""
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - started) < 0.01
        return same and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
