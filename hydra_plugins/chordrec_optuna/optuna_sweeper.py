r"""A Hydra sweeper over Optuna's ask/tell API: ``hydra/sweeper=optuna``.

    python -m chordrec.train -m hparams_search=optuna hydra.sweeper.n_trials=20
    python -m chordrec.train -m hparams_search=optuna \
        hydra.sweeper.storage=postgresql://user@db-host/optuna hydra.sweeper.study_name=lr-search

The search space is ``hydra.sweeper.params`` plus any sweep on the command line, in
Hydra's syntax: ``choice(16, 32)``, ``range(16, 129, 16)`` (ints or a float step),
``interval(0.0, 0.5)`` (floats), ``tag(log, interval(1e-4, 1e-2))`` (log scale) and
``tag(int, interval(8, 256))`` (integers). Other overrides are passed to every trial.

The study lives in an Optuna RDB storage (``storage``: any SQLAlchemy URL without a
password, which comes from the environment: ``PGPASSWORD`` or ``~/.pgpass`` for
PostgreSQL; default ``sqlite:///<sweep dir>/optuna.db``), opened with
``load_if_exists``, so that several sweep processes, on one machine or many, work on
one study; each process runs ``n_trials`` trials of its own, ``n_jobs`` at a time
through the configured launcher (local, joblib or Ray). Every trial is a training run
given ``optuna.storage``, ``optuna.study``, ``optuna.trial`` and ``optuna.metric``: it
reports that metric after each epoch and the study's ``pruner`` may stop it (the run
ends KILLED, tagged ``pruned=true``). A trial that fails is recorded FAIL and the
search goes on; the sweep then raises the first failure at the end. The study's
standing (best trial, counts) is written to ``optimization_results.yaml`` in the sweep
directory and logged to the sweep's MLflow parent run (one per study,
:mod:`chordrec.sweeps`).
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from chordrec import tuning
from chordrec.errors import ConfigError, TrialPruned
from chordrec.passwords import redact, refuse_password
from chordrec.sweeps import optuna_storage, sweep_id

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


@dataclass
class OptunaSweeperConf:
    """``hydra/sweeper=optuna``: the settings of :class:`OptunaSweeper`."""

    _target_: str = "hydra_plugins.chordrec_optuna.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # sampler and pruner stay specs: the study stores the pruner's
    study_name: str = "chordrec"
    # an SQLAlchemy URL; None: sqlite:///<sweep dir>/optuna.db (OmegaConf reads Optional)
    storage: Optional[str] = None  # noqa: UP045
    direction: str = "maximize"  # of what a trial's run returns (best val frame accuracy)
    n_trials: int = 20  # trials this process runs (other workers of the study add theirs)
    n_jobs: int = 1  # trials launched at once, as one batch of the launcher
    metric: str = "val/acc"  # reported after every epoch, for the pruner
    sampler: Any = None  # hydra/sweeper/sampler=tpe|random (None: Optuna's TPE)
    pruner: Any = None  # hydra/sweeper/pruner=median|hyperband|threshold|none (None: none)
    params: Any = field(default_factory=dict)  # setting -> Hydra sweep expression


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="chordrec"
)


def dimension(override: Override) -> tuning.Dimension:
    """The search dimension a Hydra sweep override describes (see the module)."""
    name, value = override.get_key_element(), override.value()
    if override.is_choice_sweep():
        return tuning.Dimension(name, choices=tuple(override.sweep_iterator()))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values or value.shuffle:
            raise ConfigError(f"{override.input_line}: an empty or shuffled range")
        if not all(isinstance(v, int) for v in values):  # a float step: its values, as choices
            return tuning.Dimension(name, choices=tuple(values))
        step = values[1] - values[0] if len(values) > 1 else 1
        return tuning.Dimension(name, low=values[0], high=values[-1], integer=True, step=step)
    if isinstance(value, IntervalSweep):
        return tuning.Dimension(
            name,
            low=value.start,
            high=value.end,
            integer="int" in value.tags,
            log="log" in value.tags,
        )
    raise ConfigError(f"{override.input_line}: not a choice, range or interval")


def hydra_value(value: Any) -> str:
    """``value`` written as a Hydra override value: numbers and booleans as such,
    strings quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class OptunaSweeper(Sweeper):
    """Runs an Optuna search as Hydra jobs (see the module)."""

    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: str,
        n_trials: int,
        n_jobs: int,
        metric: str,
        sampler: Any,
        pruner: Any,
        params: Any,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ConfigError(
                f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials} and {n_jobs}"
            )
        if storage:  # every trial gets it as an override: it must hold no password
            refuse_password("hydra.sweeper.storage", storage)
        self.study_name = study_name
        self.storage = storage
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.metric = metric
        self.sampler = _plain(sampler)
        self.pruner = _plain(pruner)
        self.params = {str(k): str(v) for k, v in (_plain(params) or {}).items()}
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the config and instantiate the configured launcher."""
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run ``n_trials`` trials of the study, ``n_jobs`` at a time."""
        assert self.config is not None
        fixed, dimensions = self._search_space(arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = optuna_storage(self.config.hydra)
        study = tuning.open_study(
            storage, self.study_name, self.direction, self.sampler, self.pruner
        )
        log.info(
            "Optuna study %r in %s: %d trials, %d at a time, over %s",
            self.study_name,
            redact(storage),
            self.n_trials,
            self.n_jobs,
            ", ".join(d.name for d in dimensions) or "(nothing)",
        )
        trial_settings = [
            f"optuna.storage={hydra_value(storage)}",
            f"optuna.study={hydra_value(self.study_name)}",
            f"optuna.metric={hydra_value(self.metric)}",
        ]
        failures: list[BaseException] = []
        done = 0
        while done < self.n_trials:
            batch = [
                tuning.ask(study, dimensions) for _ in range(min(self.n_jobs, self.n_trials - done))
            ]
            overrides = [
                [
                    *fixed,
                    *(f"{name}={hydra_value(v)}" for name, v in asked.params.items()),
                    *trial_settings,
                    f"optuna.trial={asked.number}",
                ]
                for asked in batch
            ]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for asked, ret in zip(batch, returns, strict=True):
                failure = self._tell(study, asked, ret)
                if failure is not None:
                    failures.append(failure)
            done += len(batch)
        summary = tuning.summarize(study)
        self._record(summary, storage, sweep_dir)
        if failures:
            raise failures[0]

    def _search_space(self, arguments: list[str]) -> tuple[list[str], list[tuning.Dimension]]:
        """The overrides every trial gets and the searched dimensions: ``params`` first,
        then the command line (which wins for a setting named in both)."""
        parser = OverridesParser.create()
        configured = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()])
        given = parser.parse_overrides(arguments)
        fixed: dict[str, str] = {}
        dimensions: dict[str, tuning.Dimension] = {}
        for override in (*configured, *given):
            key = override.get_key_element()
            fixed.pop(key, None)
            dimensions.pop(key, None)
            if override.is_sweep_override():
                dimensions[key] = dimension(override)
            else:
                fixed[key] = override.input_line
        return list(fixed.values()), list(dimensions.values())

    def _tell(self, study: Any, asked: tuning.Asked, ret: JobReturn) -> BaseException | None:
        """Tell the study how ``asked``'s job ended; returns its error if it failed."""
        if ret.status == JobStatus.COMPLETED:
            tuning.tell(study, asked, tuning.COMPLETE, float(ret.return_value))
            log.info("trial %d: objective %s", asked.number, ret.return_value)
            return None
        error = ret._return_value  # the job's exception (JobReturn.return_value re-raises it)
        if isinstance(error, TrialPruned):
            tuning.tell(study, asked, tuning.PRUNED)
            log.info("%s", error)
            return None
        tuning.tell(study, asked, tuning.FAIL)
        log.error("trial %d failed: %s: %s", asked.number, type(error).__name__, error)
        return error if isinstance(error, BaseException) else RuntimeError(str(error))

    def _record(self, summary: tuning.StudySummary, storage: str, sweep_dir: Path) -> None:
        """Write the study's standing to the sweep directory and its MLflow parent run."""
        assert self.config is not None
        results = {
            "name": summary.name,
            "storage": redact(storage),
            "trials": summary.counts,
            "best_trial": summary.best_number,
            "best_value": summary.best_value,
            "best_params": summary.best_params,
            "best_run_id": summary.best_run_id,
        }
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        log.info("Optuna study %r: %s", summary.name, results)
        cfg = self.config
        from chordrec import tracking  # MLflow: not imported when Hydra scans its plugins

        tracking.configure(cfg.tracking.store_dir, cfg.tracking.uri)
        parent = tracking.find_sweep_parent(str(cfg.tracking.experiment), sweep_id(cfg.hydra))
        if parent is not None:
            tracking.record_study(parent, results)


def _plain(value: Any) -> Any:
    """``value`` as plain Python containers (an OmegaConf node resolved)."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
