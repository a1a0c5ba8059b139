"""A local PostgreSQL cluster for the tracking server (``chordrec server --postgres-dir``).

:class:`LocalPostgres` keeps one cluster in a directory of its own: ``chordrec-postgres``
(the mark that chordrec made it), ``server.lock`` (locked by the process that runs the
cluster, which writes its process id there), ``data/`` (the cluster), ``password`` (the
generated password of the database user ``chordrec``, mode 0600) and ``postgres.log``.
It uses only a directory it creates, one it marked earlier (or a cluster that an earlier
chordrec made there), or an empty one, and never changes the mode or owner of one it did
not create (:func:`chordrec.io.state_dirs.claim_state_dir`).

It uses Debian's ``postgresql`` binaries (``/usr/lib/postgresql/<version>/bin``), listens
on 127.0.0.1 only and on no Unix socket, asks every client for the password (SCRAM) and
serves the database ``mlflow``. :meth:`LocalPostgres.open` creates what is missing and
starts the cluster, refusing one that already runs; :meth:`LocalPostgres.stop` stops it.

PostgreSQL refuses to run as root. Run as root, every PostgreSQL command runs as the
``postgres`` user (``runuser``), which owns ``data/``; the other files stay root's.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO
from urllib.parse import quote

from chordrec.errors import UserError
from chordrec.file_locks import try_lock
from chordrec.io.state_dirs import claim_state_dir

USER = "chordrec"
"""The database user the tracking server connects as."""

DATABASE = "mlflow"
"""The database that holds the tracking server's runs and models."""

MARKER = "chordrec-postgres"
"""The file that marks a directory as one holding chordrec's PostgreSQL cluster."""

SERVICE_ACCOUNT = "postgres"
"""The system user that runs PostgreSQL when chordrec runs as root (Debian's)."""


class PostgresError(UserError, RuntimeError):
    """A local PostgreSQL cluster cannot be set up, started or stopped."""


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``,
    else the directory of ``pg_ctl`` on PATH; :class:`PostgresError` when neither exists."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise PostgresError(
        "PostgreSQL is not installed (no pg_ctl): install Debian's package "
        "(apt-get install postgresql), or give --backend-store-uri"
    )


class LocalPostgres:
    """One PostgreSQL cluster in ``directory``, served on 127.0.0.1:``port``."""

    def __init__(self, directory: str | Path, port: int) -> None:
        self.directory = Path(directory).resolve()
        self.port = port
        self.bin = postgres_bin_dir()
        self.as_service = os.geteuid() == 0
        self._lock_fd: int | None = None

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.directory / "data"

    @property
    def password_file(self) -> Path:
        """The file holding the database user's generated password (mode 0600)."""
        return self.directory / "password"

    @property
    def log_file(self) -> Path:
        """PostgreSQL's log file."""
        return self.directory / "postgres.log"

    @property
    def lock_file(self) -> Path:
        """The lock held by the process that runs the cluster."""
        return self.directory / "server.lock"

    def url(self, password: str | None = None) -> str:
        """The SQLAlchemy URL of the ``mlflow`` database (with ``password``, else the
        stored one). It holds the password: pass it in the environment, never log it."""
        secret = self._password() if password is None else password
        return f"postgresql://{USER}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{DATABASE}"

    def redacted_url(self) -> str:
        """:meth:`url` with the password replaced by ``***``: for messages."""
        return f"postgresql://{USER}:***@127.0.0.1:{self.port}/{DATABASE}"

    def open(self) -> bool:
        """Start the cluster, creating it first (:meth:`initialise`) when ``data/`` has
        none, and the ``mlflow`` database when it is missing (a set-up cut short);
        returns whether the cluster was created.

        The calling process holds ``server.lock`` from here until :meth:`stop`. A
        directory another process holds, or whose cluster already runs, raises
        :class:`PostgresError` naming that process and leaves its cluster running; when
        a later step fails, the cluster this call started is stopped again."""
        self._claim()
        self._lock()
        try:
            running = self._postmaster()
            if running is not None:
                raise PostgresError(
                    f"--postgres-dir {self.directory}: its PostgreSQL already runs (process "
                    f"id {running[0]}, port {running[1]}) but no chordrec server holds it: "
                    f"stop it (pg_ctl -D {self.data} stop"
                    f"{f', as the {SERVICE_ACCOUNT} user' if self.as_service else ''}), "
                    "then start the server again"
                )
            created = self.initialise()
            try:
                self.start()
                self._create_database()
            except BaseException:
                self.stop()  # what runs now is this call's: it holds the lock, none ran
                raise
        except BaseException:
            self._unlock()
            raise
        return created

    def initialise(self) -> bool:
        """Create the cluster and its password unless ``data/`` holds one already;
        returns whether it created them. The cluster stays stopped."""
        if (self.data / "PG_VERSION").exists():
            return False
        self._check_reachable()
        password = secrets.token_urlsafe(24)
        fd = os.open(
            self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
        )
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._give_to_service(self.data)
        with tempfile.TemporaryDirectory(prefix="chordrec-pg-") as tmp:
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(password + "\n")
            pwfile.chmod(0o600)
            self._give_to_service(Path(tmp), pwfile)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",  # no Unix socket is opened: see start()
                "-E",
                "UTF8",
            )
        return True

    def start(self, timeout_s: int = 60) -> None:
        """Start the cluster on 127.0.0.1:``port`` (``pg_ctl start``, waiting until it
        accepts connections), with no Unix socket; :class:`PostgresError` with its log's
        tail if it fails.

        ``pg_ctl start`` runs PostgreSQL through ``/bin/sh`` with its ``-D``, ``-l`` and
        ``-o`` text inside the command, so no path goes there: the cluster is named by
        ``$PGDATA`` and the log is pg_ctl's standard output, a file opened here."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "ab") as log:
            self._run(
                "pg_ctl", "-o", options, "-w", "-t", str(timeout_s), "start",
                env={"PGDATA": str(self.data)}, output=log,
            )  # fmt: skip

    def stop(self) -> None:
        """Stop the cluster (``pg_ctl stop -m fast``) if it runs, and let go of
        ``server.lock`` if this object holds it."""
        try:
            if self._postmaster() is not None:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            self._unlock()

    def _claim(self) -> None:
        """Make ``directory`` this cluster's (:func:`claim_state_dir`); a cluster an
        earlier chordrec made there, before the mark, counts as chordrec's."""
        made_before_the_mark = (self.data / "PG_VERSION").exists() and self.password_file.exists()
        if made_before_the_mark and not (self.directory / MARKER).exists():
            os.close(
                os.open(self.directory / MARKER, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            )
            return
        # as root the postgres user must pass through a directory chordrec creates
        claim_state_dir(
            self.directory, MARKER, "--postgres-dir", 0o711 if self.as_service else 0o700
        )

    def _lock(self) -> None:
        """Hold ``server.lock`` (with this process's id in it) until :meth:`_unlock`;
        :class:`PostgresError` naming the process that holds it already."""
        fd = try_lock(self.lock_file)
        if fd is None:
            holder = self._lock_holder()
            running = self._postmaster()
            where = f" on port {running[1]}" if running else ""
            raise PostgresError(
                f"--postgres-dir {self.directory} is in use: the chordrec server with process "
                f"id {holder} runs its PostgreSQL{where}; stop that server first, or give "
                "another --postgres-dir"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _lock_holder(self) -> str:
        """The process id written in ``server.lock`` by the process that holds it."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return "unknown"
        try:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _postmaster(self) -> tuple[str, str] | None:
        """The process id and port of the cluster's PostgreSQL if it runs, else None."""
        if self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode != 0:
            return None
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return ("unknown", "unknown")
        return (lines[0], lines[3]) if len(lines) > 3 else ("unknown", "unknown")

    def _create_database(self) -> None:
        """Create the ``mlflow`` database unless it exists (over TCP, with the password
        in the environment)."""
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", USER]
        env = {"PGPASSWORD": self._password()}
        found = self._run(
            "psql", *address, "-d", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", env=env,
        )  # fmt: skip
        if found.stdout.strip() != "1":
            self._run("createdb", *address, DATABASE, env=env)

    def _password(self) -> str:
        return self.password_file.read_text().strip()

    def _run(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        output: IO[bytes] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run PostgreSQL's ``tool`` (as the service account when root), with ``env``
        added to the environment and its output captured, or written to ``output``."""
        command = [str(self.bin / tool), *args]
        if self.as_service:
            command = ["runuser", "-u", SERVICE_ACCOUNT, "--", *command]
        done = subprocess.run(
            command,
            capture_output=output is None,
            stdout=output,
            stderr=None if output is None else subprocess.STDOUT,
            text=output is None,
            cwd="/",
            env={**os.environ, **(env or {})},
            timeout=120,
        )
        if check and done.returncode != 0:
            said = "" if output is not None else (done.stderr or done.stdout).strip()[-1500:]
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise PostgresError(
                f"PostgreSQL in {self.directory}: {tool} failed"
                f"{f' ({said})' if said else ''}{' log: ' + log if log else ''}"
            )
        return done

    def _give_to_service(self, *paths: Path) -> None:
        """Make ``paths`` the service account's when running as root."""
        if not self.as_service:
            return
        account = pwd.getpwnam(SERVICE_ACCOUNT)
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _check_reachable(self) -> None:
        """As root, the service account must be able to pass through ``directory`` and
        every directory above it; :class:`PostgresError` names the first it cannot."""
        if not self.as_service:
            return
        account = pwd.getpwnam(SERVICE_ACCOUNT)
        for folder in (*reversed(self.directory.parents), self.directory):
            info = folder.stat()
            if not (
                info.st_mode & 0o001 or (info.st_uid == account.pw_uid and info.st_mode & 0o100)
            ):
                raise PostgresError(
                    f"--postgres-dir {self.directory}: the {SERVICE_ACCOUNT} user that runs "
                    f"PostgreSQL cannot enter {folder} (mode {oct(info.st_mode & 0o777)}); "
                    "choose a new directory under one it can enter, e.g. /var/tmp/chordrec-postgres"
                )
