"""The optional parts of chordrec (pip extras), and the one error for a missing one.

A core install (``pip install chordrec``) trains, tracks, compares, makes tables and
transcribes. What not everyone needs is an extra (``pyproject.toml``):

| extra | modules | for |
|---|---|---|
| ``server`` | psycopg, Flask-WTF | ``chordrec server`` on PostgreSQL or with ``--auth``, a PostgreSQL store |
| ``cluster`` | ray | ``hydra/launcher=ray`` |
| ``tune`` | optuna | ``hparams_search=optuna`` (``hydra/sweeper=optuna``) |
| ``synth`` | mido | ``chordrec data synth`` (the out-of-domain songs; also the fluidsynth program) |
| ``gpu`` | pynvml (nvidia-ml-py) | GPU system metrics in MLflow |

Code that needs an extra calls :func:`require_extra` before importing it (the import
itself stays where the library's owner is, so the import contracts still see it); a
missing module becomes :class:`MissingExtra`, one line naming the extra to install.
"""

from __future__ import annotations

import importlib.util

from chordrec.errors import UserError

EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("psycopg", "flask_wtf"),
    "cluster": ("ray",),
    "tune": ("optuna",),
    "synth": ("mido",),
    "gpu": ("pynvml",),
}
"""Each extra and the top-level modules it installs (what :func:`require_extra` checks)."""


class MissingExtra(UserError, RuntimeError):
    """A command needs an extra that is not installed; the message names it and the
    ``pip install`` line that adds it."""


def missing_extra_message(extra: str, what: str) -> str:
    """``<what> needs the [<extra>] extra: pip install "chordrec[<extra>]"``."""
    return f'{what} needs the [{extra}] extra: pip install "chordrec[{extra}]"'


def installed(module: str) -> bool:
    """Whether top-level ``module`` can be imported (found on the path; not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook refusing it; a broken __spec__
        return False


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtra` for ``what`` (a command or setting, e.g. ``"chordrec
    server --auth"``) unless ``modules`` (default: every module of ``extra``) are
    installed."""
    if not all(installed(module) for module in modules or EXTRAS[extra]):
        raise MissingExtra(missing_extra_message(extra, what))
