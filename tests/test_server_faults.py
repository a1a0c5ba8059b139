"""Tracking-server faults during a run, on a real PostgreSQL and a real MLflow server:
the server restarting, PostgreSQL restarting, the server staying down (then resume), a
reply cut off after the server made a run, logged model or model version, and a server
that accepts requests and never answers."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from chordrec import tracking
from chordrec.server.postgres import LocalPostgres
from tests.conftest import OOD, free_port, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.system]

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


class CuttingProxy:
    """A proxy on a port of its own in front of the lab's MLflow server. It forwards each
    request and the server's whole reply, except that the reply to the next request to a
    path given to :meth:`cut_next` stops after its headers (the server has done the
    request; the client sees "Connection broken: IncompleteRead"), while :meth:`silent`
    it accepts requests and never answers them, and while :meth:`holding` it holds each
    request until the block ends. A server that refuses the connection gets the client
    "502 Bad Gateway", as a reverse proxy answers. Each reply's status and time are kept
    (:attr:`replies`)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[tuple[str, str]] = []
        self.cut: list[tuple[str, str]] = []  # the requests whose replies were cut off
        self.replies: list[tuple[int, float]] = []  # (status, time.monotonic()) of each
        self._replied = threading.Condition()
        self._to_cut: set[tuple[str, str]] = set()
        self._silent = threading.Event()
        self._answer_again = threading.Event()
        self._holding = threading.Event()
        self._held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._forward(self)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def cut_next(self, method: str, path: str) -> None:
        with self._lock:
            self._to_cut.add((method, path))

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.requests.count((method, path))

    @contextmanager
    def silent(self) -> Iterator[None]:
        """Accept and read every request in the block, and answer none (they are
        dropped, unanswered, when the block ends)."""
        self._answer_again.clear()
        self._silent.set()
        try:
            yield
        finally:
            self._silent.clear()
            self._answer_again.set()

    @contextmanager
    def holding(self) -> Iterator[threading.Event]:
        """Hold every request that arrives in the block, then forward them when it ends.
        Yields an event set once a request is held (its client waits on it)."""
        self._held.clear()
        self._release.clear()
        self._holding.set()
        try:
            yield self._held
        finally:
            self._holding.clear()
            self._release.set()

    def await_reply(self, status: Callable[[int], bool], since: int, timeout: float) -> int:
        """Wait until a reply after the first ``since`` has a status for which ``status``
        is true; return the index of the first such reply. Fails after ``timeout`` s."""
        with self._replied:
            found = self._replied.wait_for(
                lambda: next(
                    (i for i, (code, _) in enumerate(self.replies) if i >= since and status(code)),
                    None,
                ),
                timeout,
            )
        assert found is not None, f"no such reply in {timeout:g} s: {self.replies[since:]}"
        return found

    def close(self) -> None:
        self._answer_again.set()
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def _forward(self, client: socketserver.StreamRequestHandler) -> None:
        request_line = client.rfile.readline().decode("latin-1")
        if not request_line.strip():
            return
        method, target, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while (line := client.rfile.readline().decode("latin-1")).strip():
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        lengths = [v for k, v in headers.items() if k.lower() == "content-length"]
        assert not any(k.lower() == "transfer-encoding" for k in headers), headers
        body = client.rfile.read(int(lengths[0])) if lengths else b""
        path = target.split("?", 1)[0]
        with self._lock:
            self.requests.append((method, path))
        if self._silent.is_set():
            self._answer_again.wait(120)
            return  # the connection closes unanswered
        if self._holding.is_set():
            self._held.set()
            self._release.wait(120)
        server = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            forwarded = {
                k: v for k, v in headers.items() if k.lower() not in ("connection", "host")
            }
            server.request(method, target, body=body, headers=forwarded)
            reply = server.getresponse()
            status, reason, data = reply.status, reply.reason, reply.read()
            reply_headers = reply.getheaders()
        except ConnectionRefusedError:
            status, reason, data, reply_headers = 502, "Bad Gateway", b"connection refused", []
        finally:
            server.close()
        with self._replied:
            self.replies.append((status, time.monotonic()))
            self._replied.notify_all()
        head = [f"HTTP/1.1 {status} {reason}"]
        head += [
            f"{k}: {v}"
            for k, v in reply_headers
            if k.lower() not in ("connection", "content-length", "transfer-encoding")
        ]
        head += [f"Content-Length: {len(data)}", "Connection: close"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        with self._lock:
            cut = (method, path) in self._to_cut and bool(data)
            if cut:
                self._to_cut.discard((method, path))
                self.cut.append((method, path))
        client.wfile.write(raw if cut else raw + data)


@pytest.fixture
def proxy(lab: Lab) -> Iterator[CuttingProxy]:
    started = CuttingProxy(lab.port)
    try:
        yield started
    finally:
        started.close()


def _train(
    url: str, data_root: Path, tmp_path: Path, experiment: str, *overrides: str
) -> subprocess.Popen:
    """Start a run of two songs logging to the tracking server at ``url``."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "chordrec.train",
            f"data.root={data_root}", f"ood.root={OOD}", f"tracking.uri={url}", f"tracking.experiment={experiment}",
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


def test_a_run_survives_the_server_and_then_postgresql_restarting(lab, proxy, data_root, tmp_path):
    """The run logs through the proxy. Each outage begins while one of its requests is
    held (the run waits on it), and ends only once the run has had a failed reply from
    the outage: 502 (refused) while the server is down, a 5xx from the server while its
    database is."""
    client = MlflowClient(lab.url)
    run = _train(proxy.url, data_root, tmp_path, "restarts", "trainer.max_epochs=5")
    run_id = _wait_for_epoch(client, "restarts", 1, run)

    since = len(proxy.replies)
    with proxy.holding() as held:
        assert held.wait(120), "the run sent no request"
        lab.kill_server()
    proxy.await_reply(lambda status: status == 502, since, timeout=60)
    assert run.poll() is None  # the run, waiting for the server, goes on
    lab.start_server()  # same port, same database
    _wait_for_epoch(client, "restarts", 3, run)

    since = len(proxy.replies)
    with proxy.holding() as held:
        assert held.wait(120), "the run sent no request"
        lab.postgres._run("pg_ctl", "-D", str(lab.postgres.data), "-m", "immediate", "-w", "stop")
    proxy.await_reply(lambda status: 500 <= status != 502, since, timeout=60)
    assert run.poll() is None  # the run, waiting for the database, goes on
    lab.postgres.start()

    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output[-3000:]
    _assert_complete(client, run_id, 5)
    best = client.download_artifacts(run_id, "checkpoints/best.pt", str(tmp_path))
    assert Path(best).stat().st_size > 0


def test_a_server_that_stays_down_stops_the_run_then_resume_finishes_it(
    lab, proxy, data_root, tmp_path
):
    wait = 3
    client = MlflowClient(lab.url)
    overrides = ["trainer.max_epochs=4", f"tracking.server_wait_s={wait}"]
    run = _train(proxy.url, data_root, tmp_path, "down", *overrides)
    run_id = _wait_for_epoch(client, "down", 1, run)
    since = len(proxy.replies)
    with proxy.holding() as held:
        assert held.wait(120), "the run sent no request"
        lab.kill_server()
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1, output[-3000:]
    message = output.strip().splitlines()[-1]
    assert message.startswith("chordrec.train: error: MLflow tracking server " + proxy.url)
    assert f"tracking.server_wait_s = {wait} s" in message
    assert f"resume={run_id} tracking.uri={proxy.url}" in message
    # the call retried the refused server for about the wait, not MLflow's minutes
    refused = [at for status, at in proxy.replies[since:] if status == 502]
    assert len(refused) >= 2 and refused[-1] - refused[0] < wait + 1, refused
    local = tmp_path / "mlruns" / "checkpoints-in-progress" / run_id
    assert str(local) in message and (local / "last.pt").is_file()

    lab.start_server()
    assert client.get_run(run_id).info.status == "RUNNING"
    resumed = _train(lab.url, data_root, tmp_path, "down", f"resume={run_id}")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    _assert_complete(client, run_id, 4)


RUNS_CREATE = ("POST", "/api/2.0/mlflow/runs/create")
LOGGED_MODELS_CREATE = ("POST", "/api/2.0/mlflow/logged-models")
VERSIONS_CREATE = ("POST", "/api/2.0/mlflow/model-versions/create")


def test_a_run_whose_creation_reply_is_cut_off_is_created_once(lab, proxy):
    tracking.configure(tracking_uri=proxy.url)
    proxy.cut_next(*RUNS_CREATE)
    with tracking.RunTracker(experiment="cut-run", system_metrics=False) as tracker:
        tracker.log_metrics({"val/acc": 0.5}, step=1)
    assert proxy.cut == [RUNS_CREATE], proxy.requests  # the server made the run, unheard
    assert proxy.count(*RUNS_CREATE) == 1  # found, not asked again
    client = MlflowClient(lab.url)
    experiment = client.get_experiment_by_name("cut-run")
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(tracker.run_id, "FINISHED")]
    assert runs[0].data.metrics == {"val/acc": 0.5}


def test_a_model_and_a_version_whose_creation_replies_are_cut_off_are_made_once(
    lab, proxy, tmp_path
):
    tracking.configure(tracking_uri=proxy.url)
    best = tmp_path / "best.pt"
    torch.save({"weights": torch.zeros(2)}, best)
    proxy.cut_next(*LOGGED_MODELS_CREATE)
    with tracking.RunTracker(experiment="cut-model", system_metrics=False) as tracker:
        tracker.log_checkpoint(best)
        model_uri = tracker.log_model(torch.nn.Linear(4, 3), np.zeros((2, 4), np.float32))
    proxy.cut_next(*VERSIONS_CREATE)
    version = tracking.register_run_model(tracker.run_id, name="cut-model", alias="champion")
    assert proxy.cut == [LOGGED_MODELS_CREATE, VERSIONS_CREATE], proxy.requests
    assert proxy.count(*LOGGED_MODELS_CREATE) == proxy.count(*VERSIONS_CREATE) == 1

    client = MlflowClient(lab.url)
    models = client.search_logged_models([tracker.experiment_id])
    assert [(m.model_uri, m.status.value) for m in models] == [(model_uri, "READY")]
    assert "MLmodel" in {f.path for f in client.list_logged_model_artifacts(models[0].model_id)}
    versions = client.search_model_versions("name = 'cut-model'")
    assert [str(v.version) for v in versions] == [version] == ["1"]
    assert client.get_model_version_by_alias("cut-model", "champion").version == "1"
    assert tracking.registered_run_id("models:/cut-model@champion") == tracker.run_id


def test_a_server_that_accepts_and_never_answers_ends_a_logging_call_within_the_wait(lab, proxy):
    wait = 2.0
    tracking.configure(tracking_uri=proxy.url, server_wait_s=wait)
    with tracking.RunTracker(experiment="silent", system_metrics=False) as tracker:
        with proxy.silent():
            started = time.monotonic()
            with pytest.raises(tracking.ServerUnavailable) as raised:
                tracker.log_metrics({"val/acc": 0.5}, step=1)
            waited = time.monotonic() - started
        tracker.log_metrics({"val/acc": 0.75}, step=2)  # answered again: the run goes on
    message = str(raised.value)
    assert message.startswith(f"MLflow tracking server {proxy.url} did not answer"), message
    assert "tracking.server_wait_s = 2 s" in message
    assert waited < 2 * wait + 3, waited  # one call, not MLflow's retries times chordrec's
    run = MlflowClient(lab.url).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"val/acc": 0.75}
