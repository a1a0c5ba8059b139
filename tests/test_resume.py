"""A training process killed with SIGKILL, then resumed, ends FINISHED with one continuous history."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

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
