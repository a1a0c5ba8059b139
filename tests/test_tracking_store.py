"""The SQLite store under real lock contention: retry_locked, the file lock that
configure takes to create the store, and backfill_history while another connection
holds the database's write lock. And retry_locked against real sockets: a server that
cuts its answers off, and one that accepts requests and never answers.

MLflow's SQLite store waits for a lock before it reports "database is locked"
(``PRAGMA busy_timeout = 20000`` in its sessions; Python's sqlite3 default of 5 s while
it creates the tables), so the tests that go through MLflow hold the lock until MLflow
has reported it once: that wait is their cost.
"""

from __future__ import annotations

import fcntl
import os
import socket
import socketserver
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

from chordrec import tracking
from chordrec.errors import ConfigError
from chordrec.tracking import store


class _HeldLock:
    """A write lock on a SQLite database, held by a second connection in its own thread."""

    def __init__(self) -> None:
        self.locked, self.asked, self.released = (threading.Event() for _ in range(3))

    def release(self) -> None:
        """Let the holder roll back, and wait until it has."""
        self.asked.set()
        assert self.released.wait(60), "the lock holder did not let go"


@contextmanager
def _write_lock(database: Path, mode: str = "IMMEDIATE") -> Iterator[_HeldLock]:
    """Hold ``BEGIN <mode>`` on ``database`` (created if missing) from another connection
    until :meth:`_HeldLock.release` or the end of the block."""
    held = _HeldLock()

    def hold() -> None:
        try:
            with closing(sqlite3.connect(database, isolation_level=None)) as db:
                db.execute(f"BEGIN {mode}")
                held.locked.set()
                held.asked.wait(300)
                db.execute("ROLLBACK")
        finally:
            held.released.set()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.locked.wait(60), f"could not lock {database}"
        yield held
    finally:
        held.release()
        holder.join()


def _table(tmp_path: Path) -> Path:
    database = tmp_path / "plain.db"
    with closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE t (x INTEGER)")
    return database


def _insert(database: Path) -> int:
    """Insert a row without waiting for a lock (timeout 0): while another connection
    holds one, SQLite raises its "database is locked" at once. Returns the row id."""
    with closing(sqlite3.connect(database, timeout=0)) as db, db:
        row = db.execute("INSERT INTO t (x) VALUES (1)").lastrowid
    assert row is not None
    return row


def _rows(database: Path) -> list[tuple[int]]:
    with closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT rowid FROM t").fetchall()


def _tables(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master")}


# ----------------------------------------------------------------------- retry_locked


def test_retry_locked_retries_a_locked_write_until_the_lock_is_released(tmp_path: Path) -> None:
    database = _table(tmp_path)
    errors: list[str] = []
    with _write_lock(database) as lock:

        def insert() -> int:
            try:
                return _insert(database)
            except sqlite3.OperationalError as exc:
                errors.append(str(exc))
                if len(errors) == 2:
                    lock.release()  # the third try finds the database free
                raise

        row = tracking.retry_locked(insert, attempts=5)
    assert errors == ["database is locked"] * 2  # two tries refused, the third landed
    assert _rows(database) == [(row,)]


def test_retry_locked_gives_up_on_a_lock_that_is_never_released(tmp_path: Path) -> None:
    database = _table(tmp_path)
    tries: list[int] = []

    def insert() -> int:
        tries.append(len(tries))
        return _insert(database)

    with _write_lock(database, "EXCLUSIVE"):
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            tracking.retry_locked(insert, attempts=3)
    assert len(tries) == 3
    assert _rows(database) == []


@pytest.mark.parametrize(
    ("fail", "error", "match"),
    [
        (lambda db: db.execute("SELECT * FROM missing"), sqlite3.OperationalError, "no such"),
        (lambda db: _raise(MlflowException("request blocked by a proxy")), MlflowException, None),
    ],
    ids=["missing table", "blocked is not locked"],
)
def test_retry_locked_raises_any_other_error_at_once(
    tmp_path: Path,
    fail: Callable[[sqlite3.Connection], Any],
    error: type[Exception],
    match: str | None,
) -> None:
    database = _table(tmp_path)
    tries: list[int] = []

    def call() -> Any:
        tries.append(len(tries))
        with closing(sqlite3.connect(database)) as db:
            return fail(db)

    with pytest.raises(error, match=match):
        tracking.retry_locked(call, attempts=3)
    assert tries == [0]


def _raise(exc: Exception) -> None:
    raise exc


def test_retry_locked_needs_an_attempt() -> None:
    tries: list[int] = []
    with pytest.raises(ValueError, match="attempts must be at least 1, got 0"):
        tracking.retry_locked(lambda: tries.append(1), attempts=0)
    assert tries == []


# ----------------------------------------------------------------- the store's file lock


def _flock_waiters(path: Path) -> int:
    """How many flock requests on ``path`` are waiting: /proc/locks lines such as
    ``2: -> FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF``."""
    inode = str(path.stat().st_ino)
    waiting = [
        line.split(" -> ", 1)[1].split()
        for line in Path("/proc/locks").read_text().splitlines()
        if " -> " in line
    ]
    return sum(1 for f in waiting if f[0] == "FLOCK" and f[4].rsplit(":", 1)[1] == inode)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_configure_creates_the_store_only_under_its_file_lock(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    store.mkdir()
    lock_file = store / ".mlflow-db.lock"
    uris: list[str] = []
    with open(lock_file, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process of a multirun creating the store
        worker = threading.Thread(
            target=lambda: uris.append(tracking.configure(store)), daemon=True
        )
        worker.start()
        deadline = time.monotonic() + 120  # a guard against hanging, not a timing check
        while worker.is_alive() and not _flock_waiters(lock_file) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _flock_waiters(lock_file) == 1, "configure did not wait for the store's lock"
        assert not (store / "mlflow.db").exists()  # nor touched the database meanwhile
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(120)
    assert uris == [f"sqlite:///{store.resolve() / 'mlflow.db'}"]
    assert {"experiments", "runs", "metrics", "alembic_version"} <= _tables(store / "mlflow.db")


@pytest.mark.slow
def test_configure_retries_creating_the_store_while_the_database_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "mlruns"
    store.mkdir()
    errors: list[str] = []
    with _write_lock(store / "mlflow.db") as lock:

        class WatchedClient(MlflowClient):
            """The real client, noting the errors of creating the store."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                try:
                    super().__init__(*args, **kwargs)
                except Exception as exc:
                    errors.append(str(exc))
                    lock.release()
                    raise

        with monkeypatch.context() as patch:
            patch.setattr("chordrec.tracking.store.MlflowClient", WatchedClient)
            tracking.configure(store)
    assert len(errors) == 1 and "database is locked" in errors[0]
    assert {"experiments", "runs", "metrics", "alembic_version"} <= _tables(store / "mlflow.db")


# ------------------------------------------------------------------- backfill_history


@pytest.mark.slow
def test_backfill_history_retries_the_write_that_found_the_store_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "mlruns"
    uri = tracking.configure(store)
    tries: list[dict[str, float]] = []
    errors: list[str] = []
    with tracking.RunTracker(store_dir=store, system_metrics=False) as tracker:
        tracker.log_metrics({"val/loss": 1.0}, step=1)  # the epoch the run has
        real_log_batch = tracker.client.log_batch
        with _write_lock(store / "mlflow.db") as lock:  # another process writing

            def log_batch(run_id: str, metrics: Any = (), **kwargs: Any) -> None:
                tries.append({m.key: m.value for m in metrics})
                try:
                    real_log_batch(run_id, metrics=metrics, **kwargs)
                except Exception as exc:
                    errors.append(str(exc))
                    lock.release()
                    raise

            with monkeypatch.context() as patch:
                patch.setattr(tracker.client, "log_batch", log_batch)
                added = tracker.backfill_history({"val/loss": [1.0, 0.5, 0.25]})
    assert added == 2
    # epoch 2 was refused once ("database is locked", after MLflow's own wait), then landed
    assert tries == [{"val/loss": 0.5}, {"val/loss": 0.5}, {"val/loss": 0.25}]
    assert len(errors) == 1 and "database is locked" in errors[0]
    logged = MlflowClient(uri).get_metric_history(tracker.run_id, "val/loss")
    assert sorted((m.step, m.value) for m in logged) == [(1, 1.0), (2, 0.5), (3, 0.25)]


def test_redact_hides_a_password_and_nothing_else() -> None:
    assert tracking.redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    for uri in ("http://127.0.0.1:5000", "sqlite:////x/mlflow.db", "postgresql://u@h/db", "0.001"):
        assert tracking.redact(uri) == uri


def test_the_server_wait_makes_mlflow_try_each_request_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow's own retries would repeat a POST whose reply was lost and multiply the
    wait: retry_locked retries instead, under one deadline."""
    for key in ("MAX_RETRIES", "TIMEOUT"):
        monkeypatch.setenv(f"MLFLOW_HTTP_REQUEST_{key}", "unset")  # restored afterwards
    store.bound_server_wait(60)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    store.bound_server_wait(0.5)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1"  # MLflow reads whole seconds
    with pytest.raises(ConfigError, match="tracking.server_wait_s"):
        store.bound_server_wait(0)


@pytest.mark.slow
def test_one_call_to_a_server_that_accepts_and_never_answers_ends_within_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that answers /health (so configure takes it), then accepts every other
    request and never answers: one logging call gives up after about
    tracking.server_wait_s, naming the server and the setting."""
    for key in ("MAX_RETRIES", "TIMEOUT"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{key}", raising=False)  # restored afterwards
    release = threading.Event()
    requests: list[bytes] = []

    class Silent(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request_line = self.rfile.readline()
            requests.append(request_line)
            if request_line.startswith(b"GET /health "):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
            else:
                release.wait(60)  # accepted, read, never answered

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Silent) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        wait = 2.0
        try:
            tracking.configure(tracking_uri=url, server_wait_s=wait)
            started = time.monotonic()
            with pytest.raises(tracking.ServerUnavailable) as raised:
                tracking.set_run_tags("0" * 32, {"note": "never answered"})
            waited = time.monotonic() - started
        finally:
            release.set()
            server.shutdown()
    message = str(raised.value)
    assert message.startswith(f"MLflow tracking server {url} did not answer within "), message
    assert "tracking.server_wait_s = 2 s" in message
    assert waited < 2 * wait + 3, waited  # one bounded call, not retries upon retries
    assert any(b"/set-tag " in r for r in requests), requests
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # configure's, for subprocesses
    tracking.configure(tmp_path / "mlruns")  # the tests that follow log to a local store


def test_retry_locked_retries_a_response_cut_off_by_a_dying_server() -> None:
    """A tracking server killed while it answers leaves MLflow's client an incomplete
    response ("Connection broken: IncompleteRead"): that is a server going away, so the
    request is retried until the server answers again, like a refused connection."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    answers = [head, head, head + b"{}"]  # cut off twice before its body, then whole

    class Dying(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()  # the request line; the rest is not needed
            self.wfile.write(answers.pop(0))  # the first answer stops before its body

    with socketserver.TCPServer(("127.0.0.1", 0), Dying) as server:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        creds = MlflowHostCreds(f"http://127.0.0.1:{server.server_address[1]}")

        def call() -> Any:
            return http_request(creds, "/api/2.0/mlflow/experiments/list", "GET").json()

        with pytest.raises(MlflowException, match="IncompleteRead"):
            call()
        assert tracking.retry_locked(call) == {}
        server.shutdown()
    assert answers == []
