"""Passwords kept out of everything chordrec writes, and out of its settings.

:func:`redact` hides every password form in a text (a URL, a command line, a log line,
a config value); :func:`refuse_password` refuses a setting or an argument that holds
one; :func:`check_no_passwords` checks every setting of a config. The tracking package
(:mod:`chordrec.tracking`) re-exports the first three. This module imports neither
MLflow nor torch: ``python -m chordrec.train``'s first Hydra callback
(:class:`chordrec.train.PasswordCheck`) runs it before anything heavy is imported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from chordrec.errors import ConfigError

HIDDEN = "***"
"""What :func:`redact` writes in place of a password."""

_SCHEME_USER = r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"]*:)"
_PASSWORDS = (
    # a URL's user:password@, the password up to the host's "@" (urlsplit, libpq)...
    re.compile(_SCHEME_USER + r"(?P<secret>[^\s/?#'\"]*)@"),
    # ...or up to the first "@", "/" and "?" included (SQLAlchemy's URLs)
    re.compile(_SCHEME_USER + r"(?P<secret>[^\s@'\"]*)@"),
    # ?password=, &password=, a libpq "password=" and PGPASSWORD=-style assignments
    re.compile(
        r"(?P<keep>\b[\w.-]*(?:password|passwd|token|secret)\s*=\s*)"
        r"(?P<secret>'[^']*'|\"[^\"]*\"|[^\s&;,#'\"]+)",
        re.IGNORECASE,
    ),
)


def _hide(match: re.Match[str]) -> str:
    if match.group("secret").strip("'\"") == HIDDEN:  # hidden already
        return match.group(0)
    return match.group("keep") + HIDDEN + match.group(0)[match.end("secret") - match.start() :]


def redact(text: str) -> str:
    """``text`` (a URL, a command line, a log line, a config value) with every password
    replaced by ``***``: a URL's ``user:password@``, a ``password=`` query or
    connection-string parameter, and assignments such as ``PGPASSWORD=...`` or
    ``MLFLOW_TRACKING_PASSWORD=...`` (names ending in password, passwd, token or
    secret). Everything chordrec writes that may hold a URL goes through it."""
    for pattern in _PASSWORDS:
        text = pattern.sub(_hide, text)
    return text


def holds_password(text: str) -> bool:
    """Whether ``text`` holds a password that :func:`redact` would hide."""
    return redact(text) != text


PASSWORD_PLACES = (
    "PGPASSWORD or a ~/.pgpass file (PostgreSQL: the URL without the password, "
    "postgresql://USER@HOST/DB), MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
    "(an MLflow server), or the whole URL in MLFLOW_TRACKING_URI"
)
"""Where a password goes instead of a setting or an argument: the environment, or a
0600 file that libpq reads."""


def refuse_password(where: str, value: str) -> None:
    """Raise :class:`ConfigError` when ``value``, given as ``where`` (a setting or a
    command-line option), holds a password: settings and arguments end up on command
    lines (``ps``), in Hydra's saved config and in run tags."""
    if holds_password(value):
        raise ConfigError(
            f"a password in {where} ({redact(value)}): settings and arguments show in ps, "
            f"Hydra's saved config and run tags; give it in the environment instead: "
            f"{PASSWORD_PLACES}"
        )


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → ``{'a.b.c': 'value'}`` with values as strings (lists and tuples
    as JSON): a run's MLflow params, and what :func:`check_no_passwords` reads."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


UNCHECKED_HYDRA_KEYS = ("hydra.help", "hydra.hydra_help", "hydra.overrides", "hydra.job.override")
"""Parts of Hydra's own config that :func:`check_no_passwords` skips: help texts, and
the command line's overrides as Hydra records them (the settings they set are checked)."""


def check_no_passwords(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming each setting of ``cfg`` whose value, as written
    or resolved (``${oc.env:...}``), holds a password (:func:`redact`): settings reach
    Hydra's saved config, trials' overrides, run tags, checkpoints and command lines, so
    passwords come from the environment instead (:data:`PASSWORD_PLACES`)."""
    written = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(written, dict)
    found: dict[str, str] = {}
    for key, value in flatten(written).items():
        if key.startswith(UNCHECKED_HYDRA_KEYS):
            continue
        resolved = value
        if "${" in value:
            try:
                node = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
            except Exception:  # a resolver Hydra sets up later: the value as written
                node = None
            if OmegaConf.is_config(node):
                resolved = str(OmegaConf.to_container(node, resolve=True))
            elif node is not None:
                resolved = str(node)
        if holds_password(value) or holds_password(resolved):
            found[key] = value
    if found:
        first = next(iter(found.values()))
        refuse_password(", ".join(found), first)
