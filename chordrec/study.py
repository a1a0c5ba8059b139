"""Studies and result tables: what ``chordrec study`` and ``chordrec table`` do.

A study runs experiment presets (the report's a-f) as one Hydra multirun of
``python -m chordrec.train`` into one MLflow experiment, nested under a parent run
tagged ``study=<id>``, then builds the report's Table 5 from the runs and logs it to
the parent run. A table is rebuilt from MLflow at any time: Table 5, or one row per
run (a sweep's or seeds' results), logged as an artifact and optionally written to a
file.

This is the one module outside the Hydra entry points that composes a
``python -m chordrec.train`` multirun command line (:func:`multirun_command`); it
passes the study's settings as Hydra overrides and leaves the rest to Hydra.

Every function takes plain, typed parameters and returns what the command prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chordrec import tracking
from chordrec.constants import EXPERIMENT, LONGEST_FIRST, PRESETS, STORE_DIR
from chordrec.io.atomic_write import write_atomic
from chordrec.report.tables import (
    IncompleteTableError,
    build_run_table,
    build_table,
    render,
    select_runs,
)
from chordrec.sweep_report import log_sweep_summary

TABLE_ARTIFACT = "table5"
"""Artifact name (before the format's suffix) of a logged Table 5."""

RUN_TABLE_ARTIFACT = "runs"
"""Artifact name (before the format's suffix) of a logged per-run table."""


@dataclass(frozen=True)
class Study:
    """A started study: its parent run stays RUNNING until :func:`run_study` ends it."""

    study_id: str
    presets: tuple[str, ...]
    experiment: str
    store: Path
    """The local tracking store, an absolute path (every member run logs there)."""
    tracking_uri: str
    """The tracking URI the members log to (the store's, unless another was given)."""
    parent_run_id: str

    @property
    def headline(self) -> str:
        """The line announcing the study before its runs start."""
        return (
            f"study {self.study_id}: presets {', '.join(self.presets)}; "
            f"parent MLflow run {self.parent_run_id}"
        )


@dataclass(frozen=True)
class StudyOutcome:
    """What a finished study reports."""

    table: str
    """Table 5 in Markdown with the study's wall time; empty if it could not be built."""
    problems: tuple[str, ...]
    """One line per failed member run, and one if Table 5 is incomplete."""
    succeeded: bool
    """Every member run finished and Table 5 is complete (the parent run ended FINISHED)."""


@dataclass(frozen=True)
class PublishedTable:
    """A table built from MLflow and logged as an artifact."""

    text: str
    artifact: str
    """The artifact's file name, e.g. ``table5.md``."""
    logged_in: str
    """Where: ``study run <id>`` (the study's parent run) or ``run <id>`` (a new table run)."""

    @property
    def note(self) -> str:
        """The line saying where the table was logged."""
        return f"(logged as {self.artifact} in {self.logged_in})"


def default_study_id() -> str:
    """``study-<date>-<time>``, now."""
    return time.strftime("study-%Y%m%d-%H%M%S")


def table5_text(
    runs: Sequence[tracking.RunRecord], presets: Sequence[str] = PRESETS, fmt: str = "md"
) -> str:
    """Table 5 of ``presets`` from the newest FINISHED run of each, rendered in ``fmt``.
    Raises :class:`~chordrec.report.tables.IncompleteTableError` naming a missing cell."""
    return render(build_table(select_runs(runs, presets)), fmt)


def start_study(
    presets: Sequence[str] = PRESETS,
    study_id: str | None = None,
    *,
    experiment: str = EXPERIMENT,
    store: Path = STORE_DIR,
    tracking_uri: str | None = None,
) -> Study:
    """Point MLflow at ``tracking_uri`` (else $MLFLOW_TRACKING_URI, else ``store``) and
    create the study's RUNNING parent run in ``experiment``, tagged ``study=<id>`` and
    ``kind=study``. ``study_id`` defaults to :func:`default_study_id`; an invalid one is
    a :class:`~chordrec.errors.ConfigError`."""
    study_id = tracking.check_study_id(study_id or default_study_id())
    absolute_store = Path(store).resolve()
    uri = tracking.configure(store, tracking_uri)
    parent = tracking.start_parent_run(
        experiment, study_id, {"study": study_id, "kind": "study"}, absolute_store
    )
    return Study(study_id, tuple(presets), experiment, absolute_store, uri, parent)


def multirun_command(study: Study, jobs: int = 2, overrides: Sequence[str] = ()) -> list[str]:
    """The ``python -m chordrec.train -m ...`` command line that runs ``study``'s presets
    as one multirun nested under its parent run: ``jobs`` > 1 runs them in parallel (one
    torch thread and per-epoch log lines each), started longest first
    (:data:`~chordrec.constants.LONGEST_FIRST`); ``overrides`` apply to every member."""
    order = sorted(study.presets, key=_start_rank)
    command = [
        sys.executable,
        "-m",
        "chordrec.train",
        "-m",
        f"experiment={','.join(order)}",
        f"tracking.experiment={study.experiment}",
        f"tracking.store_dir={study.store}",
        f"+tracking.tags.study={study.study_id}",
        f"tracking.parent_run_id={study.parent_run_id}",
        f"hydra.sweep.dir=multirun/{study.study_id}",
    ]
    if jobs > 1:
        command += [
            "hydra/launcher=parallel",
            f"hydra.launcher.n_jobs={jobs}",
            "trainer.num_threads=1",  # one torch thread per job
            "trainer.progress=false",  # per-epoch log lines, not interleaved progress bars
        ]
    return [*command, *overrides]


def _start_rank(preset: str) -> int:
    """Where ``preset`` starts in a study: its place in LONGEST_FIRST, else after them."""
    return LONGEST_FIRST.index(preset) if preset in LONGEST_FIRST else len(LONGEST_FIRST)


def run_study(study: Study, jobs: int = 2, overrides: Sequence[str] = ()) -> StudyOutcome:
    """Run the members of ``study`` (:func:`multirun_command`), log their summary to the
    parent run (:func:`~chordrec.sweep_report.log_sweep_summary`), then build Table 5
    from them, log it to the parent run as ``table5.md`` and end the parent run: FINISHED if
    every member finished and the table is complete, else FAILED. A failed member does
    not stop the others."""
    started = time.monotonic()
    code = subprocess.call(
        multirun_command(study, jobs, overrides),
        env={**os.environ, "MLFLOW_TRACKING_URI": study.tracking_uri},
    )
    wall = time.monotonic() - started
    runs = [
        r
        for r in tracking.find_runs(study.experiment, study.study_id)
        if r.tags.get("kind") != "study"
    ]
    failed = [r for r in runs if r.status != "FINISHED"]
    log_sweep_summary(study.parent_run_id)
    problems = [
        f"study {study.study_id}: run {r.run_id} (preset {r.tags.get('preset')}) ended "
        f"{r.status}: {r.tags.get('error', 'no error recorded')}"
        for r in failed
    ]
    try:
        text = table5_text(runs, study.presets, "md")
    except IncompleteTableError as exc:
        problems.append(f"study {study.study_id}: incomplete table: {exc}")
        tracking.end_parent_run(study.parent_run_id, succeeded=False)
        return StudyOutcome("", tuple(problems), succeeded=False)
    text += f"\nStudy {study.study_id}: wall time {wall / 60:.1f} min.\n"
    tracking.log_text_to_run(study.parent_run_id, text, f"{TABLE_ARTIFACT}.md")
    succeeded = not failed and code == 0
    tracking.end_parent_run(study.parent_run_id, succeeded=succeeded)
    return StudyOutcome(text, tuple(problems), succeeded)


def publish_table(
    *,
    experiment: str = EXPERIMENT,
    study_id: str | None = None,
    per_run: bool = False,
    fmt: str = "md",
    out: Path | None = None,
    store: Path = STORE_DIR,
    tracking_uri: str | None = None,
) -> PublishedTable:
    """Build a table from the runs of ``experiment`` (only study ``study_id``'s if
    given): Table 5, or with ``per_run`` one row per FINISHED run. Log it as an artifact
    of the study's parent run if there is one, else of a new run tagged ``kind=table``,
    and write it to ``out`` (atomically, replacing a file there) if given.

    MLflow is pointed at ``tracking_uri``, else $MLFLOW_TRACKING_URI, else ``store``.
    Raises :class:`~chordrec.report.tables.IncompleteTableError` naming the run and the
    metric if a cell cannot be filled; nothing is logged or written then."""
    tracking.configure(store, tracking_uri)
    runs = tracking.find_runs(experiment, study_id)
    if per_run:
        text = render(build_run_table(runs), fmt)
    else:
        text = table5_text(runs, PRESETS, fmt)
    kind = RUN_TABLE_ARTIFACT if per_run else TABLE_ARTIFACT
    artifact = f"{kind}.{fmt}"
    parents = [r for r in runs if r.tags.get("kind") == "study"]
    if parents:
        tracking.log_text_to_run(parents[0].run_id, text, artifact)
        logged_in = f"study run {parents[0].run_id}"
    else:
        name = f"{kind} {study_id or experiment}"
        run_id = tracking.create_run_with_text(experiment, name, text, artifact, {"kind": "table"})
        logged_in = f"run {run_id}"
    if out:
        write_atomic(Path(out), lambda tmp: tmp.write_text(text), force=True)
    return PublishedTable(text, artifact, logged_in)
