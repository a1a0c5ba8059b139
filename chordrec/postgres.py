"""A local PostgreSQL cluster for the tracking server (``chordrec server --postgres-dir``).

:class:`LocalPostgres` keeps one cluster in a directory: ``data/`` (the cluster),
``socket/`` (its Unix socket), ``password`` (the generated password of the database
user ``chordrec``, mode 0600) and ``postgres.log``. It uses Debian's ``postgresql``
binaries (``/usr/lib/postgresql/<version>/bin``), listens on 127.0.0.1 only, asks TCP
clients for the password (SCRAM) and serves the database ``mlflow``.
:meth:`LocalPostgres.open` creates what is missing and starts it; :meth:`LocalPostgres.stop`
stops it.

PostgreSQL refuses to run as root. Run as root, every PostgreSQL command runs as the
``postgres`` user (``runuser``) on directories that user owns; the password file stays
root's.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from chordrec.errors import UserError

USER = "chordrec"
"""The database user the tracking server connects as."""

DATABASE = "mlflow"
"""The database that holds the tracking server's runs and models."""

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

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "socket"

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, password: str | None = None) -> str:
        """The SQLAlchemy URL of the ``mlflow`` database (with ``password``, else the
        stored one). It holds the password: pass it in the environment, never log it."""
        secret = self.password_file.read_text().strip() if password is None else password
        return f"postgresql://{USER}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{DATABASE}"

    def redacted_url(self) -> str:
        """:meth:`url` with the password replaced by ``***``: for messages."""
        return f"postgresql://{USER}:***@127.0.0.1:{self.port}/{DATABASE}"

    def open(self) -> bool:
        """Start the cluster, creating it first (:meth:`initialise`) when ``data/`` has
        none, and the ``mlflow`` database when it is missing (a set-up cut short);
        returns whether the cluster was created."""
        created = self.initialise()
        self.start()
        found = self._run(
            "psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", USER,
            "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        )  # fmt: skip
        if found.stdout.strip() != "1":
            self._run(
                "createdb", "-h", str(self.socket_dir), "-p", str(self.port), "-U", USER, DATABASE
            )
        return created

    def initialise(self) -> bool:
        """Create the cluster and its password unless ``data/`` holds one already;
        returns whether it created them. The cluster stays stopped."""
        if (self.data / "PG_VERSION").exists():
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        self._check_reachable()
        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        for path in (self.data, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
        self._give_to_service(self.directory, self.data, self.socket_dir)
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
                "--auth-local=trust",  # the socket directory is the service account's, 0700
                "-E",
                "UTF8",
            )
        return True

    def start(self, timeout_s: int = 60) -> None:
        """Start the cluster on 127.0.0.1:``port`` (``pg_ctl start``, waiting until it
        accepts connections); :class:`PostgresError` with its log's tail if it fails."""
        self.log_file.touch(exist_ok=True)
        self._give_to_service(self.log_file)
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log_file),
            "-w", "-t", str(timeout_s), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the cluster (``pg_ctl stop -m fast``) if it runs."""
        status = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        if status.returncode == 0:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if self.as_service:
            command = ["runuser", "-u", SERVICE_ACCOUNT, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=120)
        if check and done.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise PostgresError(
                f"PostgreSQL in {self.directory}: {tool} failed "
                f"({(done.stderr or done.stdout).strip()[-1500:]}){' log: ' + log if log else ''}"
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
        """As root, the service account must be able to pass through every directory
        above ``directory``; :class:`PostgresError` names the first it cannot."""
        if not self.as_service:
            return
        for parent in reversed(self.directory.parents):
            mode = parent.stat().st_mode
            if not mode & 0o001:  # no search permission for others
                raise PostgresError(
                    f"--postgres-dir {self.directory}: the {SERVICE_ACCOUNT} user that runs "
                    f"PostgreSQL cannot enter {parent} (mode {oct(mode & 0o777)}); "
                    "choose a directory under one it can enter, e.g. /var/tmp or /srv"
                )
