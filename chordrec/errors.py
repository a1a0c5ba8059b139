"""The errors that are the user's to fix: a setting, an input file, a server.

Entry points report a :class:`UserError` in one line naming what to fix, with a
non-zero exit and no traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user fixes (a setting, a file, a server); the message names it."""


class ConfigError(UserError, ValueError):
    """A setting that is out of range or contradicts another."""


class TrialPruned(Exception):
    """A search trial that its pruner stopped early (not an error): the run ends KILLED
    with the tag ``pruned=true`` and keeps the epochs it logged; the sweeper records the
    trial as pruned. The message says at which epoch and why."""
