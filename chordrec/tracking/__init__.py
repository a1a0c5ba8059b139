"""Everything chordrec says to MLflow goes through this module.

Store: by default a SQLite database ``<store>/mlflow.db`` with artifacts under
``<store>/artifacts``, both absolute paths so that every process of a multirun
logs to the same store. ``MLFLOW_TRACKING_URI`` (or an explicit URI) points
chordrec at any other store or a tracking server instead.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
import psutil
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

import chordrec
from chordrec.errors import ConfigError, UserError

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "chordrec"
T = TypeVar("T")


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached or holds no such run."""


def store_uri(store_dir: str | Path) -> str:
    """The default tracking URI: SQLite database in ``store_dir`` (absolute path)."""
    path = Path(store_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def configure(store_dir: str | Path = "mlruns", tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite
    store in ``store_dir``. Checks that a server URI answers; returns the URI used."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or store_uri(store_dir)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        _create_sqlite_store(uri)
    return uri


def _create_sqlite_store(uri: str) -> None:
    """Create (or migrate) the SQLite store's tables under an exclusive file lock, so the
    processes of a parallel multirun do not all try to create them at once."""
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.parent / ".mlflow-db.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            retry_locked(lambda: MlflowClient(uri).search_experiments(max_results=1))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def artifact_root(store_dir: str | Path) -> str:
    """Artifact location for new experiments in the default store."""
    path = Path(store_dir).expanduser().resolve() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingError` unless the MLflow server at ``uri`` answers /health."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it, or name no "
            "server (MLFLOW_TRACKING_URI, --tracking-uri, tracking.uri) to use the local store"
        ) from exc


def retry_locked(call: Callable[[], T], attempts: int = 8) -> T:
    """Run ``call``, retrying with backoff while SQLite reports the database locked
    (several processes of a multirun writing at once); the last such error is raised
    after ``attempts`` tries, any other error at once.

    MLflow's SQLite store itself waits for a lock (``PRAGMA busy_timeout``: 20 s in its
    sessions, Python's sqlite3 default of 5 s while it creates the tables) before it
    reports it, so only a lock held longer than that is retried here."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # MlflowException wraps SQLAlchemy's OperationalError
            # SQLite says "database is locked" (or "database table is locked"); a bare
            # "locked" would also match other errors, e.g. "blocked"
            if "is locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def ensure_experiment(name: str, store_dir: str | Path | None = None) -> str:
    """Id of experiment ``name``, created (with artifacts under the store) if missing."""
    client = MlflowClient()
    found = retry_locked(lambda: client.get_experiment_by_name(name))
    if found is not None:
        return found.experiment_id
    location = None
    if store_dir is not None and mlflow.get_tracking_uri().startswith("sqlite:"):
        location = artifact_root(store_dir)
    try:
        return retry_locked(lambda: client.create_experiment(name, artifact_location=location))
    except mlflow.exceptions.MlflowException:
        # another process of the same multirun created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


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


def base_tags(device: str) -> dict[str, str]:
    """Tags every run carries: chordrec version, host, device, git state."""
    return {
        "chordrec_version": chordrec.__version__,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
        **git_state(Path(__file__).resolve().parents[1]),
    }


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{'a.b.c': 'value'}`` with values as strings (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


class _Interrupted(BaseException):
    """Raised in place of SIGTERM so the run is closed as KILLED."""


class RunTracker:
    """One MLflow run: start (or reopen for resume), log, end with the right status.

    Used as a context manager; an exception ends the run FAILED, Ctrl-C or SIGTERM
    ends it KILLED, a clean exit FINISHED.
    """

    def __init__(
        self,
        experiment: str = DEFAULT_EXPERIMENT,
        store_dir: str | Path = "mlruns",
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
        self.run_id = ""
        self.client = MlflowClient()

    def __enter__(self) -> RunTracker:
        if self.system_metrics:
            mlflow.system_metrics.set_system_metrics_sampling_interval(self.interval)
            mlflow.system_metrics.set_system_metrics_samples_before_logging(1)
        if self.resume_run_id:
            run = self.get_run(self.resume_run_id)
            active = retry_locked(
                lambda: mlflow.start_run(
                    run_id=run.info.run_id, log_system_metrics=self.system_metrics
                )
            )
        else:
            experiment_id = ensure_experiment(self.experiment, self.store_dir)
            active = retry_locked(
                lambda: mlflow.start_run(
                    experiment_id=experiment_id,
                    run_name=self.run_name,
                    tags=self.tags,
                    log_system_metrics=self.system_metrics,
                )
            )
        self.run_id = active.info.run_id
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupted)
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        signal.signal(signal.SIGTERM, self._previous_sigterm)
        if kind is None:
            status = RunStatus.to_string(RunStatus.FINISHED)
        elif issubclass(kind, KeyboardInterrupt | _Interrupted):
            status = RunStatus.to_string(RunStatus.KILLED)
        else:
            status = RunStatus.to_string(RunStatus.FAILED)
            retry_locked(lambda: mlflow.set_tag("error", f"{kind.__name__}: {exc}"[:5000]))
        retry_locked(lambda: mlflow.end_run(status=status))
        if kind is _Interrupted:
            raise KeyboardInterrupt("terminated (SIGTERM)") from None
        return False

    def get_run(self, run_id: str):
        return get_run(run_id, self.client)

    @property
    def artifact_uri(self) -> str:
        return mlflow.get_artifact_uri()

    def log_config(self, config: Mapping[str, Any], yaml_text: str) -> None:
        """The resolved config: flattened as params and whole as ``config.yaml``."""
        params = flatten(config)
        items = list(params.items())
        for start in range(0, len(items), 100):
            retry_locked(lambda s=start: mlflow.log_params(dict(items[s : s + 100])))
        retry_locked(lambda: mlflow.log_text(yaml_text, "config.yaml"))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        retry_locked(lambda: mlflow.set_tags({k: str(v) for k, v in tags.items()}))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        retry_locked(lambda: mlflow.log_metrics(values, step=step))

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

    def metric_history(self, run_id: str | None = None) -> dict[str, dict[int, float]]:
        """Logged per-step values of each metric of a run: ``{metric: {step: value}}``."""
        run = self.get_run(run_id or self.run_id)
        return {
            key: {m.step: m.value for m in self.client.get_metric_history(run.info.run_id, key)}
            for key in run.data.metrics
        }

    def backfill_history(self, history: Mapping[str, list[float]]) -> int:
        """Log the epochs of ``history`` (epoch i+1 = index i) that the run lacks; returns
        how many values were added. Keeps a resumed run's history continuous."""
        logged = self.metric_history()
        added = 0
        for key, values in history.items():
            for index, value in enumerate(values):
                if index + 1 not in logged.get(key, {}):
                    self.log_metrics({key: value}, step=index + 1)
                    added += 1
        return added

    def download_checkpoint(
        self, run_id: str, name: str = "last", dest: str | Path | None = None
    ) -> Path:
        """Fetch ``checkpoints/<name>.pt`` of a run: :func:`run_checkpoint`."""
        return run_checkpoint(run_id, name, dest)

    def log_figure(self, figure: Any, name: str) -> None:
        retry_locked(lambda: mlflow.log_figure(figure, f"figures/{name}"))

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
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
        torch.export, which would fix a batch of 1, so such an example is repeated."""
        import torch

        if len(input_example) == 1:
            input_example = np.repeat(input_example, 2, axis=0)
        info = retry_locked(
            lambda: mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=input_example,
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"chordrec=={chordrec.__version__}",
                ],
            )
        )
        return info.model_uri


def _raise_interrupted(signum, frame) -> None:
    raise _Interrupted()


def server_command(store_dir: str | Path, host: str, port: int, ui_only: bool = False) -> list[str]:
    """The ``mlflow server``/``mlflow ui`` command line over the default store (the UI
    with one web worker: it serves one user on this machine)."""
    store = Path(store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui" if ui_only else "server",
        "--backend-store-uri",
        store_uri(store),
        "--default-artifact-root",
        artifact_root(store),
        "--host",
        host,
        "--port",
        str(port),
        *(["--workers", "1"] if ui_only else []),  # one user, this machine: one worker
    ]


# ------------------------------------------------- runs, checkpoints and registered models


def get_run(run_id: str, client: MlflowClient | None = None):
    """MLflow run ``run_id``; :class:`TrackingError` naming the store when it is missing."""
    client = client or MlflowClient()
    try:
        return retry_locked(lambda: client.get_run(run_id))
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}") from exc


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


def run_checkpoint(run_id: str, name: str = "best", dest: str | Path | None = None) -> Path:
    """Download ``checkpoints/<name>.pt`` of MLflow run ``run_id`` into ``dest`` (a
    temporary directory by default); :class:`TrackingError` when the run or file is missing."""
    get_run(run_id)
    dest = Path(dest or tempfile.mkdtemp(prefix="chordrec-ckpt-"))
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"checkpoints/{name}.pt", dst_path=str(dest)
        )
    except Exception as exc:  # MlflowException, OSError: the artifact is not there
        raise TrackingError(f"run {run_id} has no checkpoints/{name}.pt ({exc})") from exc
    return Path(path)


def registered_run_id(model_uri: str) -> str:
    """The source run of a registered model version: ``model_uri`` is
    ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a logged model
    ``models:/<model id>``. Raises :class:`TrackingError` when nothing matches."""
    if not model_uri.startswith("models:/"):
        raise ValueError(f"not a registry URI (models:/...): {model_uri!r}")
    ref = model_uri[len("models:/") :].strip("/")
    client = MlflowClient()
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = retry_locked(lambda: client.get_model_version_by_alias(name, alias))
        elif "/" in ref:
            name, number = ref.split("/", 1)
            version = retry_locked(lambda: client.get_model_version(name, number))
        else:
            run_id = retry_locked(lambda: client.get_logged_model(ref)).source_run_id
            if not run_id:
                raise TrackingError(f"{model_uri} was not logged by a run")
            return run_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(
            f"{model_uri}: not found in the registry at {mlflow.get_registry_uri()} ({exc}); "
            "register a run first (`chordrec register <run id> --alias champion`)"
        ) from exc
    if version.run_id:
        return version.run_id
    if version.source.startswith("models:/"):
        return registered_run_id(version.source)
    raise TrackingError(f"{model_uri}: version {version.version} names no source run")


def register_run_model(run_id: str, name: str = "chordrec", alias: str | None = None) -> str:
    """Register the model that run ``run_id`` logged (``mlflow.pytorch``, name "model")
    as a new version of registered model ``name``, optionally pointing ``alias`` at it;
    returns the version. The run must hold ``checkpoints/best.pt`` (what transcription
    loads). Raises :class:`TrackingError` naming what is missing."""
    client = MlflowClient()
    run = get_run(run_id, client)
    checkpoints = retry_locked(lambda: client.list_artifacts(run_id, "checkpoints"))
    if not any(item.path == "checkpoints/best.pt" for item in checkpoints):
        raise TrackingError(f"run {run_id} has no checkpoints/best.pt: nothing to transcribe with")
    logged = retry_locked(
        lambda: client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
        )
    )
    if not logged:
        raise TrackingError(
            f"run {run_id} logged no model named 'model' (was it trained with "
            "tracking.log_model=false?)"
        )
    version = retry_locked(lambda: mlflow.register_model(f"models:/{logged[0].model_id}", name))
    if alias:
        retry_locked(lambda: client.set_registered_model_alias(name, alias, version.version))
    return str(version.version)


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


def find_runs(experiment: str | None = None, study: str | None = None) -> list[RunRecord]:
    """Runs of experiment ``experiment`` (all experiments if None), only those tagged
    ``study=<study>`` if given, newest first. Raises :class:`TrackingError` if the
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
    query = f"tags.study = '{study}'" if study else ""
    runs = retry_locked(
        lambda: client.search_runs(
            ids, filter_string=query, order_by=["attributes.start_time DESC"], max_results=5000
        )
    )
    return [
        RunRecord(
            run_id=r.info.run_id,
            run_name=r.info.run_name or "",
            status=r.info.status,
            start_time=int(r.info.start_time or 0),
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
            tags=dict(r.data.tags),
        )
        for r in runs
    ]


def start_parent_run(
    experiment: str, name: str, tags: Mapping[str, str], store_dir: str | Path
) -> str:
    """Create a RUNNING run that other runs nest under (a study); returns its id."""
    client = MlflowClient()
    experiment_id = ensure_experiment(experiment, store_dir)
    run = retry_locked(
        lambda: client.create_run(
            experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()}
        )
    )
    return run.info.run_id


def end_parent_run(run_id: str, succeeded: bool) -> None:
    status = RunStatus.to_string(RunStatus.FINISHED if succeeded else RunStatus.FAILED)
    retry_locked(lambda: MlflowClient().set_terminated(run_id, status))


def log_text_to_run(run_id: str, text: str, name: str) -> None:
    """Write ``text`` as artifact ``name`` of run ``run_id`` (which need not be active)."""
    retry_locked(lambda: MlflowClient().log_text(run_id, text, name))


def create_run_with_text(
    experiment: str, name: str, text: str, artifact: str, tags: Mapping[str, str]
) -> str:
    """A small FINISHED run holding one text artifact (e.g. a result table); returns its id."""
    client = MlflowClient()
    found = retry_locked(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        raise TrackingError(f"no MLflow experiment {experiment!r}")
    run = retry_locked(
        lambda: client.create_run(found.experiment_id, run_name=name, tags=dict(tags))
    )
    log_text_to_run(run.info.run_id, text, artifact)
    retry_locked(lambda: client.set_terminated(run.info.run_id, "FINISHED"))
    return run.info.run_id
