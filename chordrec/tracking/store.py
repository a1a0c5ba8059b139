"""The tracking store: where MLflow writes, and writing to it safely from many processes.

By default a SQLite database ``<store>/mlflow.db`` with artifacts under
``<store>/artifacts``, both absolute paths so that every process of a multirun logs to
the same store. ``MLFLOW_TRACKING_URI`` (or an explicit URI) points chordrec at any
other store or a tracking server instead.
"""

from __future__ import annotations

import http.client
import math
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import mlflow
import sqlalchemy
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from chordrec.constants import STORE_DIR, chosen_tracking_uri, store_database_uri
from chordrec.errors import ConfigError, UserError
from chordrec.extras import require_extra
from chordrec.file_locks import exclusive_lock
from chordrec.passwords import redact
from chordrec.tracking.auth import AUTH_APP, AuthSetup, check_access

T = TypeVar("T")


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached or holds no such run."""


def store_uri(store_dir: str | Path) -> str:
    """The default tracking URI: SQLite database in ``store_dir`` (absolute path), the
    directory made when missing."""
    Path(store_dir).expanduser().resolve().mkdir(parents=True, exist_ok=True)
    return store_database_uri(store_dir)


class ServerUnavailable(TrackingError):
    """The tracking server stopped answering and did not come back in time."""


SERVER_WAIT_S = 120.0
"""How long one call to the tracking store may wait, in all, for a server (or database)
that stops answering before it gives up: the default of ``tracking.server_wait_s``."""


def configure(
    store_dir: str | Path = STORE_DIR,
    tracking_uri: str | None = None,
    server_wait_s: float = SERVER_WAIT_S,
) -> str:
    """Point MLflow at ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite
    store in ``store_dir``. Checks that a server or database answers; returns the URI
    used. Each call through :func:`retry_locked` waits at most about ``server_wait_s``
    seconds in all for a server that stops answering (a restart, a hang), then raises
    :class:`ServerUnavailable`."""
    if not server_wait_s > 0:
        raise ConfigError(f"tracking.server_wait_s must be > 0 seconds, got {server_wait_s!r}")
    uri = chosen_tracking_uri(store_dir, tracking_uri)
    # MLflow writes "View run ... at: <url>" to stdout when a run ends on a server, into
    # the output of commands such as `chordrec table --format csv`; chordrec prints its
    # own links.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    global _server_wait_s
    _server_wait_s = server_wait_s
    if uri.startswith(("http://", "https://")):
        check_server(uri, timeout=min(5.0, server_wait_s))
        bound_server_wait(server_wait_s)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        _create_sqlite_store(uri)
    elif "://" in uri and not uri.startswith(("http://", "https://", "file://")):
        check_database(uri)
    return uri


def bound_server_wait(seconds: float) -> None:
    """Make each HTTP request of MLflow's client to a tracking server try once and wait
    at most ``seconds`` (rounded up to whole seconds, at least 1) for the server to
    connect and answer, through MLflow's environment variables (read at every request):
    :func:`retry_locked` does the retrying, under one deadline per call and only where a
    repeat is safe. MLflow's own retries would repeat a POST whose reply was lost (a
    second run or model version) and multiply the wait."""
    if not seconds > 0:
        raise ConfigError(f"tracking.server_wait_s must be > 0 seconds, got {seconds!r}")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = _whole_seconds(seconds)


def _whole_seconds(seconds: float) -> str:
    """``seconds`` as MLflow's request timeout reads it: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def server_answers(uri: str) -> bool:
    """Whether the tracking server at ``uri`` answers /health now (waiting at most 5 s,
    or ``tracking.server_wait_s`` if shorter)."""
    try:
        check_server(uri, timeout=min(5.0, _server_wait_s))
    except TrackingError:
        return False
    return True


def check_database(uri: str) -> None:
    """Raise :class:`TrackingError` naming the store (password hidden) and the
    database's own one-line reason unless the SQL store at ``uri`` answers a query
    (wrong password, wrong port, no such database...)."""
    if uri.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        require_extra("server", f"the PostgreSQL store {redact(uri)}", ("psycopg",))
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
    # mode less the umask: whoever may write the store may take its lock
    with exclusive_lock(database.parent / ".mlflow-db.lock", mode=0o666):
        retry_locked(lambda: MlflowClient(uri).search_experiments(max_results=1))


def artifact_root(store_dir: str | Path) -> str:
    """Artifact location for new experiments in the default store."""
    path = Path(store_dir).expanduser().resolve() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingError` unless the MLflow server at ``uri`` answers /health,
    and :class:`~chordrec.tracking.auth.AccessDenied` if it refuses this client's user
    (:func:`~chordrec.tracking.auth.check_access`)."""
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
    check_access(uri, redact(uri), timeout)


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
    "timed out",  # a server that accepts and does not answer within the request timeout
)
"""Lower-case fragments of the errors of a tracking server (or its database) that is
restarting, hanging or gone, as MLflow's client reports them."""

_server_wait_s = SERVER_WAIT_S


def retry_locked(
    call: Callable[[], T], attempts: int = 8, landed: Callable[[], T | None] | None = None
) -> T:
    """Run ``call``, retrying with backoff while SQLite reports the database locked
    (several processes of a multirun writing at once), or while a tracking server (or
    its database) does not answer: refused, cut off, or silent for the request timeout.

    The lock is retried ``attempts`` times, then its error raised. A server that does
    not answer is retried until ``tracking.server_wait_s`` (:func:`configure`) has passed
    since the call began, then :class:`ServerUnavailable` names the store and the
    setting. Each request to a server waits at most the time left (MLflow's request
    timeout, set for the call), so a server that accepts and never answers ends the call
    within about the wait. Any other error is raised at once.

    A call that is safe to repeat (a read; params, tags, artifacts, metrics with their
    timestamps fixed) needs nothing more. A write that is not (creating a run, a logged
    model, a model version) names in ``landed`` a read that finds what an earlier try
    made (by a :func:`request_tag`): after a failure that may have come after the server
    committed, ``landed`` is asked first, and what it finds (not None) is returned
    instead of trying ``call`` again.

    MLflow's SQLite store itself waits for a lock (``PRAGMA busy_timeout``: 20 s in its
    sessions, Python's sqlite3 default of 5 s while it creates the tables) before it
    reports it, so only a lock held longer than that is retried here."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    deadline = time.monotonic() + _server_wait_s
    attempt = retry = 0
    unsure = False  # a try failed after the server may have done it
    while True:
        try:
            with _request_timeout(deadline - time.monotonic()):
                if unsure and landed is not None and (found := landed()) is not None:
                    return found
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
            unsure = True
            left = deadline - time.monotonic()
            if left <= 0:
                uri = mlflow.get_tracking_uri()
                what = "MLflow tracking server" if uri.startswith("http") else "tracking store"
                line = next((x for x in str(exc).splitlines() if x.strip()), "")[:300]
                raise ServerUnavailable(
                    f"{what} {redact(uri)} did not answer within tracking.server_wait_s = "
                    f"{_server_wait_s:g} s ({line})"
                ) from exc
            time.sleep(min(0.25 * 2**retry, 2.0, left))
            retry += 1


@contextmanager
def _request_timeout(seconds: float) -> Iterator[None]:
    """While in the block, each HTTP request of MLflow's client to the tracking server
    waits at most ``seconds`` (whole seconds, at least 1); afterwards the whole
    ``tracking.server_wait_s`` again (:func:`bound_server_wait`)."""
    if not current_uri().startswith(("http://", "https://")):
        yield
        return
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = _whole_seconds(seconds)
    try:
        yield
    finally:
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = _whole_seconds(_server_wait_s)


REQUEST_TAG = "chordrec.request_id"
"""The tag by which a run, logged model or model version names the create call that
made it (a random id the client chose), so that a retry after a lost reply finds it
(:func:`retry_locked`'s ``landed``) instead of making a second."""


def request_tag() -> dict[str, str]:
    """``{REQUEST_TAG: <a new random id>}``: the tag of one create call."""
    return {REQUEST_TAG: uuid.uuid4().hex}


def request_filter(request: Mapping[str, str]) -> str:
    """The MLflow search filter that finds what was made with tag ``request``."""
    return f"tags.`{REQUEST_TAG}` = '{request[REQUEST_TAG]}'"


def create_run(experiment_id: str, run_name: str | None, tags: Mapping[str, str]) -> Run:
    """Create a RUNNING run (not made the active run) in experiment ``experiment_id``,
    tagged ``tags`` and a :func:`request_tag`: a reply lost after the server made it is
    answered by finding that run, never by a second one."""
    client = MlflowClient()
    request = request_tag()
    return retry_locked(
        lambda: client.create_run(experiment_id, run_name=run_name, tags={**tags, **request}),
        landed=lambda: created_run(experiment_id, request),
    )


def created_run(experiment_id: str, request: Mapping[str, str]) -> Run | None:
    """The run of experiment ``experiment_id`` that was created with tag ``request``
    (:func:`request_tag`), or None."""
    found = MlflowClient().search_runs(
        [experiment_id], request_filter(request), run_view_type=ViewType.ALL, max_results=1
    )
    return found[0] if found else None


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""The experiment tag that marks a model-training experiment. MLflow 3.17's UI does not
read it (it opens the GenAI overview unless the link asks for the training view): the
links chordrec prints carry that view (:data:`chordrec.tracking.ui.TRAINING_VIEW`)."""


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
        # another process of the same multirun created it first (or this one did, and
        # the reply was lost)
        found = retry_locked(lambda: client.get_experiment_by_name(name))
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
    backend_uri: str,
    artifacts_dir: str | Path,
    host: str,
    port: int,
    workers: int = 2,
    auth: AuthSetup | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line, and the environment it adds, for a tracking
    server on ``host``:``port`` over the SQLAlchemy store ``backend_uri`` that serves the
    artifacts itself (``--serve-artifacts``) from ``artifacts_dir``: clients upload and
    download through the server and need no shared file system. ``backend_uri`` may hold
    a password, so it goes in the environment (``MLFLOW_BACKEND_STORE_URI``), not on the
    command line that ``ps`` shows. MLflow's job runner (GenAI jobs, which chordrec does
    not use: a process and five queue workers more) stays off unless
    ``$MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise. With ``auth``
    (:func:`chordrec.tracking.auth.prepare_auth`), MLflow's basic-auth app asks every
    request for a user and password."""
    artifacts = Path(artifacts_dir).expanduser().resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    if auth is not None:
        command += ["--app-name", AUTH_APP]
    jobs = os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return command, {
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": jobs,
        **(auth.server_env() if auth is not None else {}),
    }
