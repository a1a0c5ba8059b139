"""What a run was scored with is what it runs with afterwards; resume refuses runs it must
not reopen; a user's mistake in ``python -m chordrec.train`` is one line, not a traceback,
and ends the run FAILED with its error; Ctrl-C ends a run KILLED."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from chordrec import tracking
from chordrec.data.songs import load_songs, song_names, split_songs
from chordrec.inference.predictor import InferenceRecipe
from chordrec.io.checkpoints import load_checkpoint
from chordrec.run import resumed_config
from chordrec.train import run
from chordrec.transcribe import VITERBI_SELF_TRANSITION, load_model, network_model
from tests.conftest import (
    OOD,
    REPO,
    await_first_epoch,
    printed_run_id,
    start_training,
    subprocess_env,
)
from tests.test_transcribe import LINEAR

# experiment=best's decoding and evaluation chunking, on one song per part
SCORED_LIKE_BEST = [
    "model=rnn_table4",
    "seq_len=32",
    "split.max_songs=1",
    "decode=viterbi",
    "trainer.eval_seq_len=64",
    "trainer.eval_overlap=true",
]


def _runs(cfg) -> list:
    return _store_runs(cfg.tracking.store_dir)


def _store_runs(store: str | Path) -> list:
    """The runs of the chordrec experiment in the SQLite store in ``store``."""
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    client = MlflowClient()
    return client.search_runs([client.get_experiment_by_name("chordrec").experiment_id])


@pytest.mark.integration
@pytest.mark.parametrize(
    ("level", "method"), [("frame", "viterbi"), ("beat", "viterbi"), ("frame", "beat_viterbi")]
)
def test_transcription_predicts_what_the_run_scored(train_config, level, method):
    """A validation song's chroma through the model as `chordrec transcribe` loads it
    gives the run's own validation predictions, frame for frame, decoded with the
    self-transition(s) tuned on validation (beat-aware: with the song's beats)."""
    cfg = train_config(
        *[o for o in SCORED_LIKE_BEST if not o.startswith("decode=")],
        f"decode={method}",
        f"data.level={level}",
        "trainer.max_epochs=3",
        "optimizer.lr=0.01",
        "data.batch_size=4",
    )
    run(cfg)
    (record,) = _runs(cfg)
    metrics = record.data.metrics
    tracking.configure(cfg.tracking.store_dir)
    model = load_model(record.info.run_id, "cpu")
    assert (model.level, model.decode) == (level, method)
    assert model.self_transition == metrics["decode/self_transition"]
    if method == "beat_viterbi":
        assert model.beat_self_transition == metrics["decode/beat_self_transition"]
        assert "decode/viterbi_self_transition" in metrics  # plain Viterbi's, for comparison

    root = cfg.data.root
    split = split_songs(song_names(root), cfg.split.train, cfg.split.test, cfg.split.validation, 1)
    (song,) = load_songs(root, split["validation"])
    scores = model.scores(song)
    if level == "frame":  # this short a run learns something at frame level only
        assert len(np.unique(scores.argmax(axis=1))) > 1
    predicted = model.classes(scores, song.beats)
    logged = mlflow.artifacts.download_artifacts(
        run_id=record.info.run_id, artifact_path="predictions/val.npz"
    )
    with np.load(logged, allow_pickle=False) as scored:
        np.testing.assert_array_equal(predicted, scored[song.name])
    assert float((predicted == song.labels).mean()) == metrics["val/frame_acc"]


@pytest.mark.integration
def test_the_best_checkpoint_carries_the_runs_inference_recipe(train_config, tmp_path):
    cfg = train_config(*SCORED_LIKE_BEST)
    run(cfg)
    (record,) = _runs(cfg)
    path = tracking.run_checkpoint(record.info.run_id, "best", tmp_path / "download")
    recipe = InferenceRecipe.from_dict(load_checkpoint(path)["inference"])
    assert recipe == InferenceRecipe(
        level="frame",
        seq_mode="sequence",
        seq_len=64,
        overlap=True,
        decode="viterbi",
        self_transition=record.data.metrics["decode/self_transition"],
    )


@pytest.mark.integration
def test_an_evaluate_only_run_is_transcribable(train_config):
    """init_from with trainer.max_epochs=0 writes no training checkpoint; the scored
    weights and their recipe are logged all the same."""
    first = train_config("model=rnn_baseline", "seq_len=32", "split.max_songs=1")
    run(first)
    (source,) = _runs(first)
    run(
        train_config(
            "model=rnn_baseline",
            "seq_len=32",
            "split.max_songs=1",
            f"init_from={source.info.run_id}",
            "trainer.max_epochs=0",
            "decode=viterbi",
        )
    )
    evaluated = next(r for r in _runs(first) if r.info.run_id != source.info.run_id)
    model = load_model(evaluated.info.run_id, "cpu")
    assert model.decode == "viterbi"
    assert model.self_transition == evaluated.data.metrics["decode/self_transition"]


def test_an_old_checkpoint_takes_the_runs_tuned_self_transition() -> None:
    from chordrec.models import build_model

    spec = LINEAR
    config = {"model": spec, "data": {"level": "frame"}, "seq_len": 8, "seq_mode": "sequence"}
    checkpoint = {
        "model": build_model(spec).state_dict(),
        "config": {**config, "decode": "viterbi"},
    }
    assert network_model(checkpoint, "old", self_transition=0.995).self_transition == 0.995
    assert network_model(checkpoint, "old").self_transition == VITERBI_SELF_TRANSITION


# ------------------------------------------------------------------ resume


@pytest.mark.integration
def test_resuming_a_finished_run_is_refused(train_config):
    cfg = train_config()
    run(cfg)
    (record,) = _runs(cfg)
    with pytest.raises(tracking.TrackingError, match="is FINISHED"):
        run(train_config(f"resume={record.info.run_id}"))
    (after,) = _runs(cfg)  # nothing reopened, nothing logged twice
    assert after.info.status == "FINISHED" and after.info.end_time == record.info.end_time


@pytest.mark.slow
def test_a_run_whose_process_lives_is_not_resumed(tmp_path) -> None:
    tracking.configure(tmp_path)
    with tracking.RunTracker(store_dir=tmp_path, system_metrics=False) as tracker:
        tracker.set_tags(tracking.process_tags())
        with pytest.raises(tracking.TrackingError, match="still RUNNING in process"):
            tracking.check_resumable(tracker.run_id)
        tracker.set_tags({"process_host": "elsewhere.example"})
        with pytest.raises(tracking.TrackingError, match="on host elsewhere.example"):
            tracking.check_resumable(tracker.run_id)
        # a process that has ended: what resume is for
        ended = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os, psutil; print(os.getpid(), psutil.Process().create_time())",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        tracker.set_tags(
            {
                "process_host": socket.gethostname(),
                "process_pid": ended[0],
                "process_started": ended[1],
            }
        )
        tracking.check_resumable(tracker.run_id)


def test_a_resumed_run_runs_where_it_is_resumed() -> None:
    """A run begun on a GPU continues on the machine that resumes it; what shapes its
    results (model, data level, seed...) stays as it began."""
    saved = {
        "seed": 3,
        "seq_len": 64,
        "resume": None,
        "data": {"root": "/gpu-node/data", "level": "beat", "num_workers": 4},
        "trainer": {"device": "cuda", "num_threads": None, "progress": False, "max_epochs": 9},
        "tracking": {"store_dir": "/gpu-node/mlruns", "uri": None},
    }
    here = OmegaConf.create(
        {
            "seed": 0,
            "seq_len": 128,
            "resume": "abc",
            "data": {"root": "data/rwc-pop", "level": "frame", "num_workers": 0},
            "trainer": {"device": "cpu", "num_threads": 1, "progress": True, "max_epochs": 200},
            "tracking": {"store_dir": "mlruns", "uri": "http://127.0.0.1:5000"},
        }
    )
    cfg = resumed_config(saved, here)
    assert (cfg.seed, cfg.seq_len, cfg.data.level, cfg.trainer.max_epochs) == (3, 64, "beat", 9)
    assert (cfg.trainer.device, cfg.trainer.num_threads, cfg.data.root) == (
        "cpu",
        1,
        "data/rwc-pop",
    )
    assert cfg.tracking.uri == "http://127.0.0.1:5000" and cfg.resume == "abc"


# ------------------------------------------------------------------ user errors


def _train_overrides(tmp_path, *overrides: str) -> list[str]:
    """What ``python -m chordrec.train`` is given to log to a store in ``tmp_path``."""
    return [
        f"tracking.store_dir={tmp_path / 'mlruns'}",
        f"hydra.run.dir={tmp_path / 'outputs'}",
        "tracking.system_metrics=false",
        *overrides,
    ]


def _train_cli(tmp_path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chordrec.train", *_train_overrides(tmp_path, *overrides)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=300,
    )


@pytest.mark.parametrize(
    ("overrides", "env", "message", "error_tag"),
    [
        (
            ["seq_len=-3"],
            {},
            "seq_len must be a positive number of steps, got -3",
            "ConfigError: seq_len must be a positive number of steps, got -3",
        ),
        (
            ["data.batch_size=0"],
            {},
            "data.batch_size must be >= 1, got 0",
            "ConfigError: data.batch_size must be >= 1, got 0",
        ),
        (["data.root=/nonexistent/rwc"], {}, "/nonexistent/rwc", "/nonexistent/rwc"),
        # no store answers: no run to end
        (
            [],
            {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
            "http://127.0.0.1:9 is unreachable",
            None,
        ),
    ],
)
@pytest.mark.slow
def test_a_users_mistake_is_one_line_without_a_traceback(
    tmp_path, overrides, env, message, error_tag
):
    result = _train_cli(tmp_path, *overrides, **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    # the run it opened ends FAILED, its error a tag
    store = tmp_path / "mlruns"
    if error_tag is None:
        assert not (store / "mlflow.db").exists()
        return
    (record,) = _store_runs(store)
    assert record.info.status == "FAILED"
    assert error_tag in record.data.tags["error"]


@pytest.mark.slow
def test_hydra_full_error_keeps_the_traceback(tmp_path):
    result = _train_cli(tmp_path, "seq_len=-3", HYDRA_FULL_ERROR="1")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


# ------------------------------------------------------------------ Ctrl-C


@pytest.mark.system
@pytest.mark.integration
def test_ctrl_c_during_training_ends_the_run_killed(tmp_path, data_root):
    """SIGINT to the training process's group, as a terminal's Ctrl-C sends it, once an
    epoch is logged: the run ends KILLED with the epochs it logged, and is not scored."""
    max_epochs = 100  # far more than it can train before the interrupt; the stop rule is
    # off (min_lr 0), so the run trains until the interrupt ends it
    process = start_training(
        *_train_overrides(
            tmp_path,
            f"data.root={data_root}",
            f"ood.root={OOD}",
            "split.max_songs=2",
            "seq_len=16",
            "trainer.num_threads=1",
            f"trainer.max_epochs={max_epochs}",
            "trainer.min_lr=0",
            "trainer.progress=false",
            "tracking.log_model=false",
        )
    )
    try:
        run_id = printed_run_id(process)
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns'}/mlflow.db")
        client = MlflowClient()
        await_first_epoch(client, run_id, process)
        status = Path(f"/proc/{process.pid}/status")
        if status.exists():  # shown if the test fails: is SIGINT ignored, blocked, caught?
            print(*re.findall(r"^Sig(?:Blk|Ign|Cgt):.*$", status.read_text(), re.M))
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0, output[-3000:]
    record = client.get_run(run_id)
    assert record.info.status == "KILLED", output[-3000:]
    epochs = [m.step for m in client.get_metric_history(run_id, "val/acc")]
    assert 1 <= len(epochs) < max_epochs
    assert "test/frame_acc" not in record.data.metrics


# ------------------------------------------------------------------ chordrec evaluate


def _evaluate_cli(tmp_path, data_root, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chordrec",
            "evaluate",
            *arguments,
            f"tracking.store_dir={tmp_path / 'mlruns'}",
            f"data.root={data_root}",
            f"ood.root={OOD}",
            "trainer.num_threads=1",
            "trainer.progress=false",
            "tracking.system_metrics=false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )


@pytest.mark.integration
def test_chordrec_evaluate_rescores_a_run_as_a_new_run(train_config, data_root, tmp_path):
    cfg = train_config("model=rnn_baseline", "seq_len=32", "split.max_songs=1")
    run(cfg)
    (source,) = _runs(cfg)
    run_id = source.info.run_id

    same = _evaluate_cli(tmp_path, data_root, run_id)
    assert same.returncode == 0, same.stderr[-3000:]
    other = _evaluate_cli(
        tmp_path, data_root, run_id, "trainer.eval_overlap=true", "decode=viterbi"
    )
    assert other.returncode == 0, other.stderr[-3000:]
    evaluated = [r for r in _runs(cfg) if r.data.tags.get("evaluated_run") == run_id]
    assert len(evaluated) == 2 and all(r.info.status == "FINISHED" for r in evaluated)
    plain = next(r for r in evaluated if r.data.params["decode"] == "argmax")
    changed = next(r for r in evaluated if r.data.params["decode"] == "viterbi")
    # as the run was scored: the same record; otherwise: its own settings, the same weights
    assert plain.data.metrics["fit/epochs_run"] == 0
    for key in ("val/frame_acc", "test/frame_acc", "test/majmin", "decode/self_transition"):
        assert plain.data.metrics[key] == source.data.metrics[key], key
    assert changed.data.params["trainer.eval_overlap"] == "True"
    assert (
        changed.data.params["model.rnn.hidden_size"] == source.data.params["model.rnn.hidden_size"]
    )
    assert changed.data.metrics["test/frame_acc"] == changed.data.metrics["test/frame_acc_viterbi"]
    assert f"test frame accuracy {plain.data.metrics['test/frame_acc']:.4f}" in same.stdout


@pytest.mark.slow
def test_chordrec_evaluate_names_a_missing_run_in_one_line(tmp_path, data_root):
    result = _evaluate_cli(tmp_path, data_root, "0" * 32)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"no MLflow run '{'0' * 32}'" in result.stderr
