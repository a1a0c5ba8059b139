"""The study's multirun command line; the report's study end to end on a tiny budget,
Table 5 from MLflow, sweeps and parallel runs."""

from __future__ import annotations

import csv
import io
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from chordrec import cli, study
from chordrec.report.tables import NOT_REPORTED, REPORT, format_duration
from tests.conftest import OOD, REPO, run_chordrec, subprocess_env

TINY = [
    "split.max_songs=1",
    "trainer.num_threads=1",
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "tracking.system_metrics=false",
    "tracking.log_model=false",
]


def _sweep(data_root, tmp_path, *overrides, experiment="chordrec", succeeds=True, multirun=True):
    """Run ``python -m chordrec.train -m <overrides>`` (without ``-m`` unless
    ``multirun``) on a tiny budget into a store in tmp_path; returns the command's output
    and the runs the store holds in ``experiment``. The sweep can import this module (an
    override may name a class of it)."""
    store = tmp_path / "mlruns"
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    mode = ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}"] if multirun else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chordrec.train",
            *mode,
            f"data.root={data_root}",
            f"ood.root={OOD}",
            f"tracking.store_dir={store}",
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


@dataclass(frozen=True)
class TinyStudy:
    """``chordrec study --study-id tiny`` of the six presets on the TINY budget."""

    root: Path
    """The directory it ran in; its store is ``root / "mlruns"``."""
    output: str
    """What the command printed (its members' output, then Table 5)."""
    client: MlflowClient
    parent: Run
    members: dict[str, Run]
    """Each preset's run, a to f."""
    logged_table: str
    """``table5.md`` as the study logged it to its parent run."""

    @property
    def store(self) -> Path:
        return self.root / "mlruns"


@pytest.fixture(scope="module")
def tiny_study(data_root, tmp_path_factory) -> TinyStudy:
    root = tmp_path_factory.mktemp("study")
    done = run_chordrec(
        "study",
        "--store",
        str(root / "mlruns"),
        "--study-id",
        "tiny",
        f"data.root={data_root}",
        f"ood.root={OOD}",
        *TINY,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(_store_uri(root / "mlruns"))
    experiment = client.get_experiment_by_name("chordrec")
    runs = client.search_runs([experiment.experiment_id], "tags.study = 'tiny'")
    (parent,) = (r for r in runs if r.data.tags.get("kind") == "study")
    members = {r.data.tags["preset"]: r for r in runs if r.data.tags.get("kind") != "study"}
    members = dict(sorted(members.items()))  # a to f, as Table 5's columns
    logged = Path(client.download_artifacts(parent.info.run_id, "table5.md", str(root)))
    return TinyStudy(root, done.stdout, client, parent, members, logged.read_text())


def _store_uri(store: Path) -> str:
    return f"sqlite:///{store}/mlflow.db"


def _table5_cells(text: str) -> list[list[str]]:
    """The rows of Table 5 as ``chordrec`` printed it (Markdown lines among other output,
    or CSV), each its label (indent dropped) and its cells as text; the header first."""
    if text.startswith(","):  # CSV
        rows = list(csv.reader(io.StringIO(text)))
    else:
        rows = [
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")
        ]
    return [[label.strip(), *cells] for label, *cells in rows]


def _expected_table5(runs: dict[str, Run]) -> list[list[str]]:
    """Table 5 of ``runs`` (preset -> run) as it must read: each cell what MLflow holds
    for that preset's run, next to the report's number (tables.REPORT) and the difference
    between the two in points."""
    presets = list(runs)

    def each(cell) -> list[str]:
        return [str(cell(runs[p].data.metrics, runs[p].data.params, p)) for p in presets]

    def percent(key: str) -> list[str]:
        return each(lambda m, _, __: f"{100 * m[key]:.2f}")

    def reported(key: str) -> list[str]:
        def cell(_, __, preset):
            number = REPORT[preset][key]
            if number is None:
                return NOT_REPORTED
            return f"{number:.2f}" if isinstance(number, float) else number

        return each(cell)

    def difference(key: str, reported_key: str) -> list[str]:
        return each(lambda m, _, p: f"{100 * m[key] - REPORT[p][reported_key]:+.2f}")

    rows = [
        ["", *presets],
        [
            "what",
            *each(
                lambda _, q, __: (
                    f"{q['model_name']}, {q['data.level']} level, L={q['seq_len']}, {q['seq_mode']}"
                )
            ),
        ],
    ]
    for word, part in (("training", "train"), ("validation", "validation"), ("test", "test")):
        chunks = each(lambda _, q, __, part=part: q[f"sizes.{part}.chunks32"])
        rows += [[f"{word} examples (32-step chunks)", *chunks], ["report", *reported(part)]]
    rows += [
        [
            "training / validation / test size",
            *each(
                lambda _, q, __: (
                    " / ".join(
                        f"{int(q[f'sizes.{part}.steps']):,}"
                        for part in ("train", "validation", "test")
                    )
                    + (" beats" if q["data.level"] == "beat" else " frames")
                )
            ),
        ],
        ["converged", *each(lambda m, _, __: "yes" if m["fit/converged"] else "no")],
        ["report", *reported("converged")],
        ["validation accuracy %", *percent("val/frame_acc")],
        ["report", *reported("val")],
        ["difference (points)", *difference("val/frame_acc", "val")],
        ["test accuracy %", *percent("test/frame_acc")],
        ["report", *reported("test_acc")],
        ["difference (points)", *difference("test/frame_acc", "test_acc")],
        ["training time", *each(lambda m, _, __: format_duration(m["time/train_s"]))],
        ["report", *reported("time")],
        ["epochs run", *each(lambda m, _, __: int(m["fit/epochs_run"]))],
        ["best epoch", *each(lambda m, _, __: int(m["fit/best_epoch"]))],
        ["run id", *(runs[p].info.run_id for p in presets)],
    ]
    for key, label in (
        ("test/frame_acc_viterbi", "test accuracy % (Viterbi)"),
        ("test/majmin", "test majmin WCSR %"),
        ("test/root", "test root WCSR %"),
        ("test/seg", "test segmentation %"),
    ):
        assert all(key in r.data.metrics for r in runs.values()), key  # every run logs it
        rows.append([label, *percent(key)])
    return rows


@pytest.mark.integration
def test_the_study_runs_every_preset_under_its_parent_run(tiny_study):
    assert "| | a | b | c | d | e | f |" in tiny_study.output
    assert "N/A" not in tiny_study.output
    parent, members = tiny_study.parent, list(tiny_study.members.values())
    assert parent.info.status == "FINISHED"
    assert sorted(tiny_study.members) == list("abcdef")
    assert all(r.info.status == "FINISHED" for r in members)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in members)
    # the study's multirun nests under the study: no sweep parent of its own
    client = tiny_study.client
    assert not client.search_runs([parent.info.experiment_id], "tags.kind = 'sweep'")
    # the study's parent holds the summary of its members, ranked by preset
    figures = [a.path for a in client.list_artifacts(parent.info.run_id, "figures")]
    assert figures == [
        "figures/factors.png",
        "figures/learning_curves.png",
        "figures/tradeoff.png",  # the members were scored out of domain
    ]
    assert parent.data.metrics["sweep/runs_finished"] == 6
    best = max(r.data.metrics["val/frame_acc"] for r in members)
    assert parent.data.metrics["sweep/best_value"] == best
    summary = _artifact_text(client, parent.info.run_id, "summary.md", tiny_study.root / "s")
    assert "| 1 | experiment |" in summary


@pytest.mark.integration
def test_table5_cells_are_what_mlflow_holds_for_each_member(tiny_study):
    expected = _expected_table5(tiny_study.members)
    # as the study printed it, and logged it (with its wall time) to its parent run
    assert _table5_cells(tiny_study.output) == expected
    assert tiny_study.logged_table.startswith("| | a | b | c | d | e | f |\n")
    assert tiny_study.output.endswith(tiny_study.logged_table)
    assert "Study tiny: wall time" in tiny_study.logged_table
    # rebuilt by `chordrec table --study`
    out = tiny_study.root / "table.csv"
    table = run_chordrec(
        "table",
        "--store",
        str(tiny_study.store),
        "--study",
        "tiny",
        "--format",
        "csv",
        "--out",
        str(out),
        cwd=tiny_study.root,
    )
    assert table.returncode == 0, table.stderr
    assert out.read_text() == table.stdout
    assert _table5_cells(table.stdout) == expected


@pytest.mark.integration
def test_plain_table_takes_each_presets_newest_finished_run(tiny_study, data_root):
    """Without --study, Table 5 holds each preset's newest FINISHED run in the experiment:
    a run of preset a started after the study replaces the study's."""
    _, _, runs = _sweep(data_root, tiny_study.root, "experiment=a", "ood.part=null", multirun=False)
    study_runs = {r.info.run_id for r in tiny_study.members.values()}
    (newer,) = (r for r in runs if r.info.run_id not in study_runs)
    assert newer.data.tags["preset"] == "a" and newer.info.status == "FINISHED"
    assert newer.info.start_time > tiny_study.members["a"].info.start_time
    table = run_chordrec(
        "table", "--store", str(tiny_study.store), "--format", "csv", cwd=tiny_study.root
    )
    assert table.returncode == 0, table.stderr
    assert _table5_cells(table.stdout) == _expected_table5({**tiny_study.members, "a": newer})


@pytest.mark.integration
def test_a_member_without_a_metric_makes_the_table_an_error_naming_both(tiny_study, tmp_path):
    store = tmp_path / "mlruns"  # a copy of the study's store: the others keep theirs
    store.mkdir()
    shutil.copy(tiny_study.store / "mlflow.db", store / "mlflow.db")
    victim = tiny_study.members["c"].info.run_id
    with sqlite3.connect(store / "mlflow.db") as db:
        for relation in ("metrics", "latest_metrics"):
            db.execute(
                f"DELETE FROM {relation} WHERE run_uuid = ? AND key = 'test/frame_acc'", (victim,)
            )
    broken = run_chordrec("table", "--store", str(store), "--study", "tiny", cwd=tmp_path)
    assert broken.returncode == 1
    assert victim in broken.stderr and "test/frame_acc" in broken.stderr
    assert broken.stdout == ""


@pytest.mark.system
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


@pytest.mark.system
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


@pytest.mark.system
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
    # its summary, figures included, marks the failed run
    assert parent.data.metrics["sweep/runs_failed"] == 1
    assert parent.data.tags["sweep.best_run_id"] == finished.info.run_id
    assert len(client.list_artifacts(parent.info.run_id, "figures")) == 3
    summary = _artifact_text(client, parent.info.run_id, "summary.md", tmp_path / "s")
    assert f"(`{failed.info.run_id[:8]}`) | failed | crnn2 |" in summary

    # relaunched into the same directory with a length crnn2 can take: the same parent,
    # but the failed run of the first launch is still its child, so FAILED again, now
    # only for that run
    _sweep(data_root, tmp_path, "model=crnn2", "seq_len=16")
    (again,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FAILED"
    assert again.data.tags["error"] == f"runs not FINISHED: {failed.info.run_id} (FAILED)"


@pytest.mark.integration
def test_sweep_over_models_and_lengths(data_root, tmp_path, capsys):
    lr = "optimizer.lr=0.02"  # accuracies that differ after one epoch
    _, client, runs = _sweep(
        data_root, tmp_path, "model=rnn_baseline,rnn_table4", "seq_len=16,32", lr
    )
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

    # the parent's summary: artifacts, metrics, the best run and its tag
    experiment = client.get_experiment_by_name("chordrec").experiment_id
    (parent,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    parent_id = parent.info.run_id
    expected = ["figures/factors.png", "figures/learning_curves.png", "figures/tradeoff.png"]
    assert all("ood_val/majmin" in r.data.metrics for r in runs)  # hence the trade-off
    assert [a.path for a in client.list_artifacts(parent_id, "figures")] == expected
    best_value = max(r.data.metrics["val/frame_acc"] for r in runs)
    best_ids = [r.info.run_id for r in runs if r.data.metrics["val/frame_acc"] == best_value]
    assert parent.data.metrics["sweep/best_value"] == best_value
    assert parent.data.metrics["sweep/runs_finished"] == 4
    assert parent.data.metrics["sweep/runs_failed"] == 0
    assert parent.data.tags["sweep.best_run_id"] in best_ids
    summary = _artifact_text(client, parent_id, "summary.md", tmp_path / "1")
    best = parent.data.tags["sweep.best_run_id"]
    assert f"(`{best}`): val/frame_acc {100 * best_value:.2f} %" in summary
    assert "| model |" in summary and "| seq_len |" in summary and "**Verdict**" in summary

    # a second launch into the sweep directory (another seed of one configuration)
    # updates the same artifacts, with every run so far and now a seed spread
    _, _, runs = _sweep(data_root, tmp_path, "model=rnn_table4", "seq_len=32", "seed=1", lr)
    (again,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    assert again.info.run_id == parent_id and len(runs) == 5
    assert [a.path for a in client.list_artifacts(parent_id, "figures")] == expected
    names = [a.path for a in client.list_artifacts(parent_id)]
    assert names == ["figures", "runs.csv", "runs.md", "summary.md"]
    steps = client.get_metric_history(parent_id, "sweep/runs_finished")
    assert sorted((m.step, m.value) for m in steps) == [(4, 4.0), (5, 5.0)]
    summary = _artifact_text(client, parent_id, "summary.md", tmp_path / "2")
    assert "5 finished" in summary and "Seed-to-seed spread" in summary
    assert all(r.info.run_id[:8] in summary for r in runs)

    # chordrec sweep show: the same summary, by sweep id, with links into the UI
    sweep_id = again.data.tags["sweep_id"]
    assert cli.main(["sweep", "show", sweep_id, "--store", str(tmp_path / "mlruns")]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(summary)
    assert (
        f"MLflow UI, parent run: http://127.0.0.1:5000/#/experiments/{experiment}/runs/{parent_id}?"
        in shown
    )
    assert "MLflow UI, top five runs compared: " in shown
    assert cli.main(["sweep", "show", "0123456789abcdef", "--store", str(tmp_path / "mlruns")]) == 1
    assert "no sweep '0123456789abcdef'" in capsys.readouterr().err


def _artifact_text(client, run_id: str, path: str, into: Path) -> str:
    into.mkdir()
    return Path(client.download_artifacts(run_id, path, str(into))).read_text()
