"""The study's multirun command line; the report's study end to end on a tiny budget,
Table 5 from MLflow, sweeps and parallel runs."""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from chordrec import study
from tests.conftest import OOD, REPO, run_chordrec, subprocess_env

TINY = [
    "split.max_songs=1",
    "trainer.num_threads=1",
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "tracking.system_metrics=false",
    "tracking.log_model=false",
]


def _sweep(data_root, tmp_path, *overrides, experiment="chordrec", succeeds=True):
    """Run ``python -m chordrec.train -m <overrides>`` on a tiny budget into a store in
    tmp_path; returns the command's output and the runs it logged in ``experiment``.
    The sweep can import this module (an override may name a class of it)."""
    store = tmp_path / "mlruns"
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chordrec.train",
            "-m",
            f"data.root={data_root}",
            f"ood.root={OOD}",
            f"tracking.store_dir={store}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *TINY,
            *overrides,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(PYTHONPATH=path),
        timeout=900,
    )
    assert (done.returncode == 0) == succeeds, done.stderr[-3000:]
    client = _client(store)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    trained = [r for r in runs if "kind" not in r.data.tags]  # not sweep or table runs
    return done.stdout + done.stderr, client, trained


def _client(store):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    return MlflowClient()


def _study(**changes) -> study.Study:
    fields = {
        "study_id": "s1",
        "presets": ("a", "d"),
        "experiment": "exp",
        "store": Path("/abs/mlruns"),
        "tracking_uri": "sqlite:////abs/mlruns/mlflow.db",
        "parent_run_id": "p0",
    }
    return study.Study(**{**fields, **changes})


def test_the_multirun_nests_every_preset_under_the_parent_run():
    command = study.multirun_command(_study(), jobs=1, overrides=["seed=3"])
    assert command == [
        sys.executable,
        "-m",
        "chordrec.train",
        "-m",
        "experiment=d,a",  # longest first
        "tracking.experiment=exp",
        "tracking.store_dir=/abs/mlruns",
        "+tracking.tags.study=s1",
        "tracking.parent_run_id=p0",
        "hydra.sweep.dir=multirun/s1",
        "seed=3",
    ]
    assert _study().headline == "study s1: presets a, d; parent MLflow run p0"


def test_members_start_longest_first_and_unknown_presets_last():
    presets = ("a", "best", "b", "c", "d", "e", "f")
    command = study.multirun_command(_study(presets=presets), jobs=2)
    assert "experiment=b,c,d,e,f,a,best" in command


def test_parallel_members_get_one_thread_and_no_progress_bars_before_the_overrides():
    command = study.multirun_command(_study(), jobs=3, overrides=["trainer.num_threads=2"])
    parallel = [
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=3",
        "trainer.num_threads=1",
        "trainer.progress=false",
    ]
    assert command[-5:] == [*parallel, "trainer.num_threads=2"]  # the user's overrides last


def test_an_invalid_study_id_is_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="letters, digits"):
        study.start_study(["a"], "a,b", store=tmp_path / "mlruns")
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.integration
def test_study_then_table_then_a_deleted_metric(data_root, tmp_path):
    store = tmp_path / "mlruns"
    done = run_chordrec(
        "study",
        "--store",
        str(store),
        "--study-id",
        "tiny",
        f"data.root={data_root}",
        f"ood.root={OOD}",
        *TINY,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| | a | b | c | d | e | f |" in done.stdout
    assert "N/A" not in done.stdout

    client = _client(store)
    experiment = client.get_experiment_by_name("chordrec")
    runs = client.search_runs([experiment.experiment_id], "tags.study = 'tiny'")
    parent = [r for r in runs if r.data.tags.get("kind") == "study"]
    members = [r for r in runs if r.data.tags.get("kind") != "study"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert sorted(r.data.tags["preset"] for r in members) == list("abcdef")
    assert all(r.info.status == "FINISHED" for r in members)
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in members)
    assert "table5.md" in {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    # the study's multirun nests under the study: no sweep parent of its own
    assert not client.search_runs([experiment.experiment_id], "tags.kind = 'sweep'")

    out = tmp_path / "table.csv"
    table = run_chordrec(
        "table",
        "--store",
        str(store),
        "--study",
        "tiny",
        "--format",
        "csv",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert table.returncode == 0, table.stderr
    assert out.read_text() == table.stdout
    header = out.read_text().splitlines()[0]
    assert header == ",a,b,c,d,e,f"
    for member in members:
        assert member.info.run_id in table.stdout

    victim = next(r for r in members if r.data.tags["preset"] == "c")
    with sqlite3.connect(store / "mlflow.db") as db:
        for relation in ("metrics", "latest_metrics"):
            db.execute(
                f"DELETE FROM {relation} WHERE run_uuid = ? AND key = 'test/frame_acc'",
                (victim.info.run_id,),
            )
    broken = run_chordrec("table", "--store", str(store), "--study", "tiny", cwd=tmp_path)
    assert broken.returncode == 1
    assert victim.info.run_id in broken.stderr and "test/frame_acc" in broken.stderr
    assert broken.stdout == ""


@pytest.mark.integration
def test_a_failed_member_is_reported_and_the_others_finish(data_root, tmp_path):
    store = tmp_path / "mlruns"
    # crnn2 (preset d) needs seq_len >= 12: d fails, a still runs and finishes.
    done = run_chordrec(
        "study",
        "--store",
        str(store),
        "--study-id",
        "broken",
        "--presets",
        "a,d",
        "--jobs",
        "1",
        f"data.root={data_root}",
        f"ood.root={OOD}",
        "seq_len=4",
        *TINY,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    client = _client(store)
    runs = client.search_runs(
        [client.get_experiment_by_name("chordrec").experiment_id], "tags.study = 'broken'"
    )
    status = {r.data.tags.get("preset", "parent"): r.info.status for r in runs}
    assert status == {"a": "FINISHED", "d": "FAILED", "parent": "FAILED"}
    failed = next(r for r in runs if r.data.tags.get("preset") == "d")
    assert failed.info.run_id in done.stderr and "seq_len >= 12" in done.stderr


@pytest.mark.integration
def test_four_parallel_runs_all_finish_with_every_metric(data_root, tmp_path):
    _, client, runs = _sweep(
        data_root,
        tmp_path,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=4",
        "seed=0,1,2,3",
        "trainer.max_epochs=2",
    )
    assert len(runs) == 4
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    keys = set(runs[0].data.metrics)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert set(r.data.metrics) == keys
        assert r.data.tags["hydra_mode"] == "multirun" and r.data.tags["sweep_dir"] == str(
            tmp_path / "sweep"
        )
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/acc")] == [1, 2]

    # the seeds' run table: one row per run, then mean and sample std over the seeds
    store = str(tmp_path / "mlruns")
    table = run_chordrec("table", "--runs", "--store", store, "--format", "csv", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = {line.split(",")[0]: line.split(",") for line in table.stdout.splitlines()}
    header = rows.pop("")
    assert header[1] == "seed" and "test % (Viterbi)" in header
    assert set(rows) == {r.info.run_id for r in runs} | {"mean", "std"}
    column = header.index("test % (Viterbi)")
    accs = [100 * r.data.metrics["test/frame_acc_viterbi"] for r in runs]
    assert float(rows["mean"][column]) == pytest.approx(statistics.mean(accs), abs=0.006)
    assert float(rows["std"][column]) == pytest.approx(statistics.stdev(accs), abs=0.006)
    # logged too: a table run holds it, and it is not itself a row the next time
    again = run_chordrec("table", "--runs", "--store", store, "--format", "csv", cwd=tmp_path)
    assert again.stdout == table.stdout

    # the sweep is one parent run, FINISHED, holding the same run table
    experiment = client.get_experiment_by_name("chordrec").experiment_id
    (parent,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep_dir"] == str(tmp_path / "sweep")
    assert "seed=0,1,2,3" in parent.data.tags["sweep_overrides"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    logged = Path(client.download_artifacts(parent.info.run_id, "runs.csv", str(tmp_path)))
    assert logged.read_text() == table.stdout

    # relaunched into the same sweep directory: the same parent, now with five runs
    _, _, runs = _sweep(data_root, tmp_path, "seed=4", "trainer.max_epochs=2")
    (again,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert "seed=4" in again.data.tags["sweep_overrides"]
    assert len(runs) == 5
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    (tmp_path / "2").mkdir()
    rows = client.download_artifacts(parent.info.run_id, "runs.csv", str(tmp_path / "2"))
    assert len(Path(rows).read_text().splitlines()) == 1 + 5 + 2  # header, runs, mean, std


@pytest.mark.integration
def test_a_sweep_with_a_failed_job_ends_its_parent_failed_with_the_finished_runs(
    data_root, tmp_path
):
    # crnn2 needs seq_len >= 12: its job fails, Hydra skips on_multirun_end and exits 1
    _, client, runs = _sweep(
        data_root, tmp_path, "model=crnn2,rnn_table4", "seq_len=4", succeeds=False
    )
    status = {r.data.params["model_name"]: r.info.status for r in runs}
    assert status == {"crnn2": "FAILED", "rnn_table4": "FINISHED"}
    experiment = client.get_experiment_by_name("chordrec").experiment_id
    (parent,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    assert parent.info.status == "FAILED"
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert "ended early" in parent.data.tags["error"]
    assert f"{failed.info.run_id} (FAILED)" in parent.data.tags["error"]
    table = Path(client.download_artifacts(parent.info.run_id, "runs.md", str(tmp_path)))
    finished = next(r for r in runs if r.info.status == "FINISHED")
    assert finished.info.run_id in table.read_text()

    # relaunched into the same directory with a length crnn2 can take: the same parent,
    # but the failed run of the first launch is still its child, so FAILED again, now
    # only for that run
    _sweep(data_root, tmp_path, "model=crnn2", "seq_len=16")
    (again,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FAILED"
    assert again.data.tags["error"] == f"runs not FINISHED: {failed.info.run_id} (FAILED)"


@pytest.mark.integration
def test_sweep_over_models_and_lengths(data_root, tmp_path):
    _, _, runs = _sweep(data_root, tmp_path, "model=rnn_baseline,rnn_table4", "seq_len=16,32")
    combos = sorted((r.data.params["model_name"], r.data.params["seq_len"]) for r in runs)
    assert combos == [
        ("rnn_baseline", "16"),
        ("rnn_baseline", "32"),
        ("rnn_table4", "16"),
        ("rnn_table4", "32"),
    ]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["sweep_job"] for r in runs}) == 4

    # the sweep's run table names its two factors; no mean over different configs
    table = run_chordrec("table", "--runs", "--store", str(tmp_path / "mlruns"), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith("| | model | seq_len | val % (argmax) |")
    assert "mean" not in table.stdout and len(table.stdout.splitlines()) == 2 + 4
