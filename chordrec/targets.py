"""The classes a config's ``_target_`` may name, and the one function that imports them.

A config names the class of a model, optimizer, scheduler, Optuna sampler or pruner by
its import path (``{"_target_": "torch.optim.Adam", "lr": 0.001}``, as Hydra writes it).
Configs are also read back from places other people can write: a run's checkpoint, a
tracking store, the database an Optuna study shares with every worker. Importing and
calling whatever such a config names runs anyone's code, so every ``_target_`` chordrec
turns into a class goes through :func:`allowed_class`, which imports only what
:data:`ALLOWED` lists.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Literal

from chordrec.errors import ConfigError

Kind = Literal["model", "optimizer", "scheduler", "sampler", "pruner"]

ALLOWED: dict[Kind, tuple[str, ...]] = {
    "model": ("chordrec.models.CRNN", "chordrec.models.ChromaTemplates"),
    "optimizer": tuple(f"torch.optim.{name}" for name in ("Adam", "AdamW", "SGD", "RMSprop")),
    "scheduler": (
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
    ),
    "sampler": ("optuna.samplers.*",),
    "pruner": ("optuna.pruners.*",),
}
"""What a ``_target_`` of each kind may name: a class's import path, or ``module.*`` for
every public class of that module."""

RUN_CONFIG_KINDS: tuple[Kind, ...] = ("model", "optimizer", "scheduler")
"""The kinds a training run's config holds, each under the key of its name."""


def allowed_class(kind: Kind, target: object, source: str) -> type:
    """The class ``target`` names, imported only when :data:`ALLOWED` lists it for
    ``kind``. Raises :class:`ConfigError` naming the target and ``source`` (where the
    config was read) for any other target, before anything is imported."""
    text = str(target)
    module, _, name = text.rpartition(".")
    patterns = ALLOWED[kind]
    public = name.isidentifier() and not name.startswith("_")
    if text not in patterns and not (public and f"{module}.*" in patterns):
        raise ConfigError(
            f"{kind} _target_ {text!r} in {source} is not allowed (allowed: {', '.join(patterns)})"
        )
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{kind} _target_ {text!r} in {source}: {exc}") from exc
    if not isinstance(found, type):
        raise ConfigError(f"{kind} _target_ {text!r} in {source} is not a class")
    return found


def check_run_config(config: Mapping[str, Any], source: str) -> None:
    """Check the ``_target_`` of a run's ``model``, ``optimizer`` and ``scheduler`` (those
    it has) with :func:`allowed_class`: a config read from ``source`` (a checkpoint, a
    store) is refused before anything is built from it."""
    for kind in RUN_CONFIG_KINDS:
        spec = config.get(kind)
        if isinstance(spec, Mapping) and "_target_" in spec:
            allowed_class(kind, spec["_target_"], f"{source} ({kind})")
