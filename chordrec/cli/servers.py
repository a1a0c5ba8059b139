"""``chordrec ui`` and ``chordrec server``: the MLflow UI over a local store and the
tracking server a lab shares (both run by :mod:`chordrec.server.mlflow_server`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chordrec.cli.options import add_tracking_options


def _ui(args: argparse.Namespace) -> int:
    from chordrec.server.mlflow_server import run_ui

    return run_ui(args.store, args.host, args.port, args.experiment)


def _server(args: argparse.Namespace) -> int:
    from chordrec.server.mlflow_server import run_tracking_server

    return run_tracking_server(
        store=args.store,
        postgres_dir=args.postgres_dir,
        postgres_port=args.postgres_port,
        backend_store_uri=args.backend_store_uri,
        artifacts_dir=args.artifacts_dir,
        host=args.host,
        port=args.port,
        workers=args.workers,
        auth_dir=args.auth,
    )


def add_ui_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec ui`` to ``commands``."""
    ui = commands.add_parser("ui", help="open the MLflow UI over the tracking store")
    add_tracking_options(ui, tracking_uri=False, experiment=True)
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default: %(default)s, this machine only)",
    )
    ui.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    ui.set_defaults(func=_ui)


def add_server_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec server`` to ``commands``."""
    server = commands.add_parser(
        "server",
        help="run a shared MLflow tracking server (PostgreSQL, artifacts served by it)",
        description=(
            "Run the MLflow tracking server a lab shares: runs and models in PostgreSQL "
            "(--postgres-dir DIR sets up and runs a local cluster in DIR, on 127.0.0.1 with "
            "a generated password stored 0600; or --backend-store-uri names any SQLAlchemy "
            "store; default: the local SQLite store), artifacts stored in --artifacts-dir "
            "and served through the server, so clients need no shared file system. Runs "
            "reach it with tracking.uri=http://HOST:PORT; its UI is at the same address. "
            "A server other machines reach (--host other than 127.0.0.1) needs --auth. "
            "Ctrl-C stops the server and the PostgreSQL it started."
        ),
    )
    add_tracking_options(server, tracking_uri=False)
    source = server.add_mutually_exclusive_group()
    source.add_argument(
        "--postgres-dir",
        type=Path,
        metavar="DIR",
        help=(
            "a local PostgreSQL cluster in DIR: a new or empty directory the first time "
            "(chordrec changes no other directory's mode or owner), one server at a time"
        ),
    )
    source.add_argument(
        "--backend-store-uri",
        metavar="URI",
        help=(
            "any SQLAlchemy store without a password, e.g. postgresql://user@host:5432/mlflow "
            "with the password in PGPASSWORD or ~/.pgpass (a URL with its password goes in "
            "MLFLOW_BACKEND_STORE_URI, which is read when neither option is given)"
        ),
    )
    server.add_argument(
        "--postgres-port",
        type=int,
        default=5432,
        help="port of the local cluster (default: %(default)s)",
    )
    server.add_argument(
        "--artifacts-dir",
        type=Path,
        default=Path("mlartifacts"),
        help="where the server keeps artifacts (default: %(default)s)",
    )
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help=(
            "interface to bind (default: %(default)s, this machine only); any other, e.g. "
            "0.0.0.0 for a lab, needs --auth"
        ),
    )
    server.add_argument(
        "--auth",
        type=Path,
        metavar="DIR",
        help=(
            "MLflow's basic-auth app: every request needs a user and password; the users "
            "and the admin password (generated the first time, DIR/admin-password, mode "
            "0600) are kept in DIR (a new or empty directory the first time); clients set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        ),
    )
    server.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    server.add_argument("--workers", type=int, default=2, help="web workers (default: %(default)s)")
    server.set_defaults(func=_server)
