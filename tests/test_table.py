"""Result tables from plain run records: run tables (``chordrec table --runs``: factors,
rows, seeds) and Table 5 (``chordrec table``: each preset's newest finished run, its
cells, the report's numbers and the difference)."""

from __future__ import annotations

import statistics

import pytest

from chordrec.constants import PRESETS
from chordrec.report.tables import (
    NOT_REPORTED,
    REPORT,
    Column,
    IncompleteTableError,
    build_run_table,
    build_table,
    format_duration,
    render,
    run_factors,
    select_runs,
)
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


def test_bookkeeping_overrides_are_no_factors():
    """A run's name and an Optuna trial's number differ between a sweep's runs too."""
    runs = [
        _run("r1", 1, "seq_len=128 run_name=a optuna.trial=0 +tracking.tags.x=1"),
        _run("r2", 2, "seq_len=256 run_name=b optuna.trial=1 +tracking.tags.x=2"),
    ]
    assert run_factors(runs) == {"r1": {"seq_len": "128"}, "r2": {"seq_len": "256"}}


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


# ------------------------------------------------------------------------ Table 5


def _member(
    run_id: str,
    preset: str,
    start: int = 1,
    status: str = "FINISHED",
    level: str = "frame",
    **metrics: float,
) -> RunRecord:
    """A finished run of ``preset`` as Table 5 reads it: the study member's params and
    metrics; ``metrics`` keywords use ``__`` for ``/`` and replace the defaults."""
    params = {
        "model_name": "rnn_baseline",
        "data.level": level,
        "seq_len": "1",
        "seq_mode": "window",
        "sizes.train.chunks32": "12",
        "sizes.validation.chunks32": "5",
        "sizes.test.chunks32": "4",
        "sizes.train.steps": "1234",
        "sizes.validation.steps": "567",
        "sizes.test.steps": "89",
    }
    known = {
        "fit/converged": 1.0,
        "val/frame_acc": 0.5123,
        "test/frame_acc": 0.4567,
        "time/train_s": 600.0,
        "fit/epochs_run": 20,
        "fit/best_epoch": 17,
        **{k.replace("__", "/"): v for k, v in metrics.items()},
    }
    return RunRecord(run_id, run_id, status, start, params, known, {"preset": preset})


def _rows(table) -> dict[str, list[object]]:
    """Table 5's rows by their label as rendered (the "report" rows stripped to one
    label, so repeated labels are listed in order), each a list of cells."""
    rows: dict[str, list[object]] = {}
    for label, cells in zip(table.index, table.values, strict=True):
        rows.setdefault(label.strip(), []).append(list(cells))
    return {label: cells[0] if len(cells) == 1 else cells for label, cells in rows.items()}


def test_table5_cells_are_the_runs_metrics_next_to_the_reports_numbers():
    table = build_table(
        [
            Column("a", _member("ra", "a", level="beat", test__majmin=0.61)),
            Column(
                "d",
                _member(
                    "rd",
                    "d",
                    fit__converged=0.0,
                    val__frame_acc=0.125,
                    test__frame_acc=0.2,
                    time__train_s=9000.0,
                    test__majmin=0.615,
                ),
            ),
        ]
    )
    assert list(table.columns) == ["a", "d"]
    rows = _rows(table)
    assert rows["what"] == [
        "rnn_baseline, beat level, L=1, window",
        "rnn_baseline, frame level, L=1, window",
    ]
    # the report's Table 5: a has every number, d no example counts
    (train, validation, test) = (
        rows["training examples (32-step chunks)"],
        rows["validation examples (32-step chunks)"],
        rows["test examples (32-step chunks)"],
    )
    assert (train, validation, test) == ([12, 12], [5, 5], [4, 4])
    report = rows["report"]
    assert report[:3] == [[834, NOT_REPORTED], [323, NOT_REPORTED], [284, NOT_REPORTED]]
    assert report[3:] == [
        ["yes", "no"],  # converged
        ["47.00", "12.75"],  # validation accuracy
        ["50.83", "14.52"],  # test accuracy
        ["10 min", "3 h"],  # training time
    ]
    assert rows["training / validation / test size"] == [
        "1,234 / 567 / 89 beats",
        "1,234 / 567 / 89 frames",
    ]
    assert rows["converged"] == ["yes", "no"]
    assert rows["validation accuracy %"] == ["51.23", "12.50"]
    assert rows["test accuracy %"] == ["45.67", "20.00"]
    # ours minus the report's, in points: from the unrounded accuracy
    assert rows["difference (points)"] == [["+4.23", "-0.25"], ["-5.16", "+5.48"]]
    assert rows["training time"] == ["10.0 min", "2.50 h"]
    assert (rows["epochs run"], rows["best epoch"]) == ([20, 20], [17, 17])
    assert rows["run id"] == ["ra", "rd"]
    assert rows["test majmin WCSR %"] == ["61.00", "61.50"]  # both runs have it
    assert "test root WCSR %" not in rows  # neither has it


def test_every_presets_difference_row_is_ours_minus_the_reports_number():
    columns = [
        Column(p, _member(f"r{p}", p, val__frame_acc=0.5, test__frame_acc=0.4)) for p in PRESETS
    ]
    rows = _rows(build_table(columns))
    val_diff, test_diff = rows["difference (points)"]
    for i, preset in enumerate(PRESETS):
        assert val_diff[i] == f"{50 - REPORT[preset]['val']:+.2f}", preset
        assert test_diff[i] == f"{40 - REPORT[preset]['test_acc']:+.2f}", preset
    report_val, report_test = rows["report"][4], rows["report"][5]
    assert report_val == [f"{REPORT[p]['val']:.2f}" for p in PRESETS]
    assert report_test == [f"{REPORT[p]['test_acc']:.2f}" for p in PRESETS]


def test_a_column_without_the_reports_numbers_says_not_reported():
    rows = _rows(build_table([Column("best", _member("rb", "best"))]))
    assert rows["report"] == [[NOT_REPORTED]] * 7
    assert rows["difference (points)"] == [[NOT_REPORTED], [NOT_REPORTED]]
    assert rows["validation accuracy %"] == ["51.23"]


def test_an_optional_row_needs_every_column():
    rows = _rows(
        build_table(
            [
                Column("a", _member("ra", "a", test__root=0.7)),
                Column("b", _member("rb", "b")),
            ]
        )
    )
    assert "test root WCSR %" not in rows


@pytest.mark.parametrize(
    ("broken", "missing"),
    [
        (lambda r: r.metrics.pop("fit/best_epoch"), "metric 'fit/best_epoch'"),
        (lambda r: r.metrics.update({"test/frame_acc": float("nan")}), "metric 'test/frame_acc'"),
        (lambda r: r.params.pop("sizes.test.steps"), "param 'sizes.test.steps'"),
    ],
)
def test_a_cell_that_cannot_be_filled_names_the_run_and_what_it_lacks(broken, missing):
    run = _member("rc", "c")
    broken(run)
    with pytest.raises(IncompleteTableError, match=f"run rc \\(preset c\\) has no {missing}"):
        build_table([Column("a", _member("ra", "a")), Column("c", run)])


def test_each_preset_gets_its_newest_finished_run():
    runs = [
        _member("old", "a", start=1),
        _member("new", "a", start=3),
        _member("newest-failed", "a", start=5, status="FAILED"),
        _member("b1", "b", start=2),
    ]
    columns = select_runs(runs, ("a", "b"))
    assert [(c.preset, c.run.run_id) for c in columns] == [("a", "new"), ("b", "b1")]


def test_a_preset_without_a_finished_run_is_an_error_naming_its_runs():
    runs = [_member("dead", "a", status="FAILED"), _member("live", "a", 2, status="RUNNING")]
    with pytest.raises(IncompleteTableError) as refused:
        select_runs(runs, ("a", "b"))
    assert str(refused.value) == (
        "preset a: no FINISHED run (run live is RUNNING, run dead is FAILED); "
        "preset b: no run found"
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(59.4, "59 s"), (60, "1.0 min"), (7194, "119.9 min"), (7200, "2.00 h")],
)
def test_training_time_is_shown_in_seconds_minutes_or_hours(seconds, shown):
    assert format_duration(seconds) == shown


def test_markdown_shows_every_report_row_under_one_indented_label():
    lines = render(build_table([Column("a", _member("ra", "a"))])).splitlines()
    assert lines[:2] == ["| | a |", "|---|---|"]
    assert lines[3:5] == ["| training examples (32-step chunks) | 12 |", "|   report | 834 |"]
    assert sum(line.startswith("|   report | ") for line in lines) == 7
    assert "|   difference (points) | +4.23 |" in lines
