"""Runs logged before metrics were named by section (``train_loss`` → ``train/loss``).

chordrec logs metrics under the prefix of the section the MLflow UI shows them in:
``train/``, ``val/``, ``test/``, ``time/``, ``fit/``, ``decode/``. Stores written by
earlier versions hold the old flat names and the split sizes as ``size_*`` metrics;
everything that reads runs back (:func:`~chordrec.tracking.find_runs`,
:func:`~chordrec.tracking.metric_history`, :func:`~chordrec.tracking.run_metrics`)
maps them here, so tables and resumed runs see one naming.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")

RENAMED: dict[str, str] = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "lr": "train/lr",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "epoch_time_s": "time/epoch_s",
    "train_time_s": "time/train_s",
    "val_loss_best": "val/best_loss",
    "test_loss": "test/loss",
    "epochs_run": "fit/epochs_run",
    "best_epoch": "fit/best_epoch",
    "converged": "fit/converged",
    "viterbi_self_transition": "decode/self_transition",
}
"""Old metric name → current name, for the names that are not ``val_``/``test_`` scores."""

_SCORE_PARTS = ("val_", "test_")
_SIZE_PREFIX = "size_"
_PARTS = ("train", "validation", "test")


def current_metric_name(name: str) -> str:
    """The current name of metric ``name`` (unchanged when it is current already):
    :data:`RENAMED`, or ``val_X`` → ``val/X`` and ``test_X`` → ``test/X``."""
    if name in RENAMED:
        return RENAMED[name]
    for prefix in _SCORE_PARTS:
        if name.startswith(prefix):
            return f"{prefix[:-1]}/{name[len(prefix) :]}"
    return name


def previous_metric_name(name: str) -> str:
    """The name that runs logged metric ``name`` under before the renaming (the inverse
    of :func:`current_metric_name`): ``val/acc`` → ``val_acc``."""
    for old, new in RENAMED.items():
        if new == name:
            return old
    return name.replace("/", "_", 1)


def current_metric_names(metrics: Mapping[str, object]) -> dict[str, str]:
    """Each stored metric name of ``metrics`` → its current name, the old ``size_*``
    metrics left out (see :func:`legacy_sizes`)."""
    return {k: current_metric_name(k) for k in metrics if not k.startswith(_SIZE_PREFIX)}


def current_metrics(metrics: Mapping[str, V]) -> dict[str, V]:
    """``metrics`` (any values: last values, histories) keyed by current names; the old
    ``size_*`` metrics are left out (see :func:`legacy_sizes`)."""
    return {name: metrics[key] for key, name in current_metric_names(metrics).items()}


def legacy_sizes(metrics: Mapping[str, float]) -> dict[str, str]:
    """The split sizes an old run logged as metrics ``size_<part>_<what>``, as the params
    ``sizes.<part>.<what>`` that runs log now."""
    sizes = {}
    for key, value in metrics.items():
        rest = key.removeprefix(_SIZE_PREFIX)
        part, _, what = rest.partition("_")
        if key.startswith(_SIZE_PREFIX) and part in _PARTS and what:
            sizes[f"sizes.{part}.{what}"] = str(int(value))
    return sizes
