"""Every Hydra multirun as one MLflow parent run, its jobs' runs nested under it.

``chordrec/conf/train.yaml`` registers :class:`SweepParentRun` as a Hydra callback. When a
multirun starts (any sweeper, any launcher), it creates the sweep's parent run, tagged
``kind=sweep``, ``sweep_id`` (:func:`sweep_id` of the sweep directory), ``sweep_dir``
and ``sweep_overrides`` (the command line's), or reopens the parent that an earlier
launch with the same sweep directory made. Each job's run finds it by ``sweep_id``
(:func:`chordrec.run.train`) and nests under it, so the MLflow UI shows the sweep as one
row that expands to its runs. When the sweep ends, the parent logs the run table of its
children (``runs.md`` and ``runs.csv``, as ``chordrec table --runs``) and their
summary (:mod:`chordrec.sweep_report`: ``summary.md``, figures, ``sweep/`` metrics) and
ends FINISHED, or FAILED when a child did not finish or the table cannot be built. A sweep
that stops early (a job raised, Ctrl-C) ends its parent FAILED at exit, with the table
of the runs that finished.

A study's multirun (``tracking.parent_run_id`` set by ``chordrec study``) nests under
the study's parent run instead; no sweep parent is made for it.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from chordrec.passwords import redact

log = logging.getLogger(__name__)


def sweep_key(hydra: DictConfig) -> str:
    """What a sweep's parent run stands for, from the ``hydra`` config node: the Optuna
    study when the sweeper keeps it in a storage it names (every sweep process working on
    that study shares one parent), else the sweep directory (absolute)."""
    sweeper = hydra.sweeper
    storage = sweeper.get("storage") if "study_name" in sweeper else None
    if storage:
        return f"optuna study {sweeper.study_name} in {redact(str(storage))}"
    return str(Path(str(hydra.sweep.dir)).resolve())


def optuna_storage(hydra: DictConfig) -> str | None:
    """The Optuna storage of the sweep the ``hydra`` config node runs: the sweeper's
    ``storage``, else ``sqlite:///<sweep dir>/optuna.db``; None unless the sweeper is
    the Optuna one."""
    if "study_name" not in hydra.sweeper:
        return None
    directory = Path(str(hydra.sweep.dir)).resolve()
    return str(hydra.sweeper.get("storage") or f"sqlite:///{directory / 'optuna.db'}")


def sweep_id(hydra: DictConfig) -> str:
    """The id of the sweep the ``hydra`` config node runs: 16 hex digits of the sha256
    of its :func:`sweep_key` (safe in an MLflow filter, the same for a relaunch in that
    directory or for another worker of that study)."""
    return hashlib.sha256(sweep_key(hydra).encode()).hexdigest()[:16]


class SweepParentRun(Callback):
    """The Hydra callback that gives a multirun its MLflow parent run (see the module)."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.experiment = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create or reopen the sweep's parent run (not for a study's multirun)."""
        if config.tracking.parent_run_id:
            return
        from chordrec import tracking  # MLflow: imported when a multirun starts

        directory = Path(str(config.hydra.sweep.dir)).resolve()
        overrides = redact(" ".join(config.hydra.overrides.task))
        key = sweep_key(config.hydra)
        tags = {
            "kind": "sweep",
            "sweep_id": sweep_id(config.hydra),
            "sweep_dir": str(directory),
            "sweep_overrides": overrides,
            "mlflow.note.content": f"Hydra multirun: {overrides or '(no overrides)'}",
        }
        name = f"sweep {directory.parent.name}/{directory.name}"
        storage = optuna_storage(config.hydra)
        if storage is not None:
            study = str(config.hydra.sweeper.study_name)
            tags.update({"optuna_study": study, "optuna_storage": redact(storage)})
        if key.startswith("optuna study "):
            tags["mlflow.note.content"] = f"Optuna study {study}: {tags['mlflow.note.content']}"
            name = f"study {study}"
        self.experiment = str(config.tracking.experiment)
        tracking.configure(config.tracking.store_dir, config.tracking.uri)
        found = tracking.find_sweep_parent(self.experiment, tags["sweep_id"])
        if found is None:
            made = tracking.start_parent_run(self.experiment, name, tags, config.tracking.store_dir)
            # Workers of one study starting together may each make a parent: every one
            # keeps the earliest (find_sweep_parent) and a later one deletes its own.
            found = tracking.find_sweep_parent(self.experiment, tags["sweep_id"])
            if found != made:
                tracking.delete_run(made)
        if found is None:
            raise tracking.TrackingError(f"sweep {key}: its parent run vanished")
        self.parent_run_id = found
        tracking.reopen_parent_run(found, tags)
        log.info(
            "sweep %s (id %s): parent MLflow run %s", key, tags["sweep_id"], self.parent_run_id
        )

        atexit.register(self.end_parent, ended_early=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Log the children's run table to the parent run and end it."""
        self.end_parent(ended_early=False)

    def end_parent(self, ended_early: bool) -> None:
        """Log the run table of the parent's children and end the parent: FINISHED when
        every child finished and the table is complete, else FAILED. Hydra skips
        ``on_multirun_end`` when a job raised (or on Ctrl-C); the parent is then ended
        at exit (``ended_early``), FAILED, with the table of the runs that finished."""
        parent, self.parent_run_id = self.parent_run_id, None
        if parent is None:
            return
        from chordrec import tracking
        from chordrec.report.tables import IncompleteTableError, build_run_table, render
        from chordrec.study import RUN_TABLE_ARTIFACT
        from chordrec.sweep_report import log_sweep_summary

        children = tracking.find_runs(self.experiment, parent_run_id=parent)
        # A pruned trial ended KILLED on purpose; a RUNNING child belongs to another
        # worker of the same Optuna study (or was killed outright) and is left out.
        finished = [r for r in children if r.status == "FINISHED"]
        broken = [
            f"{r.run_id} ({r.status})"
            for r in children
            if r.status not in ("FINISHED", "RUNNING") and r.tags.get("pruned") != "true"
        ]
        problems = ["the sweep ended early: a job failed or it was interrupted"] * ended_early
        if broken:
            problems.append(f"runs not FINISHED: {', '.join(broken)}")
        succeeded = bool(finished) and not problems
        if problems:
            tracking.set_run_tags(parent, {"error": "; ".join(problems)})
        try:
            table = build_run_table(children)
        except IncompleteTableError as exc:
            tracking.set_run_tags(parent, {"error": f"run table: {exc}"})
            succeeded = False
        else:
            for fmt in ("md", "csv"):
                tracking.log_text_to_run(parent, render(table, fmt), f"{RUN_TABLE_ARTIFACT}.{fmt}")
        try:
            log_sweep_summary(parent)
        finally:
            tracking.end_parent_run(parent, succeeded)
