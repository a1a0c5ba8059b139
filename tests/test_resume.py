"""A training process killed with SIGKILL, then resumed, ends FINISHED with one continuous
history; a resume never replaces a newer local checkpoint with the run's older logged one."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from chordrec import tracking
from chordrec.io.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from chordrec.run import resume_checkpoint
from tests.conftest import OOD, REPO, subprocess_env

pytestmark = pytest.mark.integration

EPOCHS = 5


def _train(data_root, store, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chordrec.train",
            f"data.root={data_root}",
            f"ood.root={OOD}",
            f"tracking.store_dir={store}",
            "split.max_songs=2",
            "trainer.num_threads=1",
            f"trainer.max_epochs={EPOCHS}",
            "trainer.progress=false",
            "tracking.system_metrics=false",
            "tracking.log_model=false",
            "seq_len=16",
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
        start_new_session=True,
    )


@pytest.mark.device
def test_sigkill_then_resume_gives_one_continuous_run(data_root, tmp_path):
    store = tmp_path / "mlruns"
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    client = MlflowClient()
    process = _train(data_root, store, "hydra.run.dir=" + str(tmp_path / "run1"))
    run_id = None
    for line in process.stdout:
        match = re.search(r"MLflow run id: (\w+)", line)
        if match:
            run_id = match.group(1)
            break
    assert run_id, "the training process printed no run id"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until two epochs are logged, then kill
        if len(client.get_metric_history(run_id, "val/acc")) >= 2:
            break
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = client.get_run(run_id)
    assert killed.info.status == "RUNNING"  # SIGKILL leaves no chance to close the run
    logged_before = len(client.get_metric_history(run_id, "val/acc"))
    assert 2 <= logged_before < EPOCHS

    resumed = _train(
        data_root, store, f"resume={run_id}", "hydra.run.dir=" + str(tmp_path / "run2")
    )
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    assert f"MLflow run id: {run_id}" in output

    final = client.get_run(run_id)
    assert final.info.status == "FINISHED"
    runs = client.search_runs([final.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    for key in ("train/loss", "val/loss", "val/acc", "train/lr", "time/epoch_s"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, EPOCHS + 1)), (key, steps)
    assert final.data.metrics["fit/epochs_run"] == EPOCHS
    assert "test/frame_acc" in final.data.metrics


def test_sigterm_ends_the_run_killed(data_root, tmp_path):
    store = tmp_path / "mlruns"
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    client = MlflowClient()
    process = _train(data_root, store, "hydra.run.dir=" + str(tmp_path / "run"))
    run_id = next(
        (m.group(1) for line in process.stdout if (m := re.search(r"MLflow run id: (\w+)", line))),
        None,
    )
    assert run_id, "the training process printed no run id"
    deadline = time.monotonic() + 120
    while not client.get_metric_history(run_id, "val/acc") and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert client.get_run(run_id).info.status == "KILLED"


# ------------------------------------------- the newer local checkpoint is kept (issue 24)


def _checkpoint(epoch: int, where: str) -> dict:
    return {"epoch": epoch, "where": where, "weights": torch.full((4,), float(epoch))}


@pytest.fixture(scope="module")
def logged_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real SQLite MLflow store with one run whose logged last.pt and best.pt are
    epoch 2's: the store's directory and the run's id."""
    root = tmp_path_factory.mktemp("logged")
    store = root / "mlruns"
    tracking.configure(store, f"sqlite:///{store}/mlflow.db")
    written = {
        name: save_checkpoint(_checkpoint(2, "logged"), root / f"{name}.pt")
        for name in ("best", "last")
    }
    with tracking.RunTracker(store_dir=store, system_metrics=False) as tracker:
        tracker.log_epoch(2, {"val/acc": 0.5}, written)
    return store, tracker.run_id


@pytest.fixture
def logged_run(logged_store: tuple[Path, str]) -> str:
    """The run of ``logged_store``, its store the one chordrec talks to."""
    store, run_id = logged_store
    tracking.configure(store, f"sqlite:///{store}/mlflow.db")
    return run_id


def _local(directory: Path, epoch: int) -> dict[str, bytes]:
    """last.pt and best.pt of ``epoch`` in ``directory``, as a run whose server stopped
    answering leaves them; returns their bytes."""
    for name in ("best", "last"):
        save_checkpoint(_checkpoint(epoch, "local"), directory / f"{name}.pt")
    return {name: (directory / f"{name}.pt").read_bytes() for name in ("best", "last")}


def test_resume_keeps_a_newer_local_checkpoint(logged_run: str, tmp_path: Path) -> None:
    """The local last.pt of epoch 3 (which the server-gone error named) is resumed from;
    the server's older epoch 2 copy never replaces it or its best.pt."""
    directory = tmp_path / "checkpoints-in-progress" / logged_run
    local = _local(directory, 3)
    resumed = resume_checkpoint(logged_run, directory)
    assert (resumed["epoch"], resumed["where"]) == (3, "local")
    assert {n: (directory / f"{n}.pt").read_bytes() for n in ("best", "last")} == local
    assert sorted(p.name for p in directory.iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("local_epoch", [None, 1])
def test_resume_takes_the_logged_checkpoint_when_no_newer_one_is_here(
    logged_run: str, tmp_path: Path, local_epoch: int | None
) -> None:
    directory = tmp_path / "checkpoints-in-progress" / logged_run
    if local_epoch is not None:
        _local(directory, local_epoch)
    resumed = resume_checkpoint(logged_run, directory)
    assert (resumed["epoch"], resumed["where"]) == (2, "logged")
    for name in ("best", "last"):
        assert load_checkpoint(directory / f"{name}.pt")["where"] == "logged"
    assert sorted(p.name for p in directory.iterdir()) == ["best.pt", "last.pt"]


def test_an_unreadable_local_checkpoint_is_named_with_the_logged_one(
    logged_run: str, tmp_path: Path
) -> None:
    directory = tmp_path / "checkpoints-in-progress" / logged_run
    directory.mkdir(parents=True)
    (directory / "last.pt").write_bytes(b"")  # what a power loss left before fsync
    with pytest.raises(CheckpointError) as refused:
        resume_checkpoint(logged_run, directory)
    message = str(refused.value)
    assert message.startswith(f"{directory / 'last.pt'}: not resumed from (")
    assert message.endswith(
        f"remove it to resume from checkpoints/last.pt of run {logged_run} (epoch 2)"
    )
    assert (directory / "last.pt").read_bytes() == b""
    assert sorted(p.name for p in directory.iterdir()) == ["last.pt"]
