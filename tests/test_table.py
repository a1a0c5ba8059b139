"""Run tables (``chordrec table --runs``) from plain run records: factors, rows, seeds."""

from __future__ import annotations

import statistics

import pytest

from chordrec.report.tables import IncompleteTableError, build_run_table, run_factors
from chordrec.tracking import RunRecord

METRICS = {
    "val/frame_acc_argmax": 0.5,
    "val/frame_acc_viterbi": 0.52,
    "test/frame_acc_argmax": 0.6,
    "test/frame_acc_viterbi": 0.62,
    "test/majmin": 0.63,
    "test/root": 0.7,
    "fit/epochs_run": 20,
    "fit/best_epoch": 18,
    "time/train_s": 600.0,
}


def _run(run_id, start, overrides=None, params=None, status="FINISHED", **metrics):
    """A run record; ``metrics`` keywords use ``__`` for ``/`` (``test__majmin``)."""
    tags = {"preset": "best"}
    if overrides is not None:
        tags["sweep_overrides"] = overrides
    named = {k.replace("__", "/"): v for k, v in metrics.items()}
    return RunRecord(run_id, run_id, status, start, dict(params or {}), {**METRICS, **named}, tags)


def test_factors_of_a_sweep_are_its_varying_overrides():
    runs = [
        _run("r1", 1, "experiment=best seed=0 data.augment=none seq_len=128"),
        _run("r2", 2, "experiment=best seed=0 data.augment=transpose seq_len=128"),
        _run("r3", 3, "experiment=best seed=0 data.augment=none seq_len=256"),
    ]
    assert run_factors(runs) == {
        "r1": {"data.augment": "none", "seq_len": "128"},
        "r2": {"data.augment": "transpose", "seq_len": "128"},
        "r3": {"data.augment": "none", "seq_len": "256"},
    }


def test_factors_outside_a_sweep_are_varying_params_without_bookkeeping():
    runs = [
        _run("r1", 1, params={"seq_len": "128", "run_name": "a", "tracking.experiment": "x"}),
        _run("r2", 2, params={"seq_len": "256", "run_name": "b", "tracking.experiment": "y"}),
        _run("r3", 3, params={"seq_len": "256", "run_name": "c", "extra": "1"}),
    ]
    assert run_factors(runs) == {
        "r1": {"extra": "-", "seq_len": "128"},
        "r2": {"extra": "-", "seq_len": "256"},
        "r3": {"extra": "1", "seq_len": "256"},
    }


def test_seed_replicates_get_mean_and_sample_std():
    accs = [0.70, 0.72, 0.71]
    runs = [
        _run(f"r{i}", 10 - i, f"experiment=best seed={i}", test__frame_acc_viterbi=a)
        for i, a in enumerate(accs)
    ]
    runs.append(_run("dead", 0, "experiment=best seed=9", status="FAILED"))
    runs.append(RunRecord("t", "table", "FINISHED", 99, {}, {}, {"kind": "table"}))
    table = build_run_table(runs)
    assert list(table.index) == ["r2", "r1", "r0", "mean", "std"]  # oldest first
    column = table["test % (Viterbi)"]
    assert column["mean"] == f"{100 * statistics.mean(accs):.2f}"
    assert column["std"] == f"{100 * statistics.stdev(accs):.2f}"
    assert table.loc["r0", "seed"] == "0" and table.loc["r0", "epochs (best)"] == "20 (18)"
    assert table.loc["r0", "training time"] == "10.0 min"


def test_different_configs_get_no_mean():
    runs = [_run("r1", 1, "seq_len=128 seed=0"), _run("r2", 2, "seq_len=256 seed=1")]
    assert "mean" not in build_run_table(runs).index


def test_a_missing_metric_or_no_run_is_an_error_naming_it():
    broken = _run("r1", 1, "seed=0")
    del broken.metrics["test/majmin"]
    with pytest.raises(IncompleteTableError, match="r1.*test/majmin"):
        build_run_table([broken])
    with pytest.raises(IncompleteTableError, match="no FINISHED run"):
        build_run_table([_run("r2", 1, "seed=0", status="FAILED")])


def test_out_of_domain_scores_are_columns_when_a_run_has_them():
    runs = [
        _run("r1", 1, "experiment=best seed=0", ood_val__majmin=0.80, ood_val__root=0.90),
        _run("r2", 2, "experiment=best seed=1", ood_val__majmin=0.84, ood_val__root=0.86),
        _run("old", 0, "experiment=best seed=2"),  # logged before the out-of-domain set
    ]
    table = build_run_table(runs)
    assert table.loc["r1", "OOD val majmin %"] == "80.00"
    assert table.loc["old", "OOD val root %"] == "-"
    assert table.loc["mean", "OOD val majmin %"] == "82.00"  # over the runs that have it
    assert "OOD test majmin %" not in table.columns  # no run was scored on the test part
    assert "OOD val majmin %" not in build_run_table(runs[2:]).columns
