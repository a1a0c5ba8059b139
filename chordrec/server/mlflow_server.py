"""The MLflow tracking server a lab shares (``chordrec server``) and the MLflow UI over a
local store (``chordrec ui``), each run as a child process that stops with chordrec.

A server that other machines reach (a host other than loopback) needs MLflow's basic-auth
app (``auth_dir``); a database password is never taken from the command line. Both are
refused, naming the option, before anything starts (:func:`check_server_access`).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
from pathlib import Path

from chordrec import tracking
from chordrec.constants import CHAMPION, REGISTERED_MODEL
from chordrec.errors import ConfigError
from chordrec.extras import require_extra
from chordrec.server.postgres import LocalPostgres


def run_ui(store: Path, host: str, port: int, experiment: str) -> int:
    """Serve the MLflow UI over the local ``store`` on ``host:port`` until Ctrl-C,
    printing its address and that of ``experiment``'s runs; returns the exit status."""
    command = tracking.ui_command(store, host, port)
    base = f"http://{host}:{port}"
    tracking.configure(store, tracking.store_uri(store))  # the store it serves
    experiment_id = tracking.find_experiment_id(experiment)
    print(f"MLflow UI over {Path(store).resolve()} at {base} (Ctrl-C stops it)")
    if experiment_id is not None:
        print(
            f"training runs of experiment {experiment}: {tracking.experiment_url(base, experiment_id)}"
        )
    return serve(command)


def run_tracking_server(
    *,
    store: Path,
    postgres_dir: Path | None,
    postgres_port: int,
    backend_store_uri: str | None,
    artifacts_dir: Path,
    host: str,
    port: int,
    workers: int,
    auth_dir: Path | None,
) -> int:
    """Run the tracking server until Ctrl-C or SIGTERM, then stop the PostgreSQL cluster
    it started in ``postgres_dir`` (if any); returns the exit status (130 when stopped).

    Its runs go to the cluster in ``postgres_dir``, else ``backend_store_uri``, else
    ``$MLFLOW_BACKEND_STORE_URI``, else the local SQLite ``store``; its artifacts to
    ``artifacts_dir``, served through it."""
    check_server_access(host, auth_dir, backend_store_uri)
    check_server_extra(postgres_dir, backend_store_uri, auth_dir)
    database = None
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # stop what started
    try:
        auth = None if auth_dir is None else tracking.prepare_auth(auth_dir)
        if postgres_dir is not None:
            cluster = LocalPostgres(postgres_dir, postgres_port)
            cluster.open()  # refuses a cluster that runs already, and leaves it running
            database = cluster  # started here: stopped with this server
            backend = database.url()
        else:
            backend = (
                backend_store_uri
                or os.environ.get("MLFLOW_BACKEND_STORE_URI")
                or tracking.store_uri(store)
            )
        if not backend.startswith("sqlite:"):
            tracking.check_database(backend)  # one line now, not minutes of retries
        command, env = tracking.tracking_server_command(
            backend, artifacts_dir, host, port, workers, auth
        )
        url = f"http://{host}:{port}"
        signing_in = (
            ""
            if auth is None
            else f"; every request needs a user and password (admin's: {auth.password_file}; "
            "clients set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
        )
        print(
            f"MLflow tracking server on {url} over {tracking.redact(backend)}, artifacts in "
            f"{Path(artifacts_dir).resolve()} (served through it); runs reach it with "
            f"tracking.uri={url}{signing_in}; Ctrl-C stops it",
            flush=True,
        )
        return serve(command, env)
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if database is not None:
            database.stop()


def check_server_access(host: str, auth_dir: Path | None, backend_store_uri: str | None) -> None:
    """Refuse, before anything starts, a server that others reach without signing in
    and a database password on the command line (which ``ps`` shows every user)."""
    if auth_dir is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host}: every machine that reaches it could read, change and "
            "delete runs and models, and replace the model chordrec transcribe loads "
            f"(models:/{REGISTERED_MODEL}@{CHAMPION}); add --auth DIR (MLflow's basic-auth "
            "app: every request needs a user and password, the admin's generated into "
            "DIR/admin-password)"
        )
    if backend_store_uri is not None and tracking.holds_password(backend_store_uri):
        raise ConfigError(
            f"--backend-store-uri holds a password ({tracking.redact(backend_store_uri)}): "
            "every user of this machine sees command lines (ps); give the URL in "
            "MLFLOW_BACKEND_STORE_URI instead, or the password in PGPASSWORD or ~/.pgpass"
        )


def check_server_extra(
    postgres_dir: Path | None, backend_store_uri: str | None, auth_dir: Path | None
) -> None:
    """Name the ``[server]`` extra, before anything starts, when this server needs a
    part of it that is not installed: psycopg for PostgreSQL, Flask-WTF for ``--auth``."""
    backend = backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI") or ""
    if postgres_dir is not None or backend.startswith(("postgresql", "postgres:")):
        require_extra("server", "chordrec server on PostgreSQL", ("psycopg",))
    if auth_dir is not None:
        require_extra("server", "chordrec server --auth", ("flask_wtf",))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may stand for any interface


def serve(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a server until it exits; Ctrl-C or SIGTERM stops it with us (no orphan)."""
    server = subprocess.Popen(command, env={**os.environ, **(env or {})})
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
