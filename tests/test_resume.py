"""A training process killed with SIGKILL after an epoch, then resumed, ends FINISHED with
one continuous history, and in the very state (weights, optimizer, scheduler, random
generators, per-epoch metrics, test scores) of an uninterrupted run of the same seed; SIGTERM
ends a run KILLED; a resume never replaces a newer local checkpoint with the run's older
logged one."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from chordrec import tracking
from chordrec.io.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from chordrec.run import resume_checkpoint
from tests.conftest import OOD, printed_run_id, signal_after_an_epoch, start_training

pytestmark = pytest.mark.integration

EPOCHS = 3
EPOCH_METRICS = ("train/loss", "train/acc", "train/lr", "val/loss", "val/acc")
"""What each epoch logs, its duration (``time/epoch_s``) aside."""


def _train(data_root, store, *extra):
    """Start ``python -m chordrec.train`` on the CPU: two songs, EPOCHS epochs (unless
    ``extra`` sets ``trainer.max_epochs``), a cosine
    schedule (the learning rate changes every epoch) and seed 3; it logs to ``store``."""
    return start_training(
        f"data.root={data_root}",
        f"ood.root={OOD}",
        "ood.part=null",
        f"tracking.store_dir={store}",
        "split.max_songs=2",
        "trainer.num_threads=1",
        "trainer.device=cpu",
        "trainer.progress=false",
        "tracking.system_metrics=false",
        "tracking.log_model=false",
        "seq_len=16",
        "scheduler=cosine",
        "seed=3",
        *extra,
        *(
            []
            if any(o.startswith("trainer.max_epochs=") for o in extra)
            else [f"trainer.max_epochs={EPOCHS}"]
        ),
    )


def _logged_epochs(client: MlflowClient, run_id: str) -> int:
    return len(client.get_metric_history(run_id, "val/acc"))


@dataclass(frozen=True)
class Resumed:
    """Two runs of the same settings and seed in one store: ``uninterrupted``, and
    ``resumed``, killed with SIGKILL once its first epoch was logged, then resumed."""

    client: MlflowClient
    uninterrupted: str
    resumed: str
    epochs_before_kill: int
    """Epochs the killed run had logged to the store."""
    status_after_kill: str
    resumed_after: int
    """The epoch of the checkpoint the resumed process went on from."""
    resumed_output: str

    def checkpoint(self, run_id: str, name: str, dest: Path) -> dict:
        """Checkpoint ``name`` (``last`` or ``best``) as run ``run_id`` logged it."""
        directory = dest / run_id
        directory.mkdir(parents=True, exist_ok=True)
        path = self.client.download_artifacts(run_id, f"checkpoints/{name}.pt", str(directory))
        return load_checkpoint(Path(path))


@pytest.fixture(scope="module")
def resumed(data_root, tmp_path_factory) -> Resumed:
    root = tmp_path_factory.mktemp("resume")
    store = root / "mlruns"
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")

    killed = _train(data_root, store, f"hydra.run.dir={root / 'killed'}")
    run_id = printed_run_id(killed)
    epochs_before_kill = signal_after_an_epoch(killed, run_id, f"sqlite:///{store}/mlflow.db")
    killed.stdout.close()
    assert epochs_before_kill == _logged_epochs(client, run_id)
    status_after_kill = client.get_run(run_id).info.status
    # what the process had written (its epoch's last.pt comes before the epoch's metrics)
    local = store / "checkpoints-in-progress" / run_id / "last.pt"
    resumed_after = load_checkpoint(local)["epoch"]

    process = _train(data_root, store, f"resume={run_id}", f"hydra.run.dir={root / 'resumed'}")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]

    uninterrupted = _train(data_root, store, f"hydra.run.dir={root / 'uninterrupted'}")
    uninterrupted_id = printed_run_id(uninterrupted)
    whole, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, whole[-3000:]
    return Resumed(
        client,
        uninterrupted_id,
        run_id,
        epochs_before_kill,
        status_after_kill,
        resumed_after,
        output,
    )


def test_sigkill_then_resume_gives_one_continuous_run(resumed: Resumed) -> None:
    client, run_id = resumed.client, resumed.resumed
    assert resumed.status_after_kill == "RUNNING"  # SIGKILL leaves no chance to close the run
    assert 1 <= resumed.epochs_before_kill < EPOCHS  # killed while training
    assert resumed.epochs_before_kill <= resumed.resumed_after < EPOCHS
    assert f"MLflow run id: {run_id}" in resumed.resumed_output
    assert f"resuming run {run_id} after epoch {resumed.resumed_after}" in resumed.resumed_output

    final = client.get_run(run_id)
    assert final.info.status == "FINISHED"
    runs = client.search_runs([final.info.experiment_id])
    assert {r.info.run_id for r in runs} == {run_id, resumed.uninterrupted}  # no third run
    for key in (*EPOCH_METRICS, "time/epoch_s"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, EPOCHS + 1)), (key, steps)
    assert final.data.metrics["fit/epochs_run"] == EPOCHS
    assert "test/frame_acc" in final.data.metrics


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _assert_same(ours: object, theirs: object, where: str) -> None:
    """``ours`` and ``theirs`` hold the same values, tensors bit for bit (torch.equal)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys(), where
        for key in ours:
            _assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(ours, list | tuple):
        assert isinstance(theirs, list | tuple) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(ours, torch.Tensor):
        assert isinstance(theirs, torch.Tensor) and ours.dtype == theirs.dtype, where
        assert torch.equal(ours, theirs), where
    elif isinstance(ours, np.ndarray):
        assert np.array_equal(ours, theirs), where
    else:
        assert ours == theirs, where


def test_a_resumed_run_ends_as_the_uninterrupted_run_of_its_seed(
    resumed: Resumed, tmp_path: Path
) -> None:
    """Bit for bit on the CPU: the model, optimizer and scheduler states, the random
    generators, every epoch's metrics and the final scores (times aside)."""
    client, ours, theirs = resumed.client, resumed.resumed, resumed.uninterrupted
    for name in ("last", "best"):
        mine, whole = (resumed.checkpoint(r, name, tmp_path) for r in (ours, theirs))
        for part in ("model", "optimizer", "scheduler", "rng"):
            _assert_same(mine[part], whole[part], f"{name}.pt {part}")
        for checkpoint in (mine, whole):  # times and the resume itself aside
            checkpoint["history"].pop("time/epoch_s")
            checkpoint["config"].pop("resume")
        _assert_same(mine, whole, f"{name}.pt")
    for key in EPOCH_METRICS:
        assert _history(client, ours, key) == _history(client, theirs, key), key
    final = [
        {k: v for k, v in client.get_run(r).data.metrics.items() if not k.startswith("time/")}
        for r in (ours, theirs)
    ]
    assert final[0] == final[1]
    assert "test/frame_acc" in final[0] and "test/majmin" in final[0]


def test_sigterm_ends_the_run_killed(data_root, tmp_path):
    store = tmp_path / "mlruns"
    uri = f"sqlite:///{store}/mlflow.db"
    client = MlflowClient(uri)
    max_epochs = 100  # far more than it trains before the signal
    process = _train(
        data_root, store, f"hydra.run.dir={tmp_path / 'run'}", f"trainer.max_epochs={max_epochs}"
    )
    run_id = printed_run_id(process)
    logged = signal_after_an_epoch(process, run_id, uri, signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode != 0
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    # the signal came while training: at most the epoch it was writing got in after it
    assert logged <= _logged_epochs(client, run_id) <= logged + 1 < max_epochs
    assert "test/frame_acc" not in run.data.metrics


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
