"""Authentication for a tracking server that others can reach: MLflow's ``basic-auth``
app (``mlflow server --app-name basic-auth``), where every request but ``/health``
names a user and password.

:func:`prepare_auth` keeps the app's state in a directory of chordrec's (``chordrec
server --auth DIR``): ``auth.ini`` (the app's settings, read through
``$MLFLOW_AUTH_CONFIG_PATH``; mode 0600, as it holds the admin password),
``admin-password`` (the password generated for the user ``admin`` the first time, mode
0600) and ``users.db`` (the app's users and permissions, SQLite). The ``mlflow server``
process creates ``admin`` with that password before any web worker listens, so the
server never has an admin with a default password. Clients name their user in
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import base64
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from chordrec.errors import UserError
from chordrec.io.state_dirs import claim_state_dir

ADMIN = "admin"
"""The user the basic-auth app creates first, with every permission."""

DEFAULT_PERMISSION = "EDIT"
"""What every user may do with what others made: read, log runs, register models and
move their aliases, but not delete (that needs MANAGE: the maker, or ``admin``)."""

AUTH_APP = "basic-auth"
"""The MLflow app (``--app-name``) that asks every request for a user and password."""

CONFIG_ENV = "MLFLOW_AUTH_CONFIG_PATH"
"""The environment variable through which the app reads its settings file."""

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
"""Where a client of a server with authentication finds its user and password."""

SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
"""The environment variable holding the key the app signs its forms' CSRF tokens with,
the same in every web worker of one server."""


@dataclass(frozen=True)
class AuthSetup:
    """Where one server's authentication keeps its settings and admin password, and
    the key this start of the server signs its forms with."""

    directory: Path
    secret_key: str = field(repr=False)

    @property
    def config(self) -> Path:
        """The basic-auth app's configuration file."""
        return self.directory / "auth.ini"

    @property
    def password_file(self) -> Path:
        """The admin's generated password (mode 0600)."""
        return self.directory / "admin-password"

    @property
    def users_db(self) -> Path:
        """The basic-auth app's database of users."""
        return self.directory / "users.db"

    def server_env(self) -> dict[str, str]:
        """What ``mlflow server`` needs in its environment to use these settings."""
        return {CONFIG_ENV: str(self.config), SECRET_KEY_ENV: self.secret_key}


def prepare_auth(directory: str | Path) -> AuthSetup:
    """Set up the basic-auth app's state in ``directory`` (a new or empty directory, or
    one this function set up before: :func:`claim_state_dir`): generate the admin
    password into ``admin-password`` (mode 0600) unless it is there, and write
    ``auth.ini`` (mode 0600) naming it as the admin's password and ``users.db`` as the
    app's database. Each call makes a new form-signing key."""
    setup = AuthSetup(Path(directory).expanduser().resolve(), secrets.token_urlsafe(32))
    claim_state_dir(setup.directory, setup.config.name, "--auth")
    if not setup.password_file.exists():
        _write_private(setup.password_file, secrets.token_urlsafe(24) + "\n")
    password = setup.password_file.read_text().strip()
    _write_private(
        setup.config,
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{str(setup.users_db).replace('%', '%%')}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return setup


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600 before the
    first byte is written), never through a symbolic link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


class AccessDenied(UserError, RuntimeError):
    """A tracking server refuses the client's user and password, or asks for them."""


def check_access(uri: str, name: str, timeout: float = 5.0) -> None:
    """Raise :class:`AccessDenied` naming ``name`` (``uri`` without its password) when
    the MLflow server at ``uri`` answers a search for one experiment with 401: it asks
    for a user and password that ``$MLFLOW_TRACKING_USERNAME`` and
    ``$MLFLOW_TRACKING_PASSWORD`` do not give. Any other answer is left to the request
    that follows."""
    request = urllib.request.Request(
        uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    )
    user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            said = f"the user {user!r} and its password" if user and password else "no user"
            raise AccessDenied(
                f"MLflow tracking server {name} asks for a user and password and refused "
                f"{said}: set {USERNAME_ENV} and {PASSWORD_ENV} in the environment "
                "(the server's admin makes users)"
            ) from None
    except (urllib.error.URLError, OSError):
        pass  # unreachable now: the requests that follow wait for it and say so
