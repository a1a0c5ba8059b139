"""Tracking-server faults during a run, on a real PostgreSQL and a real MLflow server:
the server restarting, PostgreSQL restarting, the server staying down (then resume)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from chordrec import tracking
from chordrec.postgres import LocalPostgres
from tests.conftest import OOD, free_port, subprocess_env

pytestmark = pytest.mark.integration

EPOCH_METRICS = ("train/loss", "train/acc", "train/lr", "val/loss", "val/acc", "time/epoch_s")


class Lab:
    """A PostgreSQL cluster and an MLflow tracking server over it, each of which a test
    may stop and start again on the same port and database."""

    def __init__(self, directory: Path, log: Path) -> None:
        self.postgres = LocalPostgres(directory / "postgres", free_port())
        self.artifacts = directory / "artifacts"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.server: subprocess.Popen | None = None

    def start_server(self) -> None:
        command, env = tracking.tracking_server_command(
            self.postgres.url(), self.artifacts, "127.0.0.1", self.port, workers=1
        )
        with open(self.log, "a") as out:
            self.server = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return
            except OSError:
                assert self.server.poll() is None, self.log.read_text()[-3000:]
                time.sleep(0.3)
        raise AssertionError(f"no MLflow server on {self.url}: {self.log.read_text()[-3000:]}")

    def kill_server(self) -> None:
        """SIGKILL the server and its workers (a crash, not a shutdown)."""
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_server()
        self.postgres.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the module: each test leaves its server and database running."""
    # As root, PostgreSQL runs as the postgres user, who cannot enter pytest's tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="chordrec-lab-", dir="/var/tmp"))
    directory.chmod(0o755)
    started = Lab(directory, tmp_path_factory.mktemp("lab") / "server.log")
    try:
        started.postgres.open()
        started.start_server()
        yield started
    finally:
        started.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _train(
    lab: Lab, data_root: Path, tmp_path: Path, experiment: str, *overrides: str
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "chordrec.train",
            f"data.root={data_root}", f"ood.root={OOD}", f"tracking.uri={lab.url}", f"tracking.experiment={experiment}",
            f"tracking.store_dir={tmp_path / 'mlruns'}", f"hydra.run.dir={tmp_path / 'hydra'}",
            "split.max_songs=2", "data.level=beat", "seq_len=16", "trainer.num_threads=1",
            "trainer.progress=false", "tracking.log_model=false", "tracking.system_metrics=false",
            *overrides,
        ],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=subprocess_env(),
    )  # fmt: skip


def _wait_for_epoch(
    client: MlflowClient, experiment_name: str, epoch: int, run: subprocess.Popen
) -> str:
    """The id of the run in ``experiment_name`` once its ``val/acc`` of ``epoch`` is on
    the server."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert run.poll() is None, run.stdout.read() if run.stdout else ""
        experiment = client.get_experiment_by_name(experiment_name)
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and epoch in {
            m.step for m in client.get_metric_history(runs[0].info.run_id, "val/acc")
        }:
            return runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError(f"epoch {epoch} was not logged within 120 s")


def _assert_complete(client: MlflowClient, run_id: str, epochs: int) -> None:
    """FINISHED, every per-epoch metric at steps 1..epochs exactly once, final scores."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, epochs + 1)), (key, steps)
    assert "test/frame_acc" in run.data.metrics
    assert run.data.metrics["fit/epochs_run"] == epochs


def test_a_run_survives_the_server_and_then_postgresql_restarting(lab, data_root, tmp_path):
    client = MlflowClient(lab.url)
    run = _train(lab, data_root, tmp_path, "restarts", "trainer.max_epochs=5")
    run_id = _wait_for_epoch(client, "restarts", 1, run)
    lab.kill_server()  # the run's next writes wait in MLflow's retries
    time.sleep(3)
    lab.start_server()  # same port, same database
    _wait_for_epoch(client, "restarts", 3, run)
    lab.postgres._run("pg_ctl", "-D", str(lab.postgres.data), "-m", "immediate", "-w", "stop")
    time.sleep(3)
    lab.postgres.start()
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output[-3000:]
    _assert_complete(client, run_id, 5)
    best = client.download_artifacts(run_id, "checkpoints/best.pt", str(tmp_path))
    assert Path(best).stat().st_size > 0


def test_a_server_that_stays_down_stops_the_run_then_resume_finishes_it(lab, data_root, tmp_path):
    client = MlflowClient(lab.url)
    run = _train(
        lab, data_root, tmp_path, "down", "trainer.max_epochs=4", "tracking.server_wait_s=3"
    )
    run_id = _wait_for_epoch(client, "down", 1, run)
    lab.kill_server()
    started = time.monotonic()
    output, _ = run.communicate(timeout=300)
    waited = time.monotonic() - started
    assert run.returncode == 1, output[-3000:]
    message = output.strip().splitlines()[-1]
    assert message.startswith("chordrec.train: error: MLflow tracking server " + lab.url)
    assert f"resume={run_id} tracking.uri={lab.url}" in message
    assert waited < 60, waited  # bounded: retries of a few seconds, not MLflow's minutes
    local = tmp_path / "mlruns" / "checkpoints-in-progress" / run_id
    assert str(local) in message and (local / "last.pt").is_file()

    lab.start_server()
    assert client.get_run(run_id).info.status == "RUNNING"
    resumed = _train(lab, data_root, tmp_path, "down", f"resume={run_id}")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    _assert_complete(client, run_id, 4)
