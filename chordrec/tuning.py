"""Hyperparameter search on Optuna: the study a sweep shares, and a trial's run reporting
to it.

The sweeper plugin (``hydra_plugins/chordrec_optuna``) opens one study in an Optuna RDB
storage (:func:`open_study`), asks it for trials, launches each trial as a training run
and tells it how the run ended (:func:`tell`). Several sweep processes, on one machine
or many, can work on one study: trial numbers come from the storage. A trial's run
reports its per-epoch validation accuracy to the study (:class:`TrialReporter`), and the
study's pruner may stop it early (:class:`chordrec.errors.TrialPruned`).

The pruner is part of the study, kept in the storage as the study's user attribute
``pruner`` (its ``_target_`` and arguments), so that a run on another machine prunes
with the same rule as the sweeper that created the study. This module is the only one
that imports Optuna, and only when a search or a trial uses it (:func:`optuna_module`):
a plain run imports this module without Optuna installed (the ``[tune]`` extra).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from chordrec.errors import ConfigError, TrialPruned
from chordrec.extras import require_extra
from chordrec.passwords import redact
from chordrec.targets import allowed_class

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

PRUNER_ATTR = "pruner"
RUN_ID_ATTR = "mlflow_run_id"


def optuna_module() -> ModuleType:
    """The ``optuna`` module, imported now; :class:`~chordrec.extras.MissingExtra`
    naming the ``[tune]`` extra when it is not installed."""
    require_extra("tune", "an Optuna search (hparams_search=optuna)")
    import optuna

    return optuna


# How a trial ended, as the sweeper tells the study.
COMPLETE, PRUNED, FAIL = "complete", "pruned", "fail"


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``choices`` (categorical), or a ``low``..``high`` range
    (both included) of ints (``integer``, every ``step``-th) or floats, sampled on a log
    scale with ``log``."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    integer: bool = False
    log: bool = False
    step: int = 1

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution of this dimension."""
        optuna = optuna_module()
        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.low is None or self.high is None or self.low > self.high:
            raise ConfigError(f"search dimension {self.name}: bad range {self.low}..{self.high}")
        if self.integer:
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=self.step
            )
        return optuna.distributions.FloatDistribution(
            float(self.low), float(self.high), log=self.log
        )


@dataclass(frozen=True)
class Asked:
    """A trial the study handed out: its number and the values it sampled."""

    number: int
    params: dict[str, Any]
    trial: optuna.trial.Trial


def instantiate(kind: Literal["sampler", "pruner"], spec: Any, source: str) -> Any:
    """The Optuna sampler or pruner that ``spec`` (read from ``source``) describes, e.g.
    ``{"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2}``; None for
    None. Only the classes :func:`chordrec.targets.allowed_class` allows for ``kind``
    are imported: a spec read from a study's storage never names arbitrary code. Raises
    ConfigError naming the target and ``source`` for anything else."""
    if not spec:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{kind} in {source} is not a _target_ spec: {spec!r}")
    kwargs = dict(spec)
    target = kwargs.pop("_target_", "")
    cls = allowed_class(kind, target, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {target}({kwargs}) in {source}: {exc}") from exc


def open_study(
    storage: str,
    name: str,
    direction: str,
    sampler: Mapping[str, Any] | None = None,
    pruner: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Create study ``name`` in RDB ``storage`` (an SQLAlchemy URL), or load it when
    another sweep made it already (``load_if_exists``). ``sampler`` and ``pruner`` are
    ``_target_`` specs; the pruner spec is stored with a new study (see the module)."""
    optuna = optuna_module()
    made_sampler = instantiate("sampler", sampler, "hydra.sweeper.sampler")
    made_pruner = instantiate("pruner", pruner, "hydra.sweeper.pruner")
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=direction,
            sampler=made_sampler,
            pruner=made_pruner or optuna.pruners.NopPruner(),
            load_if_exists=True,
        )
    except (ValueError, ImportError) as exc:  # a direction or URL Optuna refuses
        raise ConfigError(f"Optuna study {name!r} in {redact(storage)}: {exc}") from exc
    except Exception as exc:  # SQLAlchemy: unreachable database, wrong password
        raise ConfigError(
            f"Optuna storage {redact(storage)}: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    if study.direction != optuna.study.StudyDirection[direction.upper()]:
        raise ConfigError(
            f"Optuna study {name!r} in {redact(storage)} exists with direction "
            f"{study.direction.name.lower()}, not {direction}"
        )
    if PRUNER_ATTR not in study.user_attrs:
        study.set_user_attr(PRUNER_ATTR, dict(pruner) if pruner else None)
    return study


def ask(study: optuna.Study, dimensions: Sequence[Dimension]) -> Asked:
    """A new trial of ``study`` with a value sampled for every dimension."""
    trial = study.ask({d.name: d.distribution() for d in dimensions})
    return Asked(trial.number, dict(trial.params), trial)


def tell(study: optuna.Study, asked: Asked, outcome: str, value: float | None = None) -> None:
    """Record how trial ``asked`` ended: COMPLETE with its objective ``value`` (a
    non-finite value fails the trial), PRUNED, or FAIL."""
    optuna = optuna_module()
    if outcome == COMPLETE and value is not None and math.isfinite(value):
        study.tell(asked.trial, value)
    elif outcome == PRUNED:
        study.tell(asked.trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(asked.trial, state=optuna.trial.TrialState.FAIL)


@dataclass(frozen=True)
class StudySummary:
    """Where a study stands: its trial counts by state and its best trial."""

    name: str
    counts: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_run_id: str | None


def summarize(study: optuna.Study) -> StudySummary:
    """The trial counts (``complete``, ``pruned``, ``fail``, ``running``...) and the
    best complete trial of ``study``, as the storage has them now."""
    optuna = optuna_module()
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return StudySummary(study.study_name, counts, None, None, {}, None)
    best = study.best_trial
    return StudySummary(
        study.study_name,
        counts,
        best.number,
        best.value,
        dict(best.params),
        best.user_attrs.get(RUN_ID_ATTR),
    )


def load_study(storage: str, name: str, source: str) -> optuna.Study:
    """Study ``name`` in RDB ``storage``, which must exist; ConfigError naming both and
    ``source`` (the settings that named them) when it cannot be loaded."""
    optuna = optuna_module()
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except Exception as exc:  # a missing study (KeyError), SQLAlchemy: unreachable database
        raise ConfigError(
            f"Optuna study {name!r} in {redact(storage)} ({source}): "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc


@dataclass(frozen=True)
class TrialPoint:
    """One trial in a study's history: its number, its state (``complete``, ``pruned``,
    ``fail``, ``running``...) and its value: the objective of a complete trial, the last
    value a pruned one reported, else None."""

    number: int
    state: str
    value: float | None


def trial_points(study: optuna.Study) -> list[TrialPoint]:
    """Every trial of ``study``, by number (see :class:`TrialPoint`)."""
    points = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        points.append(TrialPoint(trial.number, trial.state.name.lower(), value))
    return points


def state_counts(trials: Sequence[TrialPoint]) -> dict[str, int]:
    """How many of ``trials`` are in each state, by state name in alphabetical order."""
    counts: dict[str, int] = {}
    for trial in sorted(trials, key=lambda t: t.state):
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


def param_importances(study: optuna.Study) -> dict[str, float] | None:
    """Optuna's fANOVA importance of each searched parameter of ``study`` (fractions that
    sum to 1, seeded: the same trials give the same numbers), over its complete trials;
    None when it cannot be computed (fewer than two complete trials, or no parameter
    that all of them share)."""
    optuna = optuna_module()
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError):
        return None
    return {name: float(value) for name, value in found.items()} or None


class TrialReporter:
    """A training run's link to its trial: called after every epoch with the epoch's
    metrics, it reports ``metric`` at step ``epoch`` and raises
    :class:`~chordrec.errors.TrialPruned` when the study's pruner says to stop."""

    def __init__(self, storage: str, study_name: str, number: int, metric: str) -> None:
        optuna = optuna_module()
        study = load_study(storage, study_name, "optuna.study, optuna.storage")
        stored = f"attribute {PRUNER_ATTR!r} of Optuna study {study_name!r} in {redact(storage)}"
        pruner = instantiate("pruner", study.user_attrs.get(PRUNER_ATTR), stored)
        study.pruner = pruner or optuna.pruners.NopPruner()
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.number = number
        self.metric = metric

    def attach_run(self, run_id: str) -> None:
        """Note the trial's MLflow run (user attribute ``mlflow_run_id``)."""
        self.trial.set_user_attr(RUN_ID_ATTR, run_id)

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Report this epoch's ``metric``; raise TrialPruned if the pruner stops the trial."""
        if self.metric not in metrics:
            raise ConfigError(
                f"optuna.metric {self.metric!r} is not an epoch metric "
                f"(one of: {', '.join(sorted(metrics))})"
            )
        value = float(metrics[self.metric])
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise TrialPruned(
                f"trial {self.number} pruned after epoch {epoch}: {self.metric} = {value:.4f}"
            )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
