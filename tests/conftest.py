"""Shared fixtures: the real data set, composing training configs, a tracking store."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# librosa's numba functions cache their compiled code (cache=True). A cache left by an
# earlier session crashed librosa's beat tracker with a segfault on loading (a fresh
# clone's CI run, and again on this machine until the cache was removed), and two
# processes compiling into one cache can load a half-written file. So each test session
# compiles into a cache of its own, one per xdist worker (shared with the processes its
# tests start), removed when the session ends.
if "CHORDREC_TEST_NUMBA_ROOT" not in os.environ:
    os.environ["CHORDREC_TEST_NUMBA_ROOT"] = tempfile.mkdtemp(prefix="chordrec-numba-")
    atexit.register(shutil.rmtree, os.environ["CHORDREC_TEST_NUMBA_ROOT"], ignore_errors=True)
os.environ["NUMBA_CACHE_DIR"] = str(
    Path(os.environ["CHORDREC_TEST_NUMBA_ROOT"]) / os.environ.get("PYTEST_XDIST_WORKER", "main")
)
# The models chordrec transcribe finds in a local store are kept in the user's cache
# directory (chordrec.io.resolved_models): the tests keep theirs in the session's, never
# in the home directory of whoever runs them.
os.environ["XDG_CACHE_HOME"] = str(Path(os.environ["CHORDREC_TEST_NUMBA_ROOT"]) / "xdg-cache")

import torch  # noqa: E402
from omegaconf import DictConfig

from chordrec.train import compose_config

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "chordrec" / "conf"  # the Hydra configs, shipped in the package
DATA = REPO / "data" / "rwc-pop"
OOD = REPO / "data" / "ood-synth"  # the synthesized out-of-domain songs (`make data`)

# Short real runs: two songs per part, no progress bars.
QUICK = [
    "split.max_songs=2",
    "trainer.num_threads=1",  # one thread: immune to OpenMP spin contention on a busy CPU
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "tracking.system_metrics=false",
    "tracking.log_model=false",
]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real RWC-Pop data (``make data`` puts it in data/rwc-pop)."""
    if not (DATA / "SHA256SUMS").exists():
        pytest.skip(f"{DATA} is missing: run `make data`")
    return DATA


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """The training config as `python -m chordrec.train <overrides>` composes it."""
    return compose_config(overrides)


@pytest.fixture
def train_config(data_root: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a quick real-data training config that logs to a store in tmp_path."""

    def make(*overrides: str, quick: bool = True) -> DictConfig:
        return compose_train(
            [
                f"data.root={data_root}",
                f"ood.root={OOD}",
                f"tracking.store_dir={tmp_path / 'mlruns'}",
                *(QUICK if quick else []),
                *overrides,
            ]
        )

    return make


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The test models are tiny: one intra-op thread is fastest, and more only spin
    against each other on a busy 2-core machine (seen: 2.5 s on one thread, 30 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_outside_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests log to their own stores, never to a server named in the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(extra)
    return env


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on: bound once by the OS, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_chordrec(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the ``chordrec`` command (``python -m chordrec``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "chordrec", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=timeout,
    )


def _as_a_terminal_starts_it() -> None:
    """In the child before ``exec``: SIGINT handled by default and not blocked, as a shell
    starts a foreground job. A test process can inherit it ignored or blocked from what ran
    in it before (a library's server or worker threads), and an exec'd program keeps both,
    so the training process would never see its Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_training(*overrides: str) -> subprocess.Popen:
    """Start ``python -m chordrec.train <overrides>`` in the repository, in a process group
    of its own (a signal reaches it alone), with SIGINT as a terminal leaves it, stdout and
    stderr together in one text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "chordrec.train", *overrides],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
        start_new_session=True,
        preexec_fn=_as_a_terminal_starts_it,
    )


def printed_run_id(process: subprocess.Popen) -> str:
    """The MLflow run id a training process prints before its first epoch (its output
    read up to that line)."""
    for line in process.stdout:
        if match := re.search(r"MLflow run id: (\w+)", line):
            return match.group(1)
    raise AssertionError(f"the training process printed no run id (exit {process.wait()})")


def await_first_epoch(
    client: MlflowClient, run_id: str, process: subprocess.Popen, timeout: float = 600
) -> None:
    """Return once run ``run_id`` has logged its first epoch (step 1 of ``val/acc`` in
    the store), its process still training; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not client.get_metric_history(run_id, "val/acc"):
        assert process.poll() is None, "training ended before its first epoch was logged"
        assert time.monotonic() < deadline, f"no epoch logged in {timeout:.0f} s"
        time.sleep(0.05)


@contextmanager
def metrics_held(store: str) -> Iterator[Callable[[str], int]]:
    """Hold the metric table of the MLflow database ``store`` (``sqlite:///<path>`` or a
    ``postgresql://`` URL) against writes for the block: every process logging a metric
    waits until it ends, while reads go on. Yields a function giving the number of
    epochs (``val/acc`` values) a run has logged, as the database holds them now."""
    query = "SELECT COUNT(*) FROM metrics WHERE run_uuid = {} AND key = 'val/acc'"
    if store.startswith("sqlite:///"):
        db = sqlite3.connect(store.removeprefix("sqlite:///"), timeout=60, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")  # the write lock: readers still read
            yield lambda run_id: db.execute(query.format("?"), (run_id,)).fetchone()[0]
            db.execute("ROLLBACK")
        finally:
            db.close()
        return
    import psycopg

    with psycopg.connect(store.replace("postgresql+psycopg://", "postgresql://")) as db:
        db.execute("LOCK TABLE metrics IN SHARE MODE")  # conflicts with every write
        yield lambda run_id: db.execute(query.format("%s"), (run_id,)).fetchone()[0]
        db.rollback()


def signal_after_an_epoch(
    process: subprocess.Popen,
    run_id: str,
    store: str,
    sig: signal.Signals = signal.SIGKILL,
    timeout: float = 600,
) -> int:
    """Send ``sig`` to the process group of training ``process`` (started in a session
    of its own) once run ``run_id`` has logged an epoch to ``store`` (see
    :func:`metrics_held`), and return the number of epochs logged then.

    The count is taken and the signal sent while the metric table is held, so the run
    logs nothing between the two: with SIGKILL the count is final whatever an epoch
    lasts; a process that handles ``sig`` may at most finish the write it was waiting
    in. Fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "training ended before its first epoch was logged"
        assert time.monotonic() < deadline, f"no epoch logged in {timeout:.0f} s"
        with metrics_held(store) as logged_epochs:
            if (logged := logged_epochs(run_id)) >= 1:
                os.killpg(process.pid, sig)
                if sig == signal.SIGKILL:
                    process.wait()
                return logged
        time.sleep(0.05)
