"""What a sweep found, from its runs as plain records: the best run, the factors ranked by
their effect on the objective, each level's mean and spread, and whether the winner's
lead is larger than the seed-to-seed spread.

Pure: :func:`summarize_sweep` takes :class:`SweepRun` values (built from MLflow by
:mod:`chordrec.sweep_report`) and returns a :class:`SweepSummary`;
:func:`render_markdown` writes it as the parent run's ``summary.md`` and as ``chordrec
sweep show`` prints it. The objective is a run's ``val/frame_acc`` (what a sweep
maximises, :func:`chordrec.train.run`); accuracies are shown in %, differences in points.

A factor is a setting whose value differs between the sweep's runs (``seed`` is the
replicate, not a factor). Configurations are the runs' values of every factor; runs of
one configuration that differ in seed are its replicates, and the seed spread is their
pooled standard deviation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OBJECTIVE = "val/frame_acc"
"""The metric a sweep maximises: the run's best validation frame accuracy."""

TEST_SCORE = "test/frame_acc"
"""The test score shown beside the objective."""

CURVE_METRIC = "val/acc"
"""The per-epoch metric of the learning curves."""

OOD_SCORES = ("ood_test/majmin", "ood_val/majmin")
"""The out-of-domain score of a run's trade-off point, first found first: the test part's
majmin, else the validation part's (:mod:`chordrec.ood`)."""

SEED = "seed"
"""The setting whose values are replicates of one configuration, not a factor."""

MAX_LEVELS = 12
"""A factor with more distinct values (e.g. a learning rate an Optuna search sampled) is
summarised by its range, not level by level."""

FINISHED, PRUNED, FAILED, KILLED, RUNNING = "finished", "pruned", "failed", "killed", "running"
OUTCOMES = (FINISHED, PRUNED, FAILED, KILLED, RUNNING)
"""How a run of a sweep stands, from its MLflow status and ``pruned`` tag."""

_OUTCOME_OF_STATUS = {"FINISHED": FINISHED, "FAILED": FAILED, "KILLED": KILLED}


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep as plain data: its MLflow ``status``, the values of the
    settings that vary between the sweep's runs (``factors``), its ``objective`` and
    ``test_score`` (None when it lacks them), its ``curve`` (epoch → ``val/acc``),
    whether a pruner stopped it, and its out-of-domain score."""

    run_id: str
    name: str
    status: str
    factors: Mapping[str, str]
    objective: float | None
    test_score: float | None
    curve: Mapping[int, float]
    pruned: bool = False
    ood_score: float | None = None
    """Its out-of-domain majmin (the first of :data:`OOD_SCORES` it logged), if any."""
    ood_metric: str | None = None
    """The name of that metric."""

    @property
    def outcome(self) -> str:
        """One of :data:`OUTCOMES`: a pruned run is KILLED on purpose; any status
        other than FINISHED, FAILED and KILLED counts as running."""
        if self.pruned:
            return PRUNED
        return _OUTCOME_OF_STATUS.get(self.status, RUNNING)

    @property
    def scored(self) -> bool:
        """Whether the run finished with an objective (the runs every statistic uses)."""
        return self.outcome == FINISHED and _finite(self.objective)

    @property
    def best_epoch_value(self) -> float | None:
        """The run's objective if it is scored, else its best logged ``val/acc`` (what an
        unfinished run reached), else None."""
        if self.scored:
            return self.objective
        values = [v for v in self.curve.values() if _finite(v)]
        return max(values) if values else None


@dataclass(frozen=True)
class LevelStats:
    """A factor's level: the mean and sample standard deviation (None for one run) of
    the objective over the scored runs at that level, and their number."""

    level: str
    mean: float
    std: float | None
    runs: int


@dataclass(frozen=True)
class FactorEffect:
    """A factor and its effect on the objective: ``importance`` (Optuna's fANOVA) when
    the sweep is an Optuna study that rated it, else None; ``spread``, the range of its
    level means; its levels (numeric ones in numeric order) and whether they are
    numbers."""

    name: str
    importance: float | None
    spread: float
    levels: tuple[LevelStats, ...]
    numeric: bool

    @property
    def effect(self) -> str:
        """The effect in words, as ranked."""
        if self.importance is not None:
            return f"fANOVA importance {self.importance:.2f}"
        if not self.levels:
            return "no finished run to compare"
        return f"level means span {_points(self.spread)}"


@dataclass(frozen=True)
class Configuration:
    """One configuration's factor values (``label``) and its objective over its scored
    runs (the seeds): mean, sample standard deviation (None for one run), count."""

    label: str
    mean: float
    std: float | None
    runs: int


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`summarize_sweep` found (see the module)."""

    runs: tuple[SweepRun, ...]
    counts: Mapping[str, int]
    """Runs per outcome (every key of :data:`OUTCOMES`)."""
    best: SweepRun | None
    """The scored run with the highest objective."""
    factors: tuple[FactorEffect, ...]
    """Ranked, largest effect first."""
    configurations: tuple[Configuration, ...]
    """Best mean first."""
    seed_spread: float | None
    """The pooled standard deviation of the objective across seeds of one configuration;
    None when no configuration has two scored runs."""
    verdict: str

    @property
    def top_factor(self) -> FactorEffect | None:
        """The factor with the largest effect, if any."""
        return self.factors[0] if self.factors else None

    def ranked_runs(self) -> list[SweepRun]:
        """Scored runs, best objective first, then the others as they started."""
        scored = sorted((r for r in self.runs if r.scored), key=lambda r: -(r.objective or 0))
        return scored + [r for r in self.runs if not r.scored]


def summarize_sweep(
    runs: Sequence[SweepRun], importance: Mapping[str, float] | None = None
) -> SweepSummary:
    """Summarise the sweep of ``runs`` (in the order they started). ``importance`` maps
    a factor to Optuna's fANOVA importance (an Optuna study's): factors it rates are
    ranked by it, the others after them by the spread of their level means."""
    counts = {outcome: 0 for outcome in OUTCOMES}
    for run in runs:
        counts[run.outcome] += 1
    scored = [r for r in runs if r.scored]
    best = max(scored, key=lambda r: r.objective or 0.0, default=None)
    names = sorted({k for r in runs for k in r.factors if k != SEED})
    factors = [_factor(name, scored, (importance or {}).get(name)) for name in names]
    factors.sort(key=lambda f: (f.importance is None, -(f.importance or 0.0), -f.spread, f.name))
    groups = _replicates(scored, names)
    configurations = _configurations(groups)
    seed_spread = _pooled_std(groups)
    return SweepSummary(
        runs=tuple(runs),
        counts=counts,
        best=best,
        factors=tuple(factors),
        configurations=tuple(configurations),
        seed_spread=seed_spread,
        verdict=_verdict(configurations, seed_spread, counts, len(runs)),
    )


def _factor(name: str, scored: Sequence[SweepRun], importance: float | None) -> FactorEffect:
    by_level: dict[str, list[float]] = {}
    for run in scored:
        by_level.setdefault(run.factors.get(name, "-"), []).append(float(run.objective or 0.0))
    numeric = bool(by_level) and all(_number(level) is not None for level in by_level)
    order = sorted(by_level, key=lambda v: (_number(v) or 0.0, v) if numeric else (0.0, v))
    levels = tuple(
        LevelStats(level, statistics.fmean(v), _std(v), len(v))
        for level, v in ((level, by_level[level]) for level in order)
    )
    means = [s.mean for s in levels]
    spread = max(means) - min(means) if means else 0.0
    return FactorEffect(name, importance, spread, levels, numeric)


def _configuration_label(run: SweepRun, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={run.factors.get(n, '-')}" for n in names) or "the one configuration"


def _replicates(scored: Sequence[SweepRun], names: Sequence[str]) -> dict[str, list[float]]:
    """The objectives of ``scored`` grouped by configuration (their values of ``names``)."""
    groups: dict[str, list[float]] = {}
    for run in scored:
        label = ", ".join(f"{n}={setting_text(run.factors.get(n, '-'))}" for n in names)
        groups.setdefault(label or "the one configuration", []).append(float(run.objective or 0.0))
    return groups


def _configurations(groups: Mapping[str, Sequence[float]]) -> list[Configuration]:
    found = [Configuration(k, statistics.fmean(v), _std(v), len(v)) for k, v in groups.items()]
    return sorted(found, key=lambda c: -c.mean)


def _pooled_std(groups: Mapping[str, Sequence[float]]) -> float | None:
    """The standard deviation across replicates, pooled over every configuration that
    has two or more scored runs; None when none has."""
    replicated = [v for v in groups.values() if len(v) > 1]
    freedom = sum(len(v) - 1 for v in replicated)
    squares = sum(statistics.variance(v) * (len(v) - 1) for v in replicated)
    return math.sqrt(squares / freedom) if freedom else None


def _verdict(
    configurations: Sequence[Configuration],
    seed_spread: float | None,
    counts: Mapping[str, int],
    total: int,
) -> str:
    """Whether the winner's lead over the runner-up exceeds the seed spread, in words."""
    if not configurations:
        return f"No run finished with a {OBJECTIVE} (of {total}): nothing to compare yet."
    winner = configurations[0]
    if len(configurations) == 1:
        if winner.runs == 1:
            return "One run finished: there is nothing to compare it with."
        return (
            f"One configuration ({winner.label}) ran {winner.runs} times: {OBJECTIVE} "
            f"{_percent(winner.mean)} ± {_points(winner.std or 0.0)} across seeds; "
            "there is no other configuration to compare it with."
        )
    runner_up = configurations[1]
    lead = winner.mean - runner_up.mean
    if lead == 0:
        return (
            f"The best configurations tie ({winner.label} and {runner_up.label}, "
            f"{_percent(winner.mean)}): the sweep does not separate them."
        )
    said = (
        f"The winner ({winner.label}, {_percent(winner.mean)}) leads the runner-up "
        f"({runner_up.label}, {_percent(runner_up.mean)}) by {_points(lead)}"
    )
    if seed_spread is None:
        return (
            f"{said}, but no configuration ran with more than one seed, so the seed-to-seed "
            "spread is unknown: sweep seeds too (e.g. seed=0,1,2) to tell a real lead from luck."
        )
    spread = f"the seed-to-seed spread (standard deviation {_points(seed_spread)})"
    if lead > seed_spread:
        return f"{said}, more than {spread}: the lead is larger than the noise between seeds."
    return (
        f"{said}, within {spread}: the lead may be noise; more seeds or a longer budget would tell."
    )


# ------------------------------------------------------------------------ markdown


def render_markdown(summary: SweepSummary, title: str) -> str:
    """``summary`` as Markdown headed ``title``: the best run, the counts, the verdict,
    the factors ranked with each level's mean ± standard deviation, and every run."""
    counts = summary.counts
    lines = [f"# {title}", ""]
    best = summary.best
    if best is None:
        lines.append("**Best run**: none yet (no run finished with an objective).")
    else:
        test = _percent(best.test_score) if _finite(best.test_score) else "-"
        lines.append(
            f"**Best run**: {best.name or '(unnamed)'} (`{best.run_id}`): {OBJECTIVE} "
            f"{_percent(best.objective)}, {TEST_SCORE} {test}."
        )
    lines += [
        "",
        "**Runs**: "
        + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES)
        + f" ({len(summary.runs)} in all).",
        "",
        f"**Verdict**: {summary.verdict}",
        "",
        f"## Factors, ranked by their effect on {OBJECTIVE}",
        "",
    ]
    if summary.factors:
        lines += ["| rank | factor | effect | levels: mean ± std (runs) |", "|---|---|---|---|"]
        for rank, factor in enumerate(summary.factors, start=1):
            lines.append(f"| {rank} | {factor.name} | {factor.effect} | {_levels(factor)} |")
    else:
        lines.append("No setting other than the seed varies between the runs.")
    if summary.seed_spread is not None:
        lines += [
            "",
            f"Seed-to-seed spread (pooled standard deviation): {_points(summary.seed_spread)}.",
        ]
    lines += ["", "## Runs", ""]
    names = [f.name for f in summary.factors]
    if any(SEED in r.factors for r in summary.runs):
        names.append(SEED)
    lines += [
        "| run | outcome | " + " | ".join([*names, f"{OBJECTIVE} %", f"{TEST_SCORE} %"]) + " |",
        "|---" * (4 + len(names)) + "|",
    ]
    for run in summary.ranked_runs():
        cells = [
            f"{run.name or '(unnamed)'} (`{run.run_id[:8]}`)",
            run.outcome + (" **best**" if best is not None and run.run_id == best.run_id else ""),
            *(setting_text(run.factors.get(n, "-")) for n in names),
            _number_cell(run.objective),
            _number_cell(run.test_score),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _levels(factor: FactorEffect) -> str:
    if not factor.levels:
        return "-"
    if len(factor.levels) > MAX_LEVELS:
        low, high = setting_text(factor.levels[0].level), setting_text(factor.levels[-1].level)
        span = f"{low} … {high}" if factor.numeric else "see the runs"
        return f"{len(factor.levels)} distinct values ({span})"
    return "; ".join(
        f"{setting_text(s.level)}: {_percent(s.mean)}"
        + (f" ± {_points(s.std)}" if s.std is not None else "")
        + f" ({s.runs})"
        for s in factor.levels
    )


def _number_cell(value: float | None) -> str:
    return f"{100 * value:.2f}" if _finite(value) else "-"


# ------------------------------------------------------------------------ helpers


def _percent(value: float | None) -> str:
    return f"{100 * (value or 0.0):.2f} %"


def _points(value: float) -> str:
    return f"{100 * value:.2f} points"


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def setting_text(value: str) -> str:
    """A factor's value as shown: a number with a fraction to 4 significant digits (an
    Optuna search samples floats to 17), anything else as it is."""
    number = _number(value)
    if number is None or number.is_integer():
        return value
    return f"{number:.4g}"


def _number(text: str) -> float | None:
    """``text`` as a number, or None when it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
