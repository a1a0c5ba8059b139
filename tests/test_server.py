"""`chordrec server` end to end: a real local PostgreSQL cluster and ``mlflow server``
(artifacts served through it), with real training runs, resume after SIGKILL, tables,
the model registry and start-up errors against it. Nothing is mocked.

One server (module-scoped) serves every test; it binds 127.0.0.1 on free ports, and
its PostgreSQL directory lives under /var/tmp because, run as root, PostgreSQL runs as
the ``postgres`` user, which cannot enter pytest's 0700 temporary directories.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from chordrec import tracking
from chordrec.io.chord_files import read_lab
from chordrec.server.postgres import LocalPostgres, PostgresError, postgres_bin_dir
from tests.conftest import OOD, free_port, run_chordrec, signal_after_an_epoch, subprocess_env
from tests.test_features import write_song

pytestmark = [pytest.mark.integration, pytest.mark.system]

# What every training run here shares: test_study's TINY budget at beat level.
TINY = [
    "trainer.num_threads=1",
    "trainer.progress=false",
    "tracking.system_metrics=false",
    "data.level=beat",
    "seq_len=16",
]

# The run compared between the server and SQLite, then registered and transcribed with:
# two songs per part, two epochs, the model logged (what `chordrec register` needs).
COMPARED = [*TINY, "split.max_songs=2", "trainer.max_epochs=2", "tracking.log_model=true"]

# The run killed (once it has logged an epoch, the metric table held: see
# conftest.signal_after_an_epoch) and resumed.
RESUMED_EPOCHS = 3
RESUMED = [
    *TINY,
    "data.level=frame",
    "data.batch_size=4",
    "split.max_songs=2",
    f"trainer.max_epochs={RESUMED_EPOCHS}",
    "tracking.log_model=false",
]

# The study compared between the server and SQLite: test_study's tiny budget.
STUDIED = ["split.max_songs=1", "trainer.max_epochs=1", *TINY[:3], "tracking.log_model=false"]

# Each start-up error must come before any training: this budget is never reached.
FAILING = [*TINY, "split.max_songs=1", "trainer.max_epochs=1", "tracking.log_model=false"]

SERVER_START_S = 90
TRAIN_TIMEOUT_S = 300


@dataclass(frozen=True)
class Server:
    """A running `chordrec server` and what it was started with."""

    process: subprocess.Popen
    port: int
    postgres_port: int
    postgres_dir: Path
    artifacts_dir: Path
    log: Path

    @property
    def uri(self) -> str:
        """The tracking URI runs reach the server with."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def password(self) -> str:
        """The generated PostgreSQL password (root's file, mode 0600)."""
        return (self.postgres_dir / "password").read_text().strip()

    def client(self) -> MlflowClient:
        """An MLflow client of the server."""
        return MlflowClient(self.uri)

    def output(self) -> str:
        """Everything the server has printed so far."""
        return self.log.read_text(errors="replace")


@dataclass(frozen=True)
class Trained:
    """The same short run, logged once through the server and once to a SQLite store."""

    server_run: str
    sqlite_run: str
    sqlite_uri: str


def listeners(port: int) -> list[str]:
    """The addresses of the TCP sockets listening on ``port`` (any interface)."""
    return [
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]


def answers_health(uri: str) -> bool:
    """Whether the MLflow server at ``uri`` answers /health now."""
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def all_runs(client: MlflowClient) -> list[Run]:
    """Every run in every experiment of ``client``'s store."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=1000) if experiments else []


def train(
    workdir: Path,
    name: str,
    overrides: Sequence[str],
    *,
    tracking: Sequence[str],
    merge_stderr: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``python -m chordrec.train`` in its own session from ``workdir``, its Hydra
    directory and in-progress checkpoints under ``workdir/name``; ``tracking`` says where
    it logs (``tracking.uri=...`` or ``tracking.store_dir=...``), ``env`` what it gets in
    its environment besides. Its output is piped, stderr into stdout with
    ``merge_stderr`` (for a caller reading stdout as it comes)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chordrec.train",
            f"hydra.run.dir={workdir / name / 'hydra'}",
            f"tracking.store_dir={workdir / name / 'mlruns'}",
            *overrides,
            *tracking,
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        env=subprocess_env(**(env or {})),
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = TRAIN_TIMEOUT_S) -> tuple[str, str]:
    """Wait for ``process`` and return its stdout and stderr; its whole session is
    killed if it runs past ``timeout``."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(process)
        out, err = process.communicate()
        pytest.fail(f"{process.args} ran past {timeout} s:\n{out[-2000:]}\n{err[-3000:]}")


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left of ``process``'s session (started with
    ``start_new_session``: its process group), the process itself included."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is empty
    process.wait()


def run_id_of(stdout: str) -> str:
    """The MLflow run id a training process printed."""
    match = re.search(r"MLflow run id: (\w+)", stdout)
    assert match, f"no run id printed:\n{stdout[-2000:]}"
    return match.group(1)


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's runs, downloads and outputs go."""
    return tmp_path_factory.mktemp("server")


def start_chordrec_server(
    args: Sequence[str], workdir: Path, log: Path, **env: str
) -> subprocess.Popen:
    """Start `chordrec server` ``args`` in its own session from ``workdir`` (``env``
    added to the environment), its output going to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "chordrec", "server", *args],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=subprocess_env(**env),
            start_new_session=True,
        )


def wait_until_serving(process: subprocess.Popen, uri: str, log: Path) -> None:
    """Wait until the server ``process`` started answers /health at ``uri``; fail with
    its output if it exits or takes longer than SERVER_START_S."""
    deadline = time.monotonic() + SERVER_START_S
    while not answers_health(uri):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"chordrec server did not answer /health within {SERVER_START_S} s "
                f"(exit status {process.poll()}):\n{log.read_text(errors='replace')[-5000:]}"
            )
        time.sleep(0.25)


def postgres_parent_dir() -> Path:
    """A new directory under /var/tmp that the postgres user may pass through (run as
    root, PostgreSQL runs as that user), to hold a cluster directory chordrec creates."""
    parent = Path(tempfile.mkdtemp(prefix="chordrec-test-pg-", dir="/var/tmp"))
    parent.chmod(0o755)
    return parent


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    """`chordrec server` over a fresh PostgreSQL cluster, on free 127.0.0.1 ports.

    Teardown: SIGTERM to chordrec (it stops mlflow, then PostgreSQL), then both ports
    must be free; whatever is left is killed and the cluster directory removed, also
    when a check fails."""
    try:
        postgres_bin_dir()
    except PostgresError as exc:
        pytest.skip(str(exc))
    postgres_dir = postgres_parent_dir() / "postgres"
    artifacts_dir = workdir / "server-artifacts"
    log = workdir / "server.log"
    port, postgres_port = free_port(), free_port()
    process = start_chordrec_server(
        [
            "--postgres-dir",
            str(postgres_dir),
            "--postgres-port",
            str(postgres_port),
            "--artifacts-dir",
            str(artifacts_dir),
            "--port",
            str(port),
        ],
        workdir,
        log,
    )
    started = Server(process, port, postgres_port, postgres_dir, artifacts_dir, log)
    try:
        wait_until_serving(process, started.uri, log)
        yield started
    finally:
        _stop(started)


def _stop(server: Server) -> None:
    """Stop ``server`` as Ctrl-C would (SIGTERM to chordrec) and check that it freed
    both ports; kill what is left and remove the cluster directory in any case."""
    problems = []
    try:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("chordrec server did not stop within 60 s of SIGTERM")
        deadline = time.monotonic() + 10
        while (busy := [p for p in (server.port, server.postgres_port) if listeners(p)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        if busy:
            problems.append(f"still listening after SIGTERM: ports {busy}")
    finally:
        kill_session(server.process)  # mlflow and its workers share chordrec's session
        if (server.postgres_dir / "data" / "PG_VERSION").exists():
            LocalPostgres(server.postgres_dir, server.postgres_port).stop()  # pg_ctl daemonises
        shutil.rmtree(server.postgres_dir.parent, ignore_errors=True)
    assert not problems, f"{problems}\nserver output:\n{server.output()[-3000:]}"


@pytest.fixture(scope="module")
def trained(server: Server, workdir: Path, data_root: Path) -> Trained:
    """The COMPARED run trained twice at once: through the server and into a SQLite
    store; both must exit 0."""
    sqlite_store = workdir / "sqlite" / "mlruns"
    data = [f"data.root={data_root}", f"ood.root={OOD}", *COMPARED]
    processes = {
        "server": train(workdir, "server", data, tracking=[f"tracking.uri={server.uri}"]),
        "sqlite": train(workdir, "sqlite", data, tracking=[f"tracking.store_dir={sqlite_store}"]),
    }
    outputs = {}
    try:
        for name, process in processes.items():
            outputs[name] = finish(process)
            assert process.returncode == 0, f"{name} run failed:\n{outputs[name][1][-3000:]}"
    finally:
        for process in processes.values():
            kill_session(process)
    return Trained(
        server_run=run_id_of(outputs["server"][0]),
        sqlite_run=run_id_of(outputs["sqlite"][0]),
        sqlite_uri=f"sqlite:///{sqlite_store / 'mlflow.db'}",
    )


# ------------------------------------------------------------------------ the server


def test_the_server_listens_locally_and_keeps_its_password_secret(server: Server) -> None:
    password_file = server.postgres_dir / "password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = server.password
    assert len(password) >= 16
    # mlflow runs under chordrec, and PostgreSQL answers on its port, 127.0.0.1 only
    tree = psutil.Process(server.process.pid).children(recursive=True)
    assert any("mlflow" in " ".join(p.cmdline()) and "server" in p.cmdline() for p in tree)
    for port in (server.port, server.postgres_port):
        addresses = listeners(port)
        assert addresses and set(addresses) == {"127.0.0.1"}, (port, addresses)
    # no process shows the password on its command line (`ps`), nor does the server say it
    for process in psutil.process_iter(["pid", "cmdline"]):
        assert password not in " ".join(process.info["cmdline"] or []), process.info["pid"]
    output = server.output()
    assert password not in output
    assert f"postgresql://chordrec:***@127.0.0.1:{server.postgres_port}/mlflow" in output


# ------------------------------------------------------------------------ training


def test_a_run_through_the_server_is_recorded_like_one_in_sqlite(
    server: Server, trained: Trained, workdir: Path
) -> None:
    remote, local = server.client(), MlflowClient(trained.sqlite_uri)
    ours, theirs = remote.get_run(trained.server_run), local.get_run(trained.sqlite_run)
    assert ours.info.status == theirs.info.status == "FINISHED"

    # the same metric keys, the same values (seeded, one thread) except wall times
    assert set(ours.data.metrics) == set(theirs.data.metrics)
    compared = {k for k in ours.data.metrics if not k.startswith("time/")}
    differ = {k for k in compared if ours.data.metrics[k] != theirs.data.metrics[k]}
    assert not differ, {k: (ours.data.metrics[k], theirs.data.metrics[k]) for k in differ}
    for key in ("train/loss", "val/loss", "val/acc"):
        history = [(m.step, m.value) for m in remote.get_metric_history(ours.info.run_id, key)]
        expected = [(m.step, m.value) for m in local.get_metric_history(theirs.info.run_id, key)]
        assert sorted(history) == sorted(expected) and len(history) == 2, key

    # the same params but where it logs, the same data set inputs
    def params(run: Run) -> dict[str, str]:
        return {
            k: v for k, v in run.data.params.items() if not k.startswith(("tracking.", "paths."))
        }

    assert params(ours) == params(theirs)
    assert ours.data.params["tracking.uri"] == server.uri

    def inputs(run: Run) -> set[tuple]:
        return {
            (
                d.dataset.name,
                d.dataset.digest,
                d.dataset.source_type,
                d.dataset.source,
                tuple(sorted((t.key, t.value) for t in d.tags)),
            )
            for d in run.inputs.dataset_inputs
        }

    assert inputs(ours) == inputs(theirs) and len(inputs(ours)) == 4  # RWC-Pop's 3, OOD
    assert ours.data.tags["dataset_sha256"] == theirs.data.tags["dataset_sha256"]

    # artifacts go through the server into its --artifacts-dir, not a client-side path
    uri = ours.info.artifact_uri
    assert uri.startswith("mlflow-artifacts:"), uri
    stored = server.artifacts_dir / urlsplit(uri).path.lstrip("/")
    figures = sorted(a.path for a in local.list_artifacts(theirs.info.run_id, "figures"))
    assert (
        figures
        and sorted(a.path for a in remote.list_artifacts(ours.info.run_id, "figures")) == figures
    )
    downloads = workdir / "downloads"
    downloads.mkdir()
    for path in ("checkpoints/best.pt", *figures):
        downloaded = Path(remote.download_artifacts(ours.info.run_id, path, str(downloads)))
        assert downloaded.read_bytes() == (stored / path).read_bytes(), path
    assert not (workdir / "server" / "mlruns" / "artifacts").exists()


def test_a_run_killed_with_sigkill_resumes_through_the_server(
    server: Server, workdir: Path, data_root: Path
) -> None:
    client = server.client()
    overrides = [f"data.root={data_root}", f"ood.root={OOD}", *RESUMED]
    where = [f"tracking.uri={server.uri}"]
    process = train(workdir, "killed", overrides, tracking=where, merge_stderr=True)
    try:
        run_id, lines = None, []
        for line in process.stdout:
            lines.append(line)
            if match := re.search(r"MLflow run id: (\w+)", line):
                run_id = match.group(1)
                break
        assert run_id, f"no run id printed: {''.join(lines)[-3000:]}"
        database = LocalPostgres(server.postgres_dir, server.postgres_port).url()
        logged = signal_after_an_epoch(process, run_id, database, timeout=TRAIN_TIMEOUT_S)
    finally:
        kill_session(process)
        process.stdout.close()
    killed = client.get_run(run_id)
    assert killed.info.status == "RUNNING"  # SIGKILL leaves no chance to end the run
    assert len(client.get_metric_history(run_id, "val/acc")) == logged
    assert 1 <= logged < RESUMED_EPOCHS
    runs_before = {r.info.run_id for r in all_runs(client)}

    resumed = train(workdir, "resumed", [*overrides, f"resume={run_id}"], tracking=where)
    out, err = finish(resumed)
    assert resumed.returncode == 0, err[-3000:]
    assert run_id_of(out) == run_id

    final = client.get_run(run_id)
    assert final.info.status == "FINISHED"
    assert {r.info.run_id for r in all_runs(client)} == runs_before  # no new run
    for key in ("val/acc", "val/loss", "train/loss", "train/lr", "time/epoch_s"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, RESUMED_EPOCHS + 1)), (key, steps, logged)
    assert final.data.metrics["fit/epochs_run"] == RESUMED_EPOCHS
    assert "test/frame_acc" in final.data.metrics


def test_a_study_through_the_server_is_recorded_like_one_in_sqlite(
    server: Server, workdir: Path, data_root: Path
) -> None:
    """`chordrec study` (presets a and d) through the server and into a SQLite store at
    the same time: the same members, metrics and Table 5."""
    stores = {"server": ["--tracking-uri", server.uri], "sqlite": ["--store", "study-sqlite"]}
    studies = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chordrec",
                "study",
                "--presets",
                "a,d",
                "--study-id",
                f"study-{name}",
                "--jobs",
                "1",
                *where,
                f"data.root={data_root}",
                f"ood.root={OOD}",
                f"hydra.sweep.dir={workdir / f'study-{name}'}",
                *STUDIED,
            ],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            start_new_session=True,
        )
        for name, where in stores.items()
    }
    try:
        outputs = {name: finish(process) for name, process in studies.items()}
    finally:
        for process in studies.values():
            kill_session(process)
    for name, process in studies.items():
        assert process.returncode == 0, (name, outputs[name][1][-3000:])

    clients = {
        "server": server.client(),
        "sqlite": MlflowClient(f"sqlite:///{workdir}/study-sqlite/mlflow.db"),
    }
    members = {}
    for name, client in clients.items():
        experiment = client.get_experiment_by_name("chordrec").experiment_id
        runs = client.search_runs([experiment], f"tags.study = 'study-{name}'")
        (parent,) = [r for r in runs if r.data.tags.get("kind") == "study"]
        assert parent.info.status == "FINISHED"
        assert "table5.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
        members[name] = {r.data.tags["preset"]: r for r in runs if r is not parent}
    assert sorted(members["server"]) == sorted(members["sqlite"]) == ["a", "d"]
    for preset, ours in members["server"].items():
        theirs = members["sqlite"][preset]
        assert ours.info.status == theirs.info.status == "FINISHED"
        assert set(ours.data.metrics) == set(theirs.data.metrics)
        differ = {
            k: (v, theirs.data.metrics[k])
            for k, v in ours.data.metrics.items()
            if not k.startswith("time/") and v != theirs.data.metrics[k]
        }
        assert not differ, (preset, differ)
        assert ours.info.artifact_uri.startswith("mlflow-artifacts:")

    # the study's run table rebuilt from each store: the same rows but for run ids and
    # training times
    def rows(name: str) -> list[list[str]]:
        table = run_chordrec(
            "table",
            "--runs",
            "--study",
            f"study-{name}",
            *stores[name],
            "--format",
            "csv",
            cwd=workdir,
        )
        assert table.returncode == 0, (name, table.stderr[-3000:])
        header, *lines = list(csv.reader(io.StringIO(table.stdout)))
        assert header[-1] == "training time" and len(lines) == 2, table.stdout
        by_id = {run.info.run_id: preset for preset, run in members[name].items()}
        return sorted([by_id[line[0]], *line[1:-1]] for line in lines)

    assert rows("server") == rows("sqlite")


# ------------------------------------------------------------------------ reading runs


def run_table_row(uri: str, run_id: str, workdir: Path) -> dict[str, str]:
    """Run ``run_id``'s row of `chordrec table --runs` over the store at ``uri``, as
    column -> value, without the columns that depend on the store's other runs (the
    settings that differ between them) or on wall time."""
    table = run_chordrec("table", "--runs", "--tracking-uri", uri, "--format", "csv", cwd=workdir)
    assert table.returncode == 0, table.stderr[-3000:]
    header, *lines = list(csv.reader(io.StringIO(table.stdout)))
    assert header[0] == "" and all(len(line) == len(header) for line in lines), table.stdout
    (row,) = [dict(zip(header, line, strict=True)) for line in lines if line[0] == run_id]
    return {k: v for k, v in row.items() if "%" in k or k.startswith("epochs")}


def test_the_run_table_lists_the_servers_runs_as_sqlite_does(
    server: Server, trained: Trained, workdir: Path
) -> None:
    ours = run_table_row(server.uri, trained.server_run, workdir)
    theirs = run_table_row(trained.sqlite_uri, trained.sqlite_run, workdir)
    assert ours == theirs and len(ours) >= 7, (ours, theirs)
    # nothing fell back to a local store (a run keeps only its checkpoints in progress there)
    assert not (workdir / "mlruns" / "mlflow.db").exists()


def register_and_transcribe(uri: str, run_id: str, audio: Path, lab: Path) -> None:
    """`chordrec register` run ``run_id`` in the registry at ``uri`` as the first version
    of model chordrec, then `chordrec transcribe` ``audio`` into ``lab`` with it."""
    registered = run_chordrec("register", run_id, "--tracking-uri", uri, cwd=lab.parent)
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert "models:/chordrec/1" in registered.stdout, registered.stdout
    transcribed = run_chordrec(
        "transcribe",
        str(audio),
        "--model",
        "models:/chordrec/1",
        "--tracking-uri",
        uri,
        "-o",
        str(lab),
        "--quiet",
        cwd=lab.parent,
    )
    assert transcribed.returncode == 0, transcribed.stderr[-3000:]
    assert str(lab) in transcribed.stdout


def test_register_then_transcribe_from_the_servers_registry(
    server: Server, trained: Trained, workdir: Path
) -> None:
    audio = write_song(workdir / "chords.wav", [("C:maj", 2.0), ("G:maj", 2.0)], pulse=0.5)
    labs = {"server": workdir / "server.lab", "sqlite": workdir / "sqlite.lab"}
    register_and_transcribe(server.uri, trained.server_run, audio, labs["server"])
    register_and_transcribe(trained.sqlite_uri, trained.sqlite_run, audio, labs["sqlite"])
    version = server.client().get_model_version("chordrec", "1")
    assert version.run_id == trained.server_run
    intervals, labels = read_lab(labs["server"])
    assert labels and intervals[0, 0] == 0
    assert intervals[-1, 1] == pytest.approx(4.0, abs=0.05)
    # the same model from either registry writes the same chords
    assert labs["server"].read_bytes() == labs["sqlite"].read_bytes()


# ------------------------------------------------------------------------ start-up errors


def test_start_up_errors_are_one_line_naming_the_store_and_no_run_is_made(
    server: Server, workdir: Path, data_root: Path
) -> None:
    client = server.client()
    runs_before = {r.info.run_id for r in all_runs(client)}
    wrong_password = "not-the-password-7Qx"
    unused = free_port()
    cases = {
        "password": (  # the password in the environment, as chordrec requires
            f"postgresql://chordrec@127.0.0.1:{server.postgres_port}/mlflow",
            f"postgresql://chordrec@127.0.0.1:{server.postgres_port}/mlflow",
            "password authentication failed",
        ),
        "port": (f"http://127.0.0.1:{unused}", f"http://127.0.0.1:{unused}", "unreachable"),
        "protocol": (
            f"http://127.0.0.1:{server.postgres_port}",
            f"http://127.0.0.1:{server.postgres_port}",
            "not an MLflow server",
        ),
    }
    overrides = [f"data.root={data_root}", f"ood.root={OOD}", *FAILING]
    processes = {
        case: train(
            workdir,
            f"error-{case}",
            overrides,
            tracking=[f"tracking.uri={uri}"],
            env={"PGPASSWORD": wrong_password},
        )
        for case, (uri, _, _) in cases.items()
    }
    try:
        outputs = {case: finish(process, timeout=120) for case, process in processes.items()}
    finally:
        for process in processes.values():
            kill_session(process)
    for case, (_, named, reason) in cases.items():
        out, err = outputs[case]
        assert processes[case].returncode == 1, (case, err[-3000:])
        assert "Traceback" not in err, (case, err[-3000:])
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1, (case, err[-3000:])
        assert errors[0].startswith("chordrec.train: error: "), (case, errors[0])
        assert named in errors[0] and reason in errors[0], (case, errors[0])
        assert "MLflow run id" not in out and "epoch" not in out + err, (case, out, err)
        for secret in (wrong_password, server.password):
            assert secret not in out + err, case
    assert {r.info.run_id for r in all_runs(client)} == runs_before


# ------------------------------------------------------------------------ the server's own safety


def server_that_exits(args: Sequence[str], workdir: Path, name: str, **env: str) -> tuple[int, str]:
    """Run `chordrec server` ``args``, expected to refuse and exit at once: its exit
    status (None if it was still running after 60 s and had to be killed) and output."""
    log = workdir / f"{name}.log"
    process = start_chordrec_server(args, workdir, log, **env)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    finally:
        returncode = process.poll()
        kill_session(process)
    return returncode, log.read_text(errors="replace")


def one_error_line(output: str) -> str:
    """The one `chordrec: error:` line of ``output``, which has no traceback."""
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("chordrec: error: "), output[-3000:]
    return errors[0]


def command_lines(process: subprocess.Popen) -> dict[int, bytes]:
    """/proc/<pid>/cmdline of ``process`` and of every process under it."""
    pids = [process.pid, *(p.pid for p in psutil.Process(process.pid).children(recursive=True))]
    return {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids}


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to a `chordrec server` (Ctrl-C), then kill whatever is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    kill_session(process)


def test_a_second_server_on_the_same_cluster_is_refused_and_the_first_keeps_running(
    server: Server, workdir: Path
) -> None:
    returncode, output = server_that_exits(
        [
            "--postgres-dir", str(server.postgres_dir),
            "--postgres-port", str(server.postgres_port),
            "--artifacts-dir", str(workdir / "second-artifacts"),
            "--port", str(free_port()),
        ],
        workdir,
        "second-server",
    )  # fmt: skip
    assert returncode == 1, output[-3000:]
    # the first server's PostgreSQL still answers, and so does the server over it
    tracking.check_database(LocalPostgres(server.postgres_dir, server.postgres_port).url())
    assert server.process.poll() is None and answers_health(server.uri)
    assert server.client().search_experiments() is not None
    error = one_error_line(output)
    assert str(server.postgres_dir) in error, error
    assert f"process id {server.process.pid}" in error, error
    assert server.password not in output


def test_the_database_password_is_on_no_command_line(server: Server, workdir: Path) -> None:
    url = LocalPostgres(server.postgres_dir, server.postgres_port).url()
    # as an argument, `ps` would show it to every user: refused before anything starts
    returncode, output = server_that_exits(
        ["--backend-store-uri", url, "--port", str(free_port())], workdir, "password-argument"
    )
    assert returncode == 1, output[-3000:]
    error = one_error_line(output)
    assert "MLFLOW_BACKEND_STORE_URI" in error and server.password not in output, error

    # in the environment it is used, and no process of the server shows it
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = workdir / "password-environment.log"
    process = start_chordrec_server(
        ["--artifacts-dir", str(workdir / "env-artifacts"), "--port", str(port)],
        workdir,
        log,
        MLFLOW_BACKEND_STORE_URI=url,
    )
    try:
        wait_until_serving(process, uri, log)
        lines = command_lines(process)
        assert any(b"mlflow\0server" in line for line in lines.values()), lines
        for pid, line in lines.items():
            assert server.password.encode() not in line, (pid, line)
        # it serves the cluster's store: an experiment made through the first server
        made = server.client().create_experiment("made-through-the-first-server")
        assert MlflowClient(uri).get_experiment(made).name == "made-through-the-first-server"
    finally:
        stop_server(process)
    output = log.read_text(errors="replace")
    assert server.password not in output
    assert f"postgresql://chordrec:***@127.0.0.1:{server.postgres_port}/mlflow" in output
    # it had not started the cluster, so it left it running
    tracking.check_database(url)


def test_a_postgres_dir_is_used_literally_whatever_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parent = postgres_parent_dir()
    # a shell that ran the name would create this file
    monkeypatch.setenv("CHORDREC_TEST_TOUCHED", str(parent / "touched"))
    directory = (
        parent / 'a b $(touch "$CHORDREC_TEST_TOUCHED") `touch "$CHORDREC_TEST_TOUCHED"` "q" ;x'
    )
    cluster = LocalPostgres(directory, free_port())
    try:
        assert cluster.open() is True
        tracking.check_database(cluster.url())
        assert [p.name for p in parent.iterdir()] == [directory.name]  # nothing ran
    finally:
        cluster.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_cluster_left_running_by_a_killed_server_is_refused_and_left_running() -> None:
    parent = postgres_parent_dir()
    directory, port = parent / "postgres", free_port()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time\n"
            "from chordrec.server.postgres import LocalPostgres\n"
            f"LocalPostgres({str(directory)!r}, {port}).open()\n"
            "print('open', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE, text=True, env=subprocess_env(), start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        kill_session(holder)  # as SIGKILL leaves it: PostgreSQL runs, nobody holds the lock
        cluster = LocalPostgres(directory, port)
        with pytest.raises(PostgresError, match="already runs .* but no chordrec server holds it"):
            cluster.open()
        tracking.check_database(cluster.url())  # still running
    finally:
        kill_session(holder)
        LocalPostgres(directory, port).stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_shared_or_foreign_postgres_dir_is_refused_and_left_as_it_was(workdir: Path) -> None:
    parent = postgres_parent_dir()
    shared = parent / "shared"  # like /var/tmp: every user may write to it
    shared.mkdir()
    shared.chmod(0o1777)
    foreign = parent / "thesis"  # someone's folder
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("\\chapter{One}\n")
    port = free_port()
    try:
        for directory in (shared, foreign):
            before = directory.stat()
            contents = sorted(os.listdir(directory))
            returncode, output = server_that_exits(
                [
                    "--postgres-dir", str(directory),
                    "--postgres-port", str(port),
                    "--store", str(workdir / "foreign-store"),
                    "--artifacts-dir", str(workdir / "foreign-artifacts"),
                    "--port", str(free_port()),
                ],
                workdir,
                f"foreign-{directory.name}",
            )  # fmt: skip
            after = directory.stat()
            assert (after.st_mode, after.st_uid, after.st_gid) == (
                before.st_mode, before.st_uid, before.st_gid,
            ), directory  # fmt: skip
            assert sorted(os.listdir(directory)) == contents, directory
            assert returncode == 1, output[-3000:]
            error = one_error_line(output)
            assert f"--postgres-dir {directory}" in error, error
    finally:
        for directory in (shared, foreign):
            if (directory / "data" / "PG_VERSION").exists():  # what chordrec did before
                LocalPostgres(directory, port).stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_server_others_can_reach_is_refused_without_auth(workdir: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: nothing is ever bound
    returncode, output = server_that_exits(
        ["--host", "192.0.2.1", "--port", str(free_port()), "--store", str(workdir / "open")],
        workdir,
        "no-auth",
    )
    assert returncode == 1, output[-3000:]
    error = one_error_line(output)
    assert "--host 192.0.2.1" in error and "--auth DIR" in error, error


def http_status(uri: str, credentials: tuple[str, str] | None) -> int:
    """The HTTP status of an experiment search at ``uri`` with basic ``credentials``."""
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1")
    if credentials is not None:
        token = b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_server_with_auth_takes_only_the_generated_admin_password(
    workdir: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_dir = workdir / "auth"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = workdir / "auth-server.log"
    process = start_chordrec_server(
        [
            "--auth", str(auth_dir),
            "--store", str(workdir / "auth-store"),
            "--artifacts-dir", str(workdir / "auth-artifacts"),
            "--port", str(port),
            "--workers", "1",
        ],
        workdir,
        log,
    )  # fmt: skip
    try:
        wait_until_serving(process, uri, log)
        assert auth_dir.stat().st_mode & 0o777 == 0o700
        for private in ("admin-password", "auth.ini"):
            assert (auth_dir / private).stat().st_mode & 0o777 == 0o600, private
        password = (auth_dir / "admin-password").read_text().strip()
        assert len(password) >= 16
        assert http_status(uri, None) == 401
        assert http_status(uri, ("admin", "password1234")) == 401  # MLflow's old default
        assert http_status(uri, ("admin", password)) == 200
        # a client without the credentials is told which settings it lacks, in one line
        refused = run_chordrec("table", "--runs", "--tracking-uri", uri, cwd=workdir, timeout=120)
        assert refused.returncode == 1, refused.stderr[-3000:]
        error = one_error_line(refused.stderr)
        assert "MLFLOW_TRACKING_USERNAME" in error and "refused no user" in error, error

        # a training run that has the credentials in its environment only
        credentials = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        run = train(
            workdir,
            "auth-run",
            [f"data.root={data_root}", f"ood.root={OOD}", *FAILING],
            tracking=[f"tracking.uri={uri}"],
            env=credentials,
        )
        try:
            out, err = finish(run)
        finally:
            kill_session(run)
        assert run.returncode == 0, err[-3000:]
        for pid, line in command_lines(process).items():
            assert password.encode() not in line, (pid, line)
        for name, value in credentials.items():
            monkeypatch.setenv(name, value)
        logged = MlflowClient(uri).get_run(run_id_of(out))
        assert logged.info.status == "FINISHED"
        assert password not in repr(logged.data.params) + repr(logged.data.tags)
    finally:
        stop_server(process)
    assert password not in log.read_text(errors="replace")
