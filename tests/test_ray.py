"""The Ray launcher (``hydra/launcher=ray``) on a real two-node Ray cluster, 127.0.0.1 only.

One sweep of five jobs runs on a cluster of two nodes with one CPU each (``ray``'s own
``cluster_utils.Cluster``, both nodes in this process's tree), logging to a ``chordrec
server`` on SQLite. No file system is shared on purpose: every run fetches the data set
into an empty directory from ``data.fetch_source`` and logs its artifacts through the
server. One job fails (crnn2 needs seq_len >= 12); the others still finish. While the
sweep runs, a thread records every TCP listener of this process's children (the cluster,
the sweep and its jobs): all must be on 127.0.0.1. On a local Ray, a job whose worker
process dies (SIGKILL) comes back to the launcher failed, carrying Ray's error.

Ray's state (its temporary directory, the token it keeps in ``~/.ray``) lives in this
module's own directories: ``HOME`` and ``RAY_TMPDIR`` point there while it runs.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.tracking import MlflowClient

from chordrec.bench.launchers import TINY
from chordrec.data.fetch import dataset_digest, verify_dataset
from tests.conftest import OOD, free_port, subprocess_env
from tests.test_server import answers_health, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.system]

SEQ_LENS = (4, 12, 16, 24, 32)
"""The sweep's five jobs (each on the benchmark's tiny budget, one CPU): crnn2 at each
length; it needs seq_len >= 12, so 4 fails."""

SERVER_START_S = 90
SWEEP_TIMEOUT_S = 600
"""The sweep of five jobs on the two-node cluster: 165 s alone on 2 vCPUs; over 300 s while
the other test process installs the wheel test's torch (a fresh clone, 2026-12-05)."""

RAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
"""Ray's token authentication settings: unset here, so that Ray does what it does by default."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def ray_env(workdir: Path) -> Iterator[None]:
    """``HOME`` and ``RAY_TMPDIR`` in directories of this module's own (the latter short:
    Ray's socket paths must stay under 108 bytes), ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    and Ray's token authentication settings unset (:data:`RAY_AUTH_ENV`) in this process's
    environment, restored after (a local ``ray.init`` sets ``RAY_AUTH_MODE`` in it)."""
    ray_tmp = tempfile.mkdtemp(prefix="cr-")
    (workdir / "home").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(workdir / "home"))
        env.setenv("RAY_TMPDIR", ray_tmp)
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        for name in RAY_AUTH_ENV:
            env.setenv(name, "")  # recorded, so that undoing removes what Ray sets later
            env.delenv(name)
        # Ray reads it when imported: set what it read, should this process have imported it
        env.setattr("ray._private.ray_constants.ENABLE_RAY_CLUSTER", False)
        try:
            yield
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)


@dataclass(frozen=True)
class Services:
    """What the sweep runs on: the Ray cluster and the tracking server."""

    cluster: Any  # ray.cluster_utils.Cluster
    uri: str
    server: subprocess.Popen


@pytest.fixture(scope="module")
def services(ray_env: None, workdir: Path) -> Iterator[Services]:
    """Side by side, to save time: a Ray cluster of two nodes with one CPU each (head
    included) on 127.0.0.1, and ``chordrec server`` on a SQLite store, artifacts served
    through it, on a free 127.0.0.1 port. Both stopped after (the server's session)."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "chordrec", "server",
                "--backend-store-uri", f"sqlite:///{workdir / 'server' / 'mlflow.db'}",
                "--artifacts-dir", str(workdir / "server" / "artifacts"),
                "--port", str(port),
            ],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(),
            start_new_session=True,
        )  # fmt: skip
    from ray.cluster_utils import Cluster

    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "include_dashboard": False,
                "node_ip_address": "127.0.0.1",
            },
        )
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        deadline = time.monotonic() + SERVER_START_S
        while not answers_health(uri):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chordrec server did not answer on {uri}:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield Services(cluster, uri, server)
    finally:
        if cluster is not None:
            cluster.shutdown()
        stop_server(server)


class Listeners:
    """Every TCP listener of this process's children (recursively) but those of
    ``exclude``'s tree, recorded every half second while the context is open, as
    ``(process name, ip, port)``."""

    def __init__(self, exclude: psutil.Process | None = None) -> None:
        self.exclude = exclude
        self.found: set[tuple[str, str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Listeners:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while True:
            self.record()
            if self._stop.wait(0.5):
                return

    def record(self) -> None:
        skip = set()
        if self.exclude is not None:
            try:
                skip = {self.exclude.pid, *(p.pid for p in self.exclude.children(recursive=True))}
            except psutil.NoSuchProcess:
                pass
        ours = {p.pid: p for p in psutil.Process().children(recursive=True) if p.pid not in skip}
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.pid in ours:
                try:
                    name = ours[conn.pid].name()
                except psutil.NoSuchProcess:
                    name = "?"
                self.found.add((name, conn.laddr.ip, conn.laddr.port))


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` is a loopback address (``::ffff:127.0.0.1`` included)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_a_sweep_runs_its_jobs_on_both_nodes_and_reports_the_failed_one(
    services: Services, workdir: Path, data_root: Path
) -> None:
    cluster, uri = services.cluster, services.uri
    node_data = workdir / "node-data" / "rwc-pop"  # empty: every run makes sure it is there
    command = [
        sys.executable, "-m", "chordrec.train", "-m",
        "hydra/launcher=ray", f"hydra.launcher.address={cluster.address}",
        f"hydra.sweep.dir={workdir / 'sweep'}",
        f"tracking.uri={uri}", f"tracking.store_dir={workdir / 'local'}",
        f"data.root={node_data}", f"data.fetch_source={data_root}", f"ood.root={OOD}",
        *TINY, "model=crnn2", f"seq_len={','.join(map(str, SEQ_LENS))}",
    ]  # fmt: skip
    with Listeners(exclude=psutil.Process(services.server.pid)) as listeners:
        sweep = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, env=subprocess_env(),
            timeout=SWEEP_TIMEOUT_S,
        )  # fmt: skip
        listeners.record()  # the cluster's, after the sweep

    # the sweep fails, naming the failed job and its error, after every job ended
    assert sweep.returncode != 0, sweep.stdout[-3000:]
    assert "Error executing job with overrides" in sweep.stderr and "seq_len=4" in sweep.stderr
    assert "model needs seq_len >= 12" in sweep.stderr, sweep.stderr[-3000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("chordrec").experiment_id
    runs = [r for r in client.search_runs([experiment]) if "kind" not in r.data.tags]
    status = {int(r.data.params["seq_len"]): r.info.status for r in runs}
    assert status == {4: "FAILED", **{n: "FINISHED" for n in SEQ_LENS[1:]}}, status
    (failed,) = [r for r in runs if r.info.status == "FAILED"]
    assert "model needs seq_len >= 12" in failed.data.tags["error"]
    (parent,) = client.search_runs([experiment], "tags.kind = 'sweep'")
    assert parent.info.status == "FAILED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}

    # every finished run: its metrics on the server, its artifacts served through it, and
    # the data set it fetched for itself
    finished = [r for r in runs if r.info.status == "FINISHED"]
    for run in finished:
        assert {
            "train/loss",
            "val/acc",
            "val/frame_acc",
            "test/frame_acc",
        } <= run.data.metrics.keys()
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        downloaded = client.download_artifacts(
            run.info.run_id, "evaluation.json", str(workdir / run.info.run_id)
        )
        assert Path(downloaded).stat().st_size > 0
        assert run.data.tags["dataset_sha256"] == dataset_digest(data_root)
    verify_dataset(node_data)

    # the jobs ran on both nodes of the cluster, each run tagged with its node
    nodes = {node.node_id for node in cluster.list_all_nodes()}
    assert len(nodes) == 2
    assert {r.data.tags["ray_node_id"] for r in finished} == nodes
    assert {r.data.tags["ray_node_ip"] for r in runs} == {"127.0.0.1"}

    # every listener of Ray (cluster, sweep, jobs) was on 127.0.0.1
    gcs_port = int(cluster.address.rpartition(":")[2])
    assert any(port == gcs_port for _, _, port in listeners.found), listeners.found
    assert {name for name, _, _ in listeners.found} >= {"gcs_server", "raylet"}
    elsewhere = sorted(entry for entry in listeners.found if not is_loopback(entry[1]))
    assert not elsewhere, elsewhere


def test_a_local_ray_listens_on_127_0_0_1_only_and_leaves_nothing_behind(ray_env: None) -> None:
    import ray

    from hydra_plugins.chordrec_ray import ray_launcher

    ray_tmp = Path(os.environ["RAY_TMPDIR"])
    before = set(ray_tmp.iterdir())
    with Listeners() as listeners:
        assert ray_launcher.connect(None, local_cpus=1) is ray
        try:
            (temp_dir,) = set(ray_tmp.iterdir()) - before
            assert temp_dir.name.startswith("chordrec-ray-")
            assert ray.cluster_resources()["CPU"] == 1
            assert ray_launcher.connect(None, local_cpus=1) is ray  # once per process
            listeners.record()
            # a new local cluster turns on Ray's token authentication (RAY_AUTH_MODE
            # unset) and writes the token into HOME (this module's): for its owner only
            token = Path.home() / ".ray" / "auth_token"
            assert token.stat().st_mode & 0o777 == 0o600
        finally:
            ray_launcher.stop_local_ray(ray, str(temp_dir))
    assert not temp_dir.exists() and not ray.is_initialized()
    assert "raylet" in {name for name, _, _ in listeners.found}
    elsewhere = sorted(entry for entry in listeners.found if not is_loopback(entry[1]))
    assert not elsewhere, elsewhere


def test_a_job_whose_ray_worker_died_comes_back_failed_carrying_ray_s_error(
    ray_env: None,
) -> None:
    import ray
    from hydra.core.utils import JobStatus
    from omegaconf import OmegaConf

    from hydra_plugins.chordrec_ray import ray_launcher

    def die() -> None:  # defined here, Ray ships it by value: the worker imports no test
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would

    before = set(Path(os.environ["RAY_TMPDIR"]).iterdir())
    assert ray_launcher.connect(None, local_cpus=1) is ray
    (temp_dir,) = set(Path(os.environ["RAY_TMPDIR"]).iterdir()) - before
    try:
        job = OmegaConf.create({"seed": 1, "hydra": {"overrides": {"task": ["seed=1"]}}})
        ref = ray.remote(max_retries=0)(die).remote()
        result = ray_launcher.RayLauncher._result(ray, job, ref)
    finally:
        ray_launcher.stop_local_ray(ray, str(temp_dir))
    assert result.status == JobStatus.FAILED and result.overrides == ["seed=1"]
    assert "hydra" not in result.cfg and result.cfg.seed == 1
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        result.return_value  # noqa: B018 (what the sweeper does with a failed job)
