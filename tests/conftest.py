"""Shared fixtures: the real data set, composing training configs, a tracking store."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

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

import torch  # noqa: E402
from omegaconf import DictConfig

from chordrec.train import compose_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
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
