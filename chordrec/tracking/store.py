"""The tracking store: where MLflow writes, and writing to it safely from many processes.

By default a SQLite database ``<store>/mlflow.db`` with artifacts under
``<store>/artifacts``, both absolute paths so that every process of a multirun logs to
the same store. ``MLFLOW_TRACKING_URI`` (or an explicit URI) points chordrec at any
other store or a tracking server instead.
"""

from __future__ import annotations

import fcntl
import http.client
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import mlflow
import sqlalchemy
from mlflow.tracking import MlflowClient

from chordrec.constants import STORE_DIR
from chordrec.errors import ConfigError, UserError

T = TypeVar("T")


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached or holds no such run."""


def store_uri(store_dir: str | Path) -> str:
    """The default tracking URI: SQLite database in ``store_dir`` (absolute path)."""
    path = Path(store_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


class ServerUnavailable(TrackingError):
    """The tracking server stopped answering and did not come back in time."""


SERVER_WAIT_S = 120.0
"""How long a client waits for a tracking server that stops answering (MLflow's own
retries, with backoff) before it gives up: the default of ``tracking.server_wait_s``."""


def configure(
    store_dir: str | Path = STORE_DIR,
    tracking_uri: str | None = None,
    server_wait_s: float = SERVER_WAIT_S,
) -> str:
    """Point MLflow at ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite
    store in ``store_dir``. Checks that a server or database answers; returns the URI
    used. A request to a server that stops answering (a restart) is retried by MLflow
    for about ``server_wait_s`` seconds (:func:`bound_server_wait`)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or store_uri(store_dir)
    # MLflow writes "View run ... at: <url>" to stdout when a run ends on a server, into
    # the output of commands such as `chordrec table --format csv`; chordrec prints its
    # own links.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if uri.startswith(("http://", "https://")):
        check_server(uri)
        bound_server_wait(server_wait_s)
    global _server_wait_s
    _server_wait_s = server_wait_s
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        _create_sqlite_store(uri)
    elif "://" in uri and not uri.startswith(("http://", "https://", "file://")):
        check_database(uri)
    return uri


def bound_server_wait(seconds: float) -> None:
    """Make MLflow retry a request to a tracking server that does not answer for about
    ``seconds`` in all (at least 1 s): retries after 1, 2, 4... s (backoff factor 1, no
    jitter), each request waiting at most ``seconds``. Set through MLflow's environment
    variables, read at every request."""
    if not seconds > 0:
        raise ConfigError(f"tracking.server_wait_s must be > 0 seconds, got {seconds!r}")
    retries = max(1, math.ceil(math.log2(seconds + 1)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(seconds)))


def server_answers(uri: str) -> bool:
    """Whether the tracking server at ``uri`` answers /health now."""
    try:
        check_server(uri, timeout=5.0)
    except TrackingError:
        return False
    return True


def check_database(uri: str) -> None:
    """Raise :class:`TrackingError` naming the store (password hidden) and the
    database's own one-line reason unless the SQL store at ``uri`` answers a query
    (wrong password, wrong port, no such database...)."""
    connect_args = {"connect_timeout": 10} if uri.startswith("postgresql") else {}
    try:  # SQLAlchemy directly: MLflow would retry a refused connection for minutes
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # the driver's errors, wrapped by SQLAlchemy
        reason = next((line for line in str(exc).splitlines() if line.strip()), repr(exc))
        raise TrackingError(f"tracking store {redact(uri)} cannot be used: {reason[:300]}") from exc


def mlflow_client(uri: str) -> MlflowClient:
    """A plain MLflow client of the store at ``uri``: for code that measures MLflow
    itself (``chordrec.bench.tracking``), not for logging runs."""
    return MlflowClient(uri)


def current_uri() -> str:
    """The tracking URI MLflow writes to now (see :func:`configure`)."""
    return mlflow.get_tracking_uri()


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
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unreachable or not an MLflow server "
            f"({exc}); start it, or name no server (MLFLOW_TRACKING_URI, --tracking-uri, "
            "tracking.uri) to use the local store"
        ) from exc


_SERVER_GONE = (
    "connection refused",
    "connection reset",
    "connection aborted",
    "connection broken",  # a response cut off mid-way (urllib3: IncompleteRead)
    "remote end closed",
    "max retries exceeded",
    "remotedisconnected",
    "temporarily_unavailable",
    "server closed the connection",
    "bad gateway",
    "service unavailable",
)
"""Lower-case fragments of the errors of a tracking server (or its database) that is
restarting or gone, as MLflow's client reports them."""

_server_wait_s = SERVER_WAIT_S


def retry_locked(call: Callable[[], T], attempts: int = 8) -> T:
    """Run ``call``, retrying with backoff while SQLite reports the database locked
    (several processes of a multirun writing at once), or while a tracking server does
    not answer (a restart of it or of its database), for up to the server wait that
    :func:`configure` set. The last such error is raised when the tries or the wait run
    out, any other error at once. ``call`` must be safe to repeat (the same params,
    tags, artifacts, or metrics with their timestamps fixed).

    MLflow's SQLite store itself waits for a lock (``PRAGMA busy_timeout``: 20 s in its
    sessions, Python's sqlite3 default of 5 s while it creates the tables) before it
    reports it, so only a lock held longer than that is retried here. MLflow's client
    retries a refused connection itself, but not a request cut off mid-way."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    deadline = None
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:  # MlflowException wraps SQLAlchemy's and requests' errors
            message = str(exc).lower()
            # SQLite says "database is locked" (or "database table is locked"); a bare
            # "locked" would also match other errors, e.g. "blocked"
            if "is locked" in message and attempt < attempts - 1:
                time.sleep(0.2 * 2**attempt)
                attempt += 1
                continue
            if not any(fragment in message for fragment in _SERVER_GONE):
                raise
            deadline = deadline or time.monotonic() + _server_wait_s
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""The experiment tag that marks a model-training experiment: MLflow 3's UI then opens
it on its training runs, not on the GenAI overview of traces."""


def ensure_experiment(name: str, store_dir: str | Path | None = None) -> str:
    """Id of experiment ``name``, created (with artifacts under the store) if missing;
    either way marked as a model-training experiment (:data:`EXPERIMENT_KIND`)."""
    client = MlflowClient()
    found = retry_locked(lambda: client.get_experiment_by_name(name))
    if found is not None:
        for key, value in EXPERIMENT_KIND.items():
            if found.tags.get(key) != value:
                retry_locked(
                    lambda k=key, v=value: client.set_experiment_tag(found.experiment_id, k, v)
                )
        return found.experiment_id
    location = None
    if store_dir is not None and mlflow.get_tracking_uri().startswith("sqlite:"):
        location = artifact_root(store_dir)
    try:
        return retry_locked(
            lambda: client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        )
    except mlflow.exceptions.MlflowException:
        # another process of the same multirun created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def ui_command(store_dir: str | Path, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line over the default store, with one web worker (it
    serves one user on this machine)."""
    store = Path(store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", store_uri(store),
        "--default-artifact-root", artifact_root(store),
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def tracking_server_command(
    backend_uri: str, artifacts_dir: str | Path, host: str, port: int, workers: int = 2
) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line, and the environment it adds, for a tracking
    server on ``host``:``port`` over the SQLAlchemy store ``backend_uri`` that serves the
    artifacts itself (``--serve-artifacts``) from ``artifacts_dir``: clients upload and
    download through the server and need no shared file system. ``backend_uri`` may hold
    a password, so it goes in the environment (``MLFLOW_BACKEND_STORE_URI``), not on the
    command line that ``ps`` shows. MLflow's job runner (GenAI jobs, which chordrec does
    not use: a process and five queue workers more) stays off unless
    ``$MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise."""
    artifacts = Path(artifacts_dir).expanduser().resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    jobs = os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return command, {
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": jobs,
    }


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***``: for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
