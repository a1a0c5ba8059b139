"""A sweep's summary on its parent run: what it found, at a glance.

When a sweep ends (:class:`chordrec.sweeps.SweepParentRun`, any sweeper or launcher) or a
study does (:func:`chordrec.study.run_study`), :func:`log_sweep_summary` reads the
parent run's children from MLflow as :class:`~chordrec.report.sweep_summary.SweepRun`
values (the settings that vary between them, objective, test score, ``val/acc`` per
epoch, how each ended), summarises them (:mod:`chordrec.report.sweep_summary`) and logs
to the parent:

- ``summary.md`` (:data:`SUMMARY`): the best run, the factors ranked by effect, each
  level's mean ± standard deviation, whether the winner's lead exceeds the seed spread;
- ``figures/learning_curves.png`` and ``figures/factors.png``
  (:mod:`chordrec.report.sweep_figures`), and ``figures/tradeoff.png`` (RWC-Pop test
  accuracy against out-of-domain majmin, a point per run) when the runs were scored out
  of domain;
- for an Optuna study (parent tags ``optuna_study`` and ``optuna_storage``), its
  history and fANOVA importance (:mod:`chordrec.tuning`), which also ranks the factors:
  ``figures/optimization_history.png``, ``figures/param_importances.png``;
- metrics ``sweep/best_value``, ``sweep/runs_finished``, ``sweep/runs_failed``
  (failed or killed), ``sweep/runs_pruned`` at the step of the number of runs, and the
  tag ``sweep.best_run_id``.

The artifacts keep their names, so a sweep relaunched into the same directory, or a
second worker of a study, replaces them with the summary of every run so far.
``chordrec sweep show`` prints the same summary (:func:`find_sweep`,
:func:`build_report`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chordrec import tracking, tuning
from chordrec.errors import UserError
from chordrec.report import sweep_figures, tables
from chordrec.report.sweep_summary import (
    CURVE_METRIC,
    FAILED,
    FINISHED,
    KILLED,
    OBJECTIVE,
    OOD_SCORES,
    PRUNED,
    TEST_SCORE,
    SweepRun,
    SweepSummary,
    render_markdown,
    summarize_sweep,
)

log = logging.getLogger(__name__)

SUMMARY = "summary.md"
LEARNING_CURVES = "figures/learning_curves.png"
FACTORS = "figures/factors.png"
HISTORY = "figures/optimization_history.png"
IMPORTANCE = "figures/param_importances.png"
TRADEOFF = "figures/tradeoff.png"
BEST_RUN_TAG = "sweep.best_run_id"


@dataclass(frozen=True)
class OptunaView:
    """An Optuna study's side of a sweep: its name, trials and fANOVA importances (None
    when too few trials completed)."""

    study: str
    trials: list[tuning.TrialPoint]
    importances: dict[str, float] | None


@dataclass(frozen=True)
class SweepReport:
    """A sweep's parent run, its summary and, for an Optuna study, the study's view."""

    parent: tracking.RunRecord
    summary: SweepSummary
    optuna: OptunaView | None

    @property
    def markdown(self) -> str:
        """The summary as ``summary.md`` holds it."""
        text = render_markdown(self.summary, f"Sweep summary: {self.parent.run_name}")
        if self.optuna is None:
            return text
        counts = tuning.state_counts(self.optuna.trials)
        said = ", ".join(f"{n} {state}" for state, n in counts.items())
        ranked = (
            "factors ranked by its fANOVA importance"
            if self.optuna.importances
            else "no fANOVA importance yet (fewer than two complete trials)"
        )
        return (
            f"{text}\n## Optuna study {self.optuna.study}\n\n"
            f"{len(self.optuna.trials)} trials: {said}; {ranked}.\n"
        )


def sweep_runs(parent_run_id: str) -> list[SweepRun]:
    """The runs nested under ``parent_run_id``, oldest first, as plain records."""
    children = sorted(tracking.find_runs(parent_run_id=parent_run_id), key=lambda r: r.start_time)
    factors = tables.run_factors(children) if children else {}
    return [
        SweepRun(
            run_id=r.run_id,
            name=r.run_name,
            status=r.status,
            factors=factors[r.run_id],
            objective=r.metrics.get(OBJECTIVE),
            test_score=r.metrics.get(TEST_SCORE),
            curve=tracking.metric_steps(r.run_id, CURVE_METRIC),
            pruned=r.tags.get("pruned") == "true",
            **_ood_score(r.metrics),
        )
        for r in children
    ]


def _ood_score(metrics: Mapping[str, float]) -> dict[str, Any]:
    """A run's out-of-domain score as :class:`SweepRun` fields: the first of
    :data:`OOD_SCORES` among ``metrics``, if any."""
    for name in OOD_SCORES:
        if name in metrics:
            return {"ood_metric": name, "ood_score": metrics[name]}
    return {}


def optuna_view(parent: tracking.RunRecord) -> OptunaView | None:
    """The Optuna study a parent run names (tags ``optuna_study``, ``optuna_storage``),
    or None: for a sweep that is not a study, or one whose storage cannot be read from
    here (said in a warning)."""
    name, storage = parent.tags.get("optuna_study"), parent.tags.get("optuna_storage")
    if not name or not storage:
        return None
    try:
        study = tuning.load_study(storage, name, f"tags of MLflow run {parent.run_id}")
    except UserError as exc:  # a missing [tune] extra, a storage on another machine
        log.warning("sweep summary without the Optuna study's view: %s", exc)
        return None
    return OptunaView(name, tuning.trial_points(study), tuning.param_importances(study))


def build_report(parent: tracking.RunRecord) -> SweepReport:
    """The summary of sweep ``parent``'s runs as MLflow holds them now."""
    runs = sweep_runs(parent.run_id)
    optuna = optuna_view(parent)
    summary = summarize_sweep(runs, optuna.importances if optuna else None)
    return SweepReport(parent, summary, optuna)


def log_sweep_summary(parent_run_id: str) -> SweepSummary:
    """Summarise the runs under ``parent_run_id`` and log the summary, figures, metrics
    and tag to it (see the module); returns the summary."""
    (parent,) = tracking.runs_by_id([parent_run_id])
    report = build_report(parent)
    summary = report.summary
    tracking.log_text_to_run(parent_run_id, report.markdown, SUMMARY)
    figures = {
        LEARNING_CURVES: sweep_figures.learning_curves_figure(summary),
        FACTORS: sweep_figures.factor_figure(summary),
    }
    tradeoff = sweep_figures.tradeoff_figure(summary)
    if tradeoff is not None:
        figures[TRADEOFF] = tradeoff
    if report.optuna is not None:
        study = report.optuna.study
        figures[HISTORY] = sweep_figures.history_figure(report.optuna.trials, study)
        figures[IMPORTANCE] = sweep_figures.importance_figure(
            report.optuna.importances or {}, study
        )
    for name, figure in figures.items():
        tracking.log_figure_to_run(parent_run_id, figure, name)
    counts = summary.counts
    metrics: dict[str, float] = {
        "sweep/runs_finished": counts[FINISHED],
        "sweep/runs_failed": counts[FAILED] + counts[KILLED],
        "sweep/runs_pruned": counts[PRUNED],
    }
    if summary.best is not None and summary.best.objective is not None:
        metrics["sweep/best_value"] = summary.best.objective
        tracking.set_run_tags(parent_run_id, {BEST_RUN_TAG: summary.best.run_id})
    tracking.log_metrics_to_run(parent_run_id, metrics, step=len(summary.runs))
    return summary


def find_sweep(sweep: str, experiment: str) -> tracking.RunRecord:
    """The parent run of ``sweep``: a sweep id (tag ``sweep_id``) in ``experiment``, or
    the id of a parent run (a sweep's or a study's); :class:`~chordrec.tracking.TrackingError`
    naming ``sweep`` when it is neither, or when no run nests under it."""
    parent_id = tracking.find_sweep_parent(experiment, sweep) if sweep.isalnum() else None
    missing = tracking.TrackingError(
        f"no sweep {sweep!r}: neither a sweep id in experiment {experiment!r} nor the id of "
        f"a parent run in {tracking.current_uri()}"
    )
    try:
        (parent,) = tracking.runs_by_id([parent_id or sweep])
    except tracking.TrackingError:
        raise missing from None
    if not tracking.find_runs(parent_run_id=parent.run_id):
        raise missing
    return parent


def top_run_ids(summary: SweepSummary, count: int = 5) -> list[str]:
    """The ids of the ``count`` best scored runs, best first."""
    return [r.run_id for r in summary.ranked_runs() if r.scored][:count]


def links(report: SweepReport, base_url: str) -> Mapping[str, str]:
    """The MLflow UI's pages of ``report``'s sweep at ``base_url``: its parent run and the
    compare view of its top five runs (when any run is scored)."""
    experiment = report.parent.experiment_id
    found = {"parent run": tracking.run_url(base_url, experiment, report.parent.run_id)}
    top = top_run_ids(report.summary)
    if top:
        found["top five runs compared"] = tracking.compare_url(base_url, top, [experiment])
    return found
