"""A sweep's summary and figures (chordrec.report.sweep_summary, .sweep_figures) on
generated runs: the ranking, the levels, the verdict, the runs that did not finish, and
sweeps too small or too plain to compare."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from chordrec.report.sweep_figures import (
    factor_figure,
    history_figure,
    importance_figure,
    learning_curves_figure,
    tradeoff_figure,
)
from chordrec.report.sweep_summary import (
    SweepRun,
    SweepSummary,
    render_markdown,
    summarize_sweep,
)
from chordrec.tuning import TrialPoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(n: int, factors: dict[str, str], objective: float | None, **changes) -> SweepRun:
    curve = {e: (objective or 0.3) * e / 3 for e in (1, 2, 3)}
    fields = dict(
        run_id=f"{n:032x}",
        name=f"run{n}",
        status="FINISHED",
        factors=factors,
        objective=objective,
        test_score=None if objective is None else objective - 0.02,
        curve=curve,
    )
    return SweepRun(**{**fields, **changes})


def _grid(
    model_effect: float, seeds: int, seed_noise: float, lengths: tuple[str, ...] = ("16", "64")
) -> list[SweepRun]:
    """model × seq_len × seed: model b better by ``model_effect``, seq_len by 0.02 per
    level, each seed off by ``seed_noise`` times (seed - mean seed)."""
    runs = []
    for n, (model, length, seed) in enumerate(itertools.product(("a", "b"), lengths, range(seeds))):
        value = 0.5 + model_effect * (model == "b") + 0.02 * lengths.index(length)
        value += seed_noise * (seed - (seeds - 1) / 2)
        factors = {"model": model, "seq_len": length}
        if seeds > 1:
            factors["seed"] = str(seed)
        runs.append(_run(n, factors, value))
    return runs


def _png(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=40)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_the_factor_that_matters_is_ranked_first_with_each_levels_mean_and_std():
    runs = _grid(model_effect=0.05, seeds=3, seed_noise=0.004)
    summary = summarize_sweep(runs)
    assert [f.name for f in summary.factors] == ["model", "seq_len"]  # seed is no factor
    model = summary.factors[0]
    assert model.importance is None and model.spread == pytest.approx(0.05)
    (a, b) = model.levels
    b_values = [r.objective for r in runs if r.factors["model"] == "b"]
    assert (b.level, b.runs) == ("b", 6)
    assert b.mean == pytest.approx(statistics.fmean(b_values))
    assert b.std == pytest.approx(statistics.stdev(b_values))
    assert summary.best is max(runs, key=lambda r: r.objective)
    assert summary.seed_spread == pytest.approx(0.004)  # the pooled std across seeds
    assert summary.configurations[0].label == "model=b, seq_len=64"
    assert "more than the seed-to-seed spread" in summary.verdict

    text = render_markdown(summary, "Sweep summary: grid")
    best = summary.best
    assert f"**Best run**: {best.name} (`{best.run_id}`): val/frame_acc" in text
    assert f"{100 * best.objective:.2f} %, test/frame_acc {100 * best.test_score:.2f} %" in text
    assert "| 1 | model | level means span 5.00 points |" in text
    assert f"b: {100 * b.mean:.2f} % ± {100 * b.std:.2f} points (6)" in text
    assert "12 finished, 0 pruned, 0 failed, 0 killed, 0 running (12 in all)" in text


def test_a_lead_within_the_seed_spread_is_called_possible_noise():
    summary = summarize_sweep(_grid(model_effect=0.001, seeds=3, seed_noise=0.05))
    assert "within the seed-to-seed spread" in summary.verdict
    assert "may be noise" in summary.verdict


def test_a_tie_is_called_a_tie():
    runs = [_run(0, {"model": "a"}, 0.5), _run(1, {"model": "b"}, 0.5)]
    assert "tie (model=a and model=b, 50.00 %)" in summarize_sweep(runs).verdict


def test_without_seeds_the_spread_is_unknown_and_said_so():
    summary = summarize_sweep(_grid(model_effect=0.05, seeds=1, seed_noise=0.0))
    assert summary.seed_spread is None
    assert "seed-to-seed spread is unknown" in summary.verdict


def test_optuna_importance_ranks_the_factors_it_rates_first():
    runs = _grid(model_effect=0.05, seeds=1, seed_noise=0.0)
    summary = summarize_sweep(runs, importance={"seq_len": 0.8, "model": 0.2})
    assert [(f.name, f.importance) for f in summary.factors] == [("seq_len", 0.8), ("model", 0.2)]
    assert "| 1 | seq_len | fANOVA importance 0.80 |" in render_markdown(summary, "t")


def test_runs_that_did_not_finish_are_counted_marked_and_drawn(tmp_path: Path):
    runs = [
        _run(0, {"model": "a"}, 0.52),
        _run(1, {"model": "b"}, 0.55),
        _run(2, {"model": "c"}, None, status="FAILED", curve={1: 0.2}),
        _run(3, {"model": "c"}, None, status="KILLED", pruned=True),
        _run(4, {"model": "d"}, None, status="KILLED", curve={}),
        _run(5, {"model": "d"}, None, status="RUNNING", curve={1: 0.1, 2: 0.15}),
    ]
    summary = summarize_sweep(runs)
    assert dict(summary.counts) == {
        "finished": 2,
        "pruned": 1,
        "failed": 1,
        "killed": 1,
        "running": 1,
    }
    assert summary.best is runs[1]
    assert [lvl.level for lvl in summary.factors[0].levels] == ["a", "b"]  # scored runs only
    text = render_markdown(summary, "t")
    for run in runs[2:]:
        assert f"(`{run.run_id[:8]}`) | {run.outcome} |" in text
    assert "| run1 (`00000000`) | finished **best** |" in text
    _png(learning_curves_figure(summary), tmp_path / "curves.png")
    _png(factor_figure(summary), tmp_path / "factors.png")


def test_a_study_whose_trials_were_all_pruned_has_factors_but_nothing_to_compare():
    runs = [
        _run(i, {"optimizer.lr": lr}, None, status="KILLED", pruned=True)
        for i, lr in enumerate(["0.0012520653814999472", "0.0038322168504927897"])
    ]
    summary = summarize_sweep(runs)
    assert summary.best is None and summary.counts["pruned"] == 2
    text = render_markdown(summary, "t")
    assert "| 1 | optimizer.lr | no finished run to compare | - |" in text
    assert "| pruned | 0.001252 |" in text  # sampled floats to 4 significant digits


@pytest.mark.parametrize(
    ("runs", "verdict"),
    [
        ([_run(0, {}, 0.5)], "One run finished: there is nothing to compare it with."),
        ([_run(0, {}, None, status="FAILED")], "No run finished with a val/frame_acc (of 1)"),
        ([_run(0, {"seed": "0"}, 0.5), _run(1, {"seed": "1"}, 0.52)], "ran 2 times"),
        ([], "No run finished with a val/frame_acc (of 0)"),
    ],
    ids=["one run", "one failed run", "seeds only", "no runs"],
)
def test_a_sweep_without_factors_gets_a_summary_and_figures(
    runs: list[SweepRun], verdict: str, tmp_path: Path
):
    summary = summarize_sweep(runs)
    assert summary.factors == ()
    assert verdict in summary.verdict
    text = render_markdown(summary, "t")
    assert "No setting other than the seed varies between the runs." in text
    _png(learning_curves_figure(summary), tmp_path / "curves.png")
    _png(factor_figure(summary), tmp_path / "factors.png")


def test_a_factor_with_many_numeric_values_is_a_range_and_a_colour_scale(tmp_path: Path):
    rates = [f"{1e-4 * 1.5**i:.4g}" for i in range(15)]
    runs = [_run(i, {"optimizer.lr": lr}, 0.4 + 0.01 * i) for i, lr in enumerate(rates)]
    summary = summarize_sweep(runs, importance={"optimizer.lr": 1.0})
    factor = summary.top_factor
    assert factor is not None and factor.numeric and len(factor.levels) == 15
    assert f"15 distinct values ({rates[0]} … {rates[-1]})" in render_markdown(summary, "t")
    curves = learning_curves_figure(summary)
    assert len(curves.axes) == 2  # the chart and the colour bar of the learning rate
    _png(curves, tmp_path / "curves.png")
    _png(factor_figure(summary), tmp_path / "factors.png")


def test_optuna_history_and_importance_figures(tmp_path: Path):
    trials = [
        TrialPoint(0, "complete", 0.41),
        TrialPoint(1, "pruned", 0.2),
        TrialPoint(2, "complete", 0.47),
        TrialPoint(3, "fail", None),
        TrialPoint(4, "running", None),
    ]
    history = history_figure(trials, "s")
    assert "1 pruned" in history.axes[0].get_title()
    _png(history, tmp_path / "history.png")
    _png(importance_figure({"seq_len": 0.7, "optimizer.lr": 0.3}, "s"), tmp_path / "imp.png")
    _png(importance_figure({}, "s"), tmp_path / "none.png")
    _png(history_figure([], "s"), tmp_path / "empty.png")


def test_ranked_runs_put_the_best_first_and_unscored_runs_last():
    runs = [_run(0, {"m": "a"}, 0.5), _run(1, {"m": "b"}, None, status="FAILED")]
    runs.append(_run(2, {"m": "c"}, 0.6))
    summary: SweepSummary = summarize_sweep(runs)
    assert [r.name for r in summary.ranked_runs()] == ["run2", "run0", "run1"]


def test_the_tradeoff_figure_has_a_point_per_run_scored_out_of_domain(tmp_path: Path):
    runs = [
        _run(
            i,
            {"data.synth_fraction": f},
            0.6 - 0.02 * i,
            ood_score=0.8 + 0.04 * i,
            ood_metric="ood_test/majmin",
        )
        for i, f in enumerate(["0", "0.25", "0.5"])
    ]
    runs.append(_run(3, {"data.synth_fraction": "1"}, None, status="FAILED", ood_score=0.9))
    figure = tradeoff_figure(summarize_sweep(runs))
    assert figure is not None
    points = figure.axes[0]  # then the colour bar of a numeric factor, if any
    drawn = sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in points.lines)
    expected = sorted((r.ood_score, r.test_score) for r in runs[:3])  # the failed run left out
    assert np.allclose(drawn, expected)
    assert points.get_xlabel() == "ood_test/majmin (out of domain)"
    _png(figure, tmp_path / "tradeoff.png")
    assert tradeoff_figure(summarize_sweep([_run(9, {}, 0.5)])) is None  # no OOD score
