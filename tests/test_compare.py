"""``chordrec compare``: runs side by side, and the MLflow UI's URLs comparing them."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from chordrec import tracking
from chordrec.cli import build_parser, main
from chordrec.errors import ConfigError
from chordrec.report.comparison import MISSING, compare_runs, distinct_run_ids
from chordrec.tracking import RunRecord
from chordrec.tracking.ui import (
    DEFAULT_UI_URL,
    compare_table_url,
    compare_url,
    experiment_url,
    run_url,
    ui_base_url,
)

METRICS = {
    "val/frame_acc": 0.47,
    "test/frame_acc": 0.5083,
    "test/frame_acc_argmax": 0.5083,
    "test/frame_acc_viterbi": 0.5312,
    "test/majmin": 0.55,
    "test/root": 0.61,
    "fit/epochs_run": 20,
    "fit/best_epoch": 18,
    "time/train_s": 600.0,
}


def _record(run_id: str, name: str = "", params=None, status="FINISHED", **metrics) -> RunRecord:
    """A run record; ``metrics`` keywords use ``__`` for ``/`` (``test__majmin``), and a
    None value leaves that metric out."""
    values = {**METRICS, **{k.replace("__", "/"): v for k, v in metrics.items()}}
    values = {k: v for k, v in values.items() if v is not None}
    return RunRecord(run_id, name, status, 0, dict(params or {}), values, {}, "7")


def _parse(url: str) -> tuple[str, dict[str, str]]:
    """A UI URL as the UI reads it: the route and the query's fields."""
    route, _, query = urlsplit(url).fragment.partition("?")
    return route, {k: v[0] for k, v in parse_qs(query, strict_parsing=True).items()}


# ------------------------------------------------------------------------ URL


def test_compare_url_charts_exactly_the_runs_of_one_experiment_sorted_by_val_acc():
    url = compare_url("http://127.0.0.1:5000/", ["abc123", "def456", "abc123"], ["1", "1"])
    route, fields = _parse(url)
    assert route == "/experiments/1/runs"
    assert fields == {
        "compareRunsMode": "CHART",
        "searchFilter": "attributes.run_id IN ('abc123', 'def456')",
        "orderByKey": "metrics.`val/acc`",
        "orderByAsc": "false",
        "workflowType": "machine_learning",
    }


def test_compare_url_of_several_experiments_is_the_compare_runs_page():
    url = compare_url("http://127.0.0.1:5000/", ["abc123", "def456"], ["1", "2"])
    assert url == compare_table_url("http://127.0.0.1:5000", ["abc123", "def456"], ["1", "2"])
    route, fields = _parse(url)
    assert route == "/compare-runs"
    assert json.loads(fields["runs"]) == ["abc123", "def456"]
    assert json.loads(fields["experiments"]) == ["1", "2"]


def test_ui_urls_have_no_character_that_ends_a_url_in_a_terminal():
    for url in (
        compare_url("http://h:5000", ["a", "b"], ["0"]),
        compare_table_url("http://h:5000", ["a", "b"], ["0"]),
    ):
        assert not set(url) & set(' "[]{}<>|\\^`'), url
    # the compare-runs page decodes the query, then reads the lists as JSON.stringify wrote them
    assert unquote(compare_table_url("http://h:5000", ["a", "b"], ["0"])).endswith(
        '?runs=["a","b"]&experiments=["0"]&workflowType=machine_learning'
    )


def test_experiment_and_run_pages_open_on_the_training_view():
    assert experiment_url("http://h:5000/", "3") == (
        "http://h:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert run_url("http://h:5000", "3", "abc") == (
        "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )


def test_ui_base_url_is_the_server_else_the_local_ui_unless_given():
    assert ui_base_url("sqlite:////tmp/mlruns/mlflow.db") == DEFAULT_UI_URL
    assert ui_base_url(None) == DEFAULT_UI_URL
    assert ui_base_url("https://user:secret@mlflow.example.org/prefix/?x=1") == (
        "https://mlflow.example.org/prefix"
    )
    assert ui_base_url("http://10.0.0.5:5001") == "http://10.0.0.5:5001"
    assert (
        ui_base_url("http://10.0.0.5:5001", "http://ui.example:8080/") == "http://ui.example:8080"
    )
    with pytest.raises(ConfigError, match="--ui-url"):
        ui_base_url(None, "localhost:5000")


def test_default_ui_url_is_where_chordrec_ui_serves():
    args = build_parser().parse_args(["ui"])
    assert DEFAULT_UI_URL == f"http://{args.host}:{args.port}"


# ------------------------------------------------------------------------ table


def test_comparison_shows_differing_settings_metrics_and_dashes():
    runs = [
        _record("aaaaaaaa1111", "lr-low", {"optimizer.lr": "0.001", "seed": "0", "run_name": "x"}),
        _record(
            "bbbbbbbb2222",
            "lr-high",
            {"optimizer.lr": "0.01", "seed": "0", "run_name": "y"},
            status="FAILED",
            test__majmin=None,
            fit__best_epoch=None,
            time__train_s=None,
        ),
    ]
    comparison = compare_runs(runs)
    assert comparison.headings == (("aaaaaaaa", "lr-low"), ("bbbbbbbb", "lr-high"))
    assert comparison.settings == ("optimizer.lr",)  # seed is equal, run_name bookkeeping
    rows = comparison.rows
    assert list(rows)[:2] == ["status", "optimizer.lr"]
    assert rows["status"] == ("FINISHED", "FAILED")
    assert rows["optimizer.lr"] == ("0.001", "0.01")
    assert rows["val/frame_acc %"] == ("47.00", "47.00")
    assert rows["test/frame_acc_viterbi %"] == ("53.12", "53.12")
    assert rows["test/majmin %"] == ("55.00", MISSING)
    assert rows["epochs (best)"] == ("20 (18)", "20 (-)")
    assert rows["training time"] == ("10.0 min", MISSING)
    text = comparison.text()
    lines = text.splitlines()
    assert lines[0].split() == ["aaaaaaaa", "bbbbbbbb"]
    assert lines[1].split() == ["lr-low", "lr-high"]
    assert lines[-1].split() == ["training", "time", "10.0", "min", "-"]
    # aligned: every column starts where its heading does
    start = lines[0].index("bbbbbbbb")
    assert all(line[start - 2 : start] == "  " for line in lines)


def test_missing_and_nan_metrics_are_dashes():
    comparison = compare_runs(
        [
            _record("r1", test__root=float("nan")),
            _record("r2", fit__epochs_run=None, fit__best_epoch=None),
        ]
    )
    assert comparison.rows["test/root %"] == (MISSING, "61.00")
    assert comparison.rows["epochs (best)"] == ("20 (18)", MISSING)
    assert comparison.headings[0] == ("r1", MISSING)  # no run name


def test_long_values_are_cut_to_one_line():
    long = "x" * 100
    text = compare_runs(
        [_record("r1", params={"p": long}), _record("r2", params={"p": "a\nb"})]
    ).text()
    assert long not in text and "x" * 37 + "..." in text and "a b" in text


def test_fewer_than_two_different_runs_is_an_error():
    with pytest.raises(ConfigError, match="at least 2 different run ids, got r1"):
        compare_runs([_record("r1"), _record("r1")])
    with pytest.raises(ConfigError, match="got none"):
        distinct_run_ids([])
    assert distinct_run_ids(["b", "a", "b"]) == ["b", "a"]


def test_one_run_id_on_the_command_line_is_one_error_line(capsys, tmp_path: Path):
    assert main(["compare", "abc", "abc", "--store", str(tmp_path / "mlruns")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "chordrec: error: compare needs at least 2 different run ids, got abc"
    ]
    assert not (tmp_path / "mlruns").exists()  # refused before the store is touched


# ------------------------------------------------------------------------ command


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, list[str], str]:
    """A SQLite store with two short runs that differ in ``optimizer.lr``; the second
    lacks ``test/majmin``. Returns the store, the run ids and the experiment id."""
    store = tmp_path / "mlruns"
    tracking.configure(store)
    run_ids = []
    for name, lr, majmin in (("lr-low", 0.001, 0.55), ("lr-high", 0.01, None)):
        with tracking.RunTracker("compare-test", store, name, system_metrics=False) as run:
            config = {"model": {"hidden": 16}, "optimizer": {"lr": lr}, "seed": 0}
            run.log_config(config, "seed: 0\n")
            run.log_params({"sizes.train.steps": 100 if name == "lr-low" else 200})
            metrics = dict(METRICS, **{"test/frame_acc": 0.5 + lr})
            if majmin is None:
                del metrics["test/majmin"]
            run.log_metrics(metrics)
            run_ids.append(run.run_id)
    experiment_id = tracking.runs_by_id(run_ids[:1])[0].experiment_id
    return store, run_ids, experiment_id


@pytest.mark.slow
def test_compare_prints_the_runs_and_the_ui_url(capsys, two_runs):
    store, run_ids, experiment_id = two_runs
    capsys.readouterr()  # MLflow's lines creating the store
    assert main(["compare", *run_ids, "--store", str(store)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [r[:8] for r in run_ids]
    assert lines[1].split() == ["lr-low", "lr-high"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert rows["optimizer.lr"] == ["0.001", "0.01"]  # the differing param; sizes.* are not
    assert "model.hidden" not in rows and "sizes.train.steps" not in rows
    assert rows["status"] == ["FINISHED", "FINISHED"]
    assert rows["test/frame_acc"] == ["%", "50.10", "51.00"]
    assert rows["test/majmin"] == ["%", "55.00", "-"]
    assert rows["epochs"] == ["(best)", "20", "(18)", "20", "(18)"]
    charts = lines[-2].removeprefix("MLflow UI, charts: ")
    assert charts == compare_url(DEFAULT_UI_URL, run_ids, [experiment_id])
    tables = lines[-1].removeprefix("MLflow UI, tables: ")
    assert tables == compare_table_url(DEFAULT_UI_URL, run_ids, [experiment_id])

    assert main(["compare", *run_ids, "--store", str(store), "--ui-url", "http://ui:8080/"]) == 0
    last = capsys.readouterr().out.splitlines()[-2:]
    assert last[0].startswith(f"MLflow UI, charts: http://ui:8080/#/experiments/{experiment_id}/")
    assert last[1].startswith("MLflow UI, tables: http://ui:8080/#/compare-runs?runs=")


@pytest.mark.slow
def test_compare_names_a_missing_run_in_one_line(capsys, two_runs):
    store, run_ids, _ = two_runs
    capsys.readouterr()  # MLflow's lines creating the store
    assert main(["compare", run_ids[0], "nosuchrun", "--store", str(store)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("chordrec: error: no MLflow run 'nosuchrun'")
