"""A sweep's figures: its runs' learning curves, the objective against each factor, and
an Optuna study's history and parameter importance, and the trade-off between RWC-Pop
test accuracy and out-of-domain majmin.

Like :mod:`chordrec.report.figures` (the other module that uses matplotlib), every
function builds a standalone :class:`matplotlib.figure.Figure` without ``pyplot``'s
global state and returns it; callers save or log it. The inputs are plain data: a
:class:`~chordrec.report.sweep_summary.SweepSummary` and an Optuna study's
:class:`~chordrec.tuning.TrialPoint` values and importances. A run that did not finish
(failed, killed, pruned or still running) is drawn dashed or as a cross, at the best
``val/acc`` it reached.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from chordrec.report.sweep_summary import (
    CURVE_METRIC,
    MAX_LEVELS,
    OBJECTIVE,
    SEED,
    TEST_SCORE,
    SweepRun,
    SweepSummary,
    setting_text,
)
from chordrec.tuning import TrialPoint, state_counts

__all__ = [
    "factor_figure",
    "importance_figure",
    "learning_curves_figure",
    "history_figure",
    "tradeoff_figure",
]

_PANELS_PER_ROW = 3
_UNFINISHED_COLOR = "tab:red"
_MEAN_COLOR = "black"
_BEST_COLOR = "black"
_CATEGORY_COLORS = colormaps["tab10"].colors
_SCALE = colormaps["viridis"]


# ---------------------------------------------------------------- learning curves


def learning_curves_figure(summary: SweepSummary) -> Figure:
    """Every run's ``val/acc`` per epoch in one chart, coloured by the level of the
    factor with the largest effect (a colour scale for a numeric factor with many
    values), the best run drawn thick and black with a star at its best epoch; runs that did not
    finish are dashed and end in a cross."""
    fig = Figure(figsize=(9.0, 5.0), layout="constrained")
    ax = fig.subplots()
    factor = summary.top_factor
    colour = _colours(summary.runs, factor.name if factor else None, fig, ax)
    best_id = summary.best.run_id if summary.best else None
    drawn = False
    for run in summary.runs:
        if not run.curve or run.run_id == best_id:
            continue
        epochs, values = _curve(run)
        style = "-" if run.scored else "--"
        ax.plot(epochs, values, style, color=colour(run), linewidth=1.3, alpha=0.85)
        if not run.scored:
            ax.plot(epochs[-1], values[-1], "x", color=colour(run), markersize=7)
        drawn = True
    handles = []
    if summary.best is not None and summary.best.curve:
        epochs, values = _curve(summary.best)
        ax.plot(epochs, values, "-", color=_BEST_COLOR, linewidth=2.8, zorder=3)
        top = int(np.nanargmax(values))
        ax.plot(
            epochs[top],
            values[top],
            "*",
            color="gold",
            markersize=16,
            zorder=4,
            markeredgecolor="black",
        )
        handles.append(
            Line2D(
                [],
                [],
                color=_BEST_COLOR,
                linewidth=2.8,
                marker="*",
                markerfacecolor="gold",
                markeredgecolor="black",
                markersize=12,
                label=f"best run: {summary.best.name}",
            )
        )
        drawn = True
    if any(not r.scored and r.curve for r in summary.runs):
        handles.append(
            Line2D([], [], linestyle="--", marker="x", color="0.4", label="dashed: did not finish")
        )
    if factor is not None and not _is_scale(summary.runs, factor.name):
        for level in _levels(summary.runs, factor.name):
            handles.append(
                Line2D(
                    [],
                    [],
                    color=colour.level(level),
                    linewidth=2,
                    label=f"{factor.name}={setting_text(level)}",
                )
            )
    if not drawn:
        ax.text(
            0.5, 0.5, "no run logged an epoch", ha="center", va="center", transform=ax.transAxes
        )
    if handles:
        ax.legend(handles=handles, fontsize="small", loc="best")
    title = "Validation accuracy per epoch"
    ax.set_title(f"{title}, coloured by {factor.name}" if factor else title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(CURVE_METRIC)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.grid(True, alpha=0.3)
    return fig


def _curve(run: SweepRun) -> tuple[np.ndarray, np.ndarray]:
    steps = sorted(run.curve)
    return np.array(steps), np.array([run.curve[s] for s in steps], dtype=float)


class _Colours:
    """A run's colour: by its level of one factor, on a scale or from a palette."""

    def __init__(self, name: str | None, levels: Sequence[str], scale: Normalize | None):
        self.name, self.levels, self.scale = name, list(levels), scale

    def level(self, level: str) -> tuple[float, ...]:
        if self.scale is not None:
            return _SCALE(self.scale(float(level)))
        index = self.levels.index(level) if level in self.levels else 0
        return _CATEGORY_COLORS[index % len(_CATEGORY_COLORS)]

    def __call__(self, run: SweepRun) -> tuple[float, ...]:
        if self.name is None:
            return _CATEGORY_COLORS[0]
        return self.level(run.factors.get(self.name, "-"))


def _colours(runs: Sequence[SweepRun], name: str | None, fig: Figure, ax: Axes) -> _Colours:
    """Colours by factor ``name``: a colour scale (with its colour bar) when its values
    are numbers too many for a palette, else one palette colour per level."""
    if name is None:
        return _Colours(None, [], None)
    levels = _levels(runs, name)
    if not _is_scale(runs, name):
        return _Colours(name, levels, None)
    values = [float(v) for v in levels]
    norm_type = LogNorm if min(values) > 0 and max(values) / min(values) >= 100 else Normalize
    scale = norm_type(min(values), max(values))
    fig.colorbar(ScalarMappable(norm=scale, cmap=_SCALE), ax=ax, label=name)
    return _Colours(name, levels, scale)


def _is_scale(runs: Sequence[SweepRun], name: str) -> bool:
    """Whether runs are coloured on a scale of factor ``name``: a numeric axis in the
    factors figure (:func:`_numeric_axis`), or numbers too many for the palette."""
    levels = _levels(runs, name)
    many = len(levels) > len(_CATEGORY_COLORS) and all(_is_number(v) for v in levels)
    return many or _numeric_axis(levels)


def _levels(runs: Sequence[SweepRun], name: str) -> list[str]:
    """The values factor ``name`` takes in ``runs``: in numeric order if all are numbers."""
    found = {r.factors.get(name, "-") for r in runs}
    if all(_is_number(v) for v in found):
        return sorted(found, key=float)
    return sorted(found)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# ---------------------------------------------------------------- factors


def factor_figure(summary: SweepSummary) -> Figure:
    """The objective against each factor, one panel per factor in ranked order: a point
    per run (a cross at the best ``val/acc`` reached for a run that did not finish), and
    beside each level the mean ± standard deviation across seeds of each configuration
    that ran with two or more. A factor of fractional numbers (or of more than
    :data:`~chordrec.report.sweep_summary.MAX_LEVELS` numbers) is a numeric axis (log
    scale over two decades or more); other factors are evenly spaced levels. Without a
    factor, one panel of the runs by seed (or in the order they ran)."""
    panels: list[str | None] = [f.name for f in summary.factors] or [None]
    columns = min(len(panels), _PANELS_PER_ROW)
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.4 * columns, 3.8 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharey=True, squeeze=False)).ravel()
    effects = {f.name: f for f in summary.factors}
    drawn: set[str] = set()
    for ax, name in zip(axes, panels, strict=False):
        drawn |= _factor_panel(ax, summary, name)
        factor = effects.get(name) if name else None
        ax.set_title(f"{name}\n({factor.effect})" if factor else "no factor varies: each run")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(OBJECTIVE)
    fig.suptitle(f"{OBJECTIVE} by factor ({summary.counts['finished']} finished runs)")
    legend = [handle for key, handle in _factor_legend().items() if key in drawn]
    if legend:
        fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize="small")
    return fig


def _factor_legend() -> dict[str, Line2D]:
    """The legend entries of the factors figure, by what they stand for."""
    return {
        "best": Line2D(
            [],
            [],
            marker="*",
            color="gold",
            markeredgecolor="black",
            linestyle="none",
            markersize=11,
            label="best run",
        ),
        "finished": Line2D(
            [], [], marker="o", color=_CATEGORY_COLORS[0], linestyle="none", label="finished run"
        ),
        "spread": Line2D(
            [],
            [],
            marker="_",
            color=_MEAN_COLOR,
            linestyle="none",
            markersize=10,
            label="mean ± std across seeds",
        ),
        "unfinished": Line2D(
            [],
            [],
            marker="x",
            color=_UNFINISHED_COLOR,
            linestyle="none",
            label="did not finish: best val/acc reached",
        ),
    }


def _factor_panel(ax: Axes, summary: SweepSummary, name: str | None) -> set[str]:
    """Draw the runs against factor ``name`` (None: each run) on ``ax``; returns the
    legend entries it used (keys of :func:`_factor_legend`)."""
    runs = [r for r in summary.runs if r.best_epoch_value is not None]
    key = name or (SEED if any(SEED in r.factors for r in runs) else None)
    where: dict[str, float] = {}
    if key is None:
        x_of = {r.run_id: float(i) for i, r in enumerate(runs)}
        labels = [r.name or r.run_id[:8] for r in runs]
        ax.set_xticks(list(x_of.values()), labels, rotation=30, ha="right", fontsize=7)
    else:
        levels = _levels(runs, key) if runs else []
        if _numeric_axis(levels):
            values = [float(v) for v in levels]
            if min(values) > 0 and max(values) / min(values) >= 100:
                ax.set_xscale("log")
            x_of = {r.run_id: float(r.factors.get(key, "nan")) for r in runs}
        else:
            where = {level: float(i) for i, level in enumerate(levels)}
            x_of = {r.run_id: where[r.factors.get(key, "-")] for r in runs}
            ax.set_xticks(list(where.values()), levels, fontsize=8)
        ax.set_xlabel(key)
    drawn = set()
    if where and _seed_spreads(ax, runs, key or SEED, where, [f.name for f in summary.factors]):
        drawn.add("spread")
    best = summary.best.run_id if summary.best else None
    for run in runs:
        x, y = x_of[run.run_id], run.best_epoch_value
        if run.run_id == best:
            ax.plot(x, y, "*", color="gold", markeredgecolor="black", markersize=14, zorder=4)
            drawn.add("best")
        elif run.scored:
            ax.plot(x, y, "o", color=_CATEGORY_COLORS[0], alpha=0.75, markersize=6)
            drawn.add("finished")
        else:
            ax.plot(x, y, "x", color=_UNFINISHED_COLOR, markersize=8)
            drawn.add("unfinished")
    if not runs:
        ax.text(0.5, 0.5, "no run has a value", ha="center", va="center", transform=ax.transAxes)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.grid(True, alpha=0.3)
    return drawn


def _numeric_axis(levels: Sequence[str]) -> bool:
    """Whether a factor of these levels is drawn on a numeric axis: numbers with a
    fraction, or more numbers than :data:`MAX_LEVELS` (integers such as lengths are
    evenly spaced levels otherwise)."""
    if len(levels) < 2 or not all(_is_number(v) for v in levels):
        return False
    return len(levels) > MAX_LEVELS or not all(float(v).is_integer() for v in levels)


def _seed_spreads(
    ax: Axes, runs: Sequence[SweepRun], key: str, where: Mapping[str, float], names: Sequence[str]
) -> bool:
    """Beside each level of factor ``key``: the mean ± standard deviation across seeds of
    each configuration (the runs' values of every factor ``names``) with two or more
    finished runs, side by side; whether there was any."""
    groups: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    for run in runs:
        if run.scored and run.objective is not None:
            configuration = tuple(run.factors.get(n, "-") for n in names)
            groups.setdefault((run.factors.get(key, "-"), configuration), []).append(run.objective)
    placed: dict[str, int] = {}
    for (level, _), values in sorted(groups.items()):
        if len(values) < 2:
            continue
        offset = 0.15 + 0.1 * placed.get(level, 0)
        placed[level] = placed.get(level, 0) + 1
        ax.errorbar(
            where[level] + offset,
            float(np.mean(values)),
            yerr=float(np.std(values, ddof=1)),
            fmt="_",
            color=_MEAN_COLOR,
            capsize=4,
            markersize=12,
            zorder=3,
        )
    return bool(placed)


# ---------------------------------------------------------------- Optuna


def history_figure(trials: Sequence[TrialPoint], study: str) -> Figure:
    """An Optuna study's optimisation history: each complete trial's objective, the best
    so far as a step line, each pruned trial's last reported value as a grey cross, and
    failed or unfinished trials as ticks along the bottom; the counts in the title."""
    fig = Figure(figsize=(9.0, 4.6), layout="constrained")
    ax = fig.subplots()
    complete = [t for t in trials if t.state == "complete" and t.value is not None]
    pruned = [t for t in trials if t.state == "pruned" and t.value is not None]
    other = [t for t in trials if t.state not in ("complete", "pruned")]
    if complete:
        numbers = [t.number for t in complete]
        values = [t.value for t in complete]
        ax.plot(numbers, values, "o", color=_CATEGORY_COLORS[0], label="complete trial")
        ax.step(
            numbers,
            np.maximum.accumulate(values),
            where="post",
            color="tab:orange",
            label="best so far",
        )
    if pruned:
        ax.plot(
            [t.number for t in pruned],
            [t.value for t in pruned],
            "x",
            color="0.45",
            markersize=8,
            label="pruned (last value reported)",
        )
    if other:
        ax.plot(
            [t.number for t in other],
            [0.02] * len(other),
            "|",
            color=_UNFINISHED_COLOR,
            markersize=14,
            transform=ax.get_xaxis_transform(),
            label="failed or running",
        )
    counts = state_counts(trials)
    said = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials"
    ax.set_title(f"Optuna study {study}: optimisation history ({said})")
    ax.set_xlabel("trial")
    ax.set_ylabel(OBJECTIVE)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.grid(True, alpha=0.3)
    if trials:
        ax.legend(fontsize="small", loc="best")
    return fig


def importance_figure(importances: Mapping[str, float], study: str) -> Figure:
    """Optuna's fANOVA importance of each searched parameter as horizontal bars, the
    most important on top."""
    ranked = sorted(importances.items(), key=lambda item: item[1])
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * max(len(ranked), 1)), layout="constrained")
    ax = fig.subplots()
    if ranked:
        names, values = zip(*ranked, strict=True)
        bars = ax.barh(list(names), list(values), color=_CATEGORY_COLORS[0])
        ax.bar_label(bars, fmt="%.2f", padding=3, fontsize="small")
    else:
        ax.text(
            0.5,
            0.5,
            "not computed: too few complete trials",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"fANOVA importance for {OBJECTIVE}")
    ax.set_title(f"Optuna study {study}: parameter importance")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def tradeoff_figure(summary: SweepSummary) -> Figure | None:
    """RWC-Pop test accuracy (``test/frame_acc``) against out-of-domain majmin, one point
    per finished run that has both, coloured by the level of the factor with the largest
    effect and labelled with the run's factors, the best run (by the objective) a star;
    None when no run has both."""
    runs = [
        r for r in summary.runs if r.scored and r.test_score is not None and r.ood_score is not None
    ]
    if not runs:
        return None
    fig = Figure(figsize=(8.0, 5.5), layout="constrained")
    ax = fig.subplots()
    factor = summary.top_factor
    colour = _colours(summary.runs, factor.name if factor else None, fig, ax)
    best_id = summary.best.run_id if summary.best else None
    for run in runs:
        best = run.run_id == best_id
        ax.plot(
            run.ood_score,
            run.test_score,
            "*" if best else "o",
            color="gold" if best else colour(run),
            markeredgecolor="black" if best else "none",
            markersize=16 if best else 8,
            zorder=3 if best else 2,
        )
        label = ", ".join(f"{k}={setting_text(v)}" for k, v in run.factors.items())
        ax.annotate(
            label or run.name,
            (run.ood_score, run.test_score),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize="x-small",
        )
    if factor is not None and not _is_scale(summary.runs, factor.name):
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color=colour.level(level),
                label=f"{factor.name}={setting_text(level)}",
            )
            for level in _levels(runs, factor.name)
        ]
        ax.legend(handles=handles, fontsize="small", loc="best")
    metrics = sorted({r.ood_metric for r in runs if r.ood_metric})
    ax.set_xlabel(" / ".join(metrics) + " (out of domain)")
    ax.set_ylabel(f"{TEST_SCORE} (RWC-Pop)")
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_title(f"RWC-Pop test accuracy against out-of-domain majmin ({len(runs)} runs)")
    ax.grid(True, alpha=0.3)
    return fig
