"""Short real training runs: every preset at both levels, and what a run leaves in MLflow."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import socket
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

import chordrec.fit
import chordrec.run
from chordrec.data.chords import class_names, transpose_labels
from chordrec.data.sequences import BatchedExamples, song_steps
from chordrec.data.songs import load_songs, song_names, split_songs
from chordrec.decoding import DEFAULT_SELF_TRANSITIONS, decode
from chordrec.fit import resolve_device
from chordrec.inference.predictor import TranspositionAverage, evaluate
from chordrec.io.checkpoints import load_checkpoint
from chordrec.models import build_model
from chordrec.train import run
from tests.test_sequences import _recover_shift

pytestmark = pytest.mark.integration

PRESETS = ["rnn_baseline", "rnn_table4", "crnn1", "crnn2"]


def _client(cfg) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{cfg.tracking.store_dir}/mlflow.db")
    return MlflowClient()


def _only_run(client: MlflowClient):
    runs = client.search_runs([client.get_experiment_by_name("chordrec").experiment_id])
    assert len(runs) == 1
    return runs[0]


def _songs(cfg, part: str):
    names = song_names(cfg.data.root)
    split = split_songs(
        names, cfg.split.train, cfg.split.test, cfg.split.validation, cfg.split.max_songs
    )
    return load_songs(cfg.data.root, split[part])


def _logged_predictions(run_id: str, part: str) -> dict[str, np.ndarray]:
    """The frame classes a run logged for ``part`` ('val' or 'test'), by song."""
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"predictions/{part}.npz"
    )
    with np.load(path, allow_pickle=False) as predicted:
        return dict(predicted)


def _logged_accuracy(run_id: str, cfg, part: str) -> float:
    """Frame accuracy of the predictions a run logged for ``part`` ('val' or 'test'),
    against the songs' labels read here."""
    predicted = _logged_predictions(run_id, part)
    songs = _songs(cfg, "validation" if part == "val" else "test")
    correct = sum(int((predicted[s.name] == s.labels).sum()) for s in songs)
    return correct / sum(s.n_frames for s in songs)


@pytest.mark.parametrize("level", ["frame", "beat"])
@pytest.mark.parametrize("model", PRESETS)
def test_every_preset_trains_at_both_levels(train_config, model, level):
    cfg = train_config(f"model={model}", f"data.level={level}", "seq_len=32", "split.max_songs=1")
    val_acc = run(cfg)
    run_info = _only_run(_client(cfg))
    assert run_info.info.status == "FINISHED"
    assert run_info.data.metrics["val/frame_acc"] == pytest.approx(val_acc)
    test_acc = _logged_accuracy(run_info.info.run_id, cfg, "test")
    assert run_info.data.metrics["test/frame_acc"] == pytest.approx(test_acc)
    assert run_info.data.params["data.level"] == level


def test_window_mode_trains_on_one_window_in_window_stride_per_epoch(train_config, monkeypatch):
    stride = 50
    cfg = train_config("seq_mode=window", "seq_len=8", f"data.window_stride={stride}")
    trained = []  # the example indices each epoch trains on, as the training loop draws them
    train_epoch = chordrec.fit.train_epoch

    def recorded(model, train, order, *args, **kwargs):
        trained.append(list(order))
        return train_epoch(model, train, order, *args, **kwargs)

    monkeypatch.setattr(chordrec.fit, "train_epoch", recorded)
    run(cfg)
    run_info = _only_run(_client(cfg))
    assert run_info.info.status == "FINISHED"
    # window mode: one example per step; the stride trains on a 1/50 sample of them each epoch
    examples = int(run_info.data.params["sizes.train.examples"])
    assert examples == int(run_info.data.params["sizes.train.steps"])
    (order,) = trained
    assert len(order) == examples // stride
    assert len(set(order)) == len(order) and all(0 <= i < examples for i in order)


@pytest.mark.device
def test_a_run_logs_everything(train_config, tmp_path):
    cfg = train_config(
        "model=rnn_table4",
        "data.level=beat",
        "seq_len=16",
        "trainer.max_epochs=2",
        "tracking.log_model=true",
        "tracking.system_metrics=true",
        "tracking.system_metrics_interval_s=0.5",
    )
    run(cfg)
    client = _client(cfg)
    r = _only_run(client)
    assert r.info.status == "FINISHED"
    # resolved config: flattened params and config.yaml
    assert r.data.params["model.rnn.hidden_size"] == "16"
    assert r.data.params["optimizer._target_"] == "torch.optim.Adam"
    assert r.data.params["seq_len"] == "16"
    assert r.data.params["model_name"] == "rnn_table4"
    # tags
    for tag in ("git_commit", "git_dirty", "dataset_sha256", "chordrec_version", "host", "device"):
        assert r.data.tags.get(tag), tag
    # the versions it ran on
    assert r.data.tags["python_version"] == platform.python_version()
    for tag, distribution in (
        ("torch_version", "torch"),
        ("mlflow_version", "mlflow"),
        ("librosa_version", "librosa"),
        ("numpy_version", "numpy"),
        ("hydra_version", "hydra-core"),
    ):
        assert r.data.tags[tag] == importlib.metadata.version(distribution), tag
    assert len(r.data.tags["dataset_sha256"]) == 64
    assert r.data.tags["device"] == str(resolve_device(cfg.trainer.device))
    # the plateau schedule cannot take lr 1e-3 below min_lr 1e-5 in 2 epochs
    assert r.data.tags["converged"] == "no" and r.data.tags["stop_reason"] == "max_epochs"
    # per-epoch metrics, one value per epoch, steps 1..2
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "train/lr", "time/epoch_s"):
        steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
        assert steps == [1, 2], key
    # system metrics through MLflow's own monitor
    assert any(k.startswith("system/cpu_utilization") for k in r.data.metrics)
    # final metrics and sizes
    m = r.data.metrics
    for key in (
        "test/frame_acc",
        "val/frame_acc",
        "fit/epochs_run",
        "fit/best_epoch",
        "fit/converged",
        "time/train_s",
    ):
        assert key in m, key
    val_acc = [
        h.value
        for h in sorted(client.get_metric_history(r.info.run_id, "val/acc"), key=lambda h: h.step)
    ]
    assert m["fit/epochs_run"] == 2 and m["fit/converged"] == 0
    assert m["fit/best_epoch"] == 1 + int(np.argmax(val_acc))  # the first epoch of the best
    # the final evaluation scores the best epoch's weights as that epoch was scored
    assert m["val/frame_acc_argmax"] == max(val_acc)
    # every metric sits in a section of the UI (the prefix before '/')
    sections = {"train", "val", "test", "time", "fit", "decode", "system", "ood_val"}
    assert {k.split("/")[0] for k in m if "/" in k} == sections
    assert all("/" in k for k in m), [k for k in m if "/" not in k]
    # split sizes: params, and the profile of each part's MLflow dataset
    params = r.data.params
    for part in ("train", "validation", "test"):
        for size in ("songs", "frames", "beats", "examples", "chunks32"):
            assert int(params[f"sizes.{part}.{size}"]) > 0, (part, size)
    assert params["sizes.train.songs"] == "2"
    inputs = {
        {t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset
        for i in r.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "test", "ood_validation"}
    scored = inputs["ood_validation"]  # the out-of-domain songs the run was scored on
    assert scored.name == "chordrec-ood-synth/validation"
    assert json.loads(scored.profile)["songs"] == int(params["sizes.train.songs"])  # max_songs
    assert [c["name"] for c in json.loads(scored.schema)["mlflow_colspec"]] == [
        "audio",
        "chords",
    ]
    for context, part in (("training", "train"), ("validation", "validation"), ("test", "test")):
        dataset = inputs[context]
        assert dataset.name == f"RWC-Pop/{part}"
        assert dataset.digest == r.data.tags["dataset_sha256"][:16]
        assert json.loads(dataset.source)["url"].startswith("https://raw.githubusercontent.com/")
        profile = json.loads(dataset.profile)
        assert profile["version"].startswith("gct634-2018@")
        assert set(profile) == {"version", "songs", "frames", "beats"}  # not level-dependent
        for what in ("songs", "frames", "beats"):
            assert profile[what] == int(params[f"sizes.{part}.{what}"])
        assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == [
            "chroma",
            "chord",
        ]
    # what the run is, in one line; the experiment opens on its training runs
    assert r.data.tags["mlflow.note.content"] == (
        "BiLSTM 16 (dropout 0.25), beat level, L=16 sequence, no augmentation, argmax; "
        "Adam lr 0.001, lr ÷ on plateau, up to 2 epochs; seed 0"
    )
    experiment = client.get_experiment(r.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # artifacts: config, checkpoints, figures, model
    paths = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert "config.yaml" in paths
    checkpoints = {a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")}
    assert checkpoints == {"checkpoints/best.pt", "checkpoints/last.pt"}
    figures = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
    assert "figures/learning_curves.png" in figures
    assert "figures/confusion_test.png" in figures
    assert "evaluation.json" in paths
    # decoding and MIREX scores against labs/
    for part in ("val", "test"):
        for key in ("majmin", "root", "seg"):
            assert 0.0 <= m[f"{part}/{key}"] <= 1.0, (part, key)
    assert m["test/frame_acc"] == m["test/frame_acc_argmax"]  # decode=argmax is the default
    assert m["test/frame_acc"] == pytest.approx(_logged_accuracy(r.info.run_id, cfg, "test"))
    # the self-transition is the grid value that decodes validation best (first of ties)
    best = load_checkpoint(
        mlflow.artifacts.download_artifacts(
            run_id=r.info.run_id, artifact_path="checkpoints/best.pt"
        )
    )
    model = build_model(best["config"]["model"])
    model.load_state_dict(best["model"])
    songs = [song_steps(s, "beat") for s in _songs(cfg, "validation")]
    val = evaluate(model, songs, 16, "sequence", torch.device("cpu"))
    n_frames = sum(s.song.n_frames for s in songs)
    by_value = [
        sum(
            int((decode(lp, "viterbi", p) == s.song.labels).sum())
            for lp, s in zip(val.log_probs, songs, strict=True)
        )
        / n_frames
        for p in DEFAULT_SELF_TRANSITIONS
    ]
    assert m["val/frame_acc_viterbi"] == pytest.approx(max(by_value))
    tuned = DEFAULT_SELF_TRANSITIONS[int(np.argmax(by_value))]
    assert m["decode/self_transition"] == tuned == best["inference"]["self_transition"]
    # the losses of the scored weights: validation's as its best epoch, and test's; the run
    # computed them on its device, this test on the CPU (cuDNN's LSTM differs in the 6th digit)
    on_cpu = r.data.tags["device"] == "cpu"
    loss_tolerance = {} if on_cpu else {"rel": 1e-5}
    val_loss = sorted(client.get_metric_history(r.info.run_id, "val/loss"), key=lambda h: h.step)
    assert m["val/best_loss"] == pytest.approx(val.loss, **loss_tolerance)
    assert m["val/best_loss"] == pytest.approx(val_loss[int(m["fit/best_epoch"]) - 1].value)
    test_songs = _songs(cfg, "test")
    test = evaluate(
        model, [song_steps(s, "beat") for s in test_songs], 16, "sequence", torch.device("cpu")
    )
    assert m["test/loss"] == pytest.approx(test.loss, **loss_tolerance)
    # evaluation.json: each test song's frame accuracy and each class's recall, of the
    # test predictions the run logged
    evaluation = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=r.info.run_id, artifact_path="evaluation.json"
            )
        ).read_text()
    )
    predicted = _logged_predictions(r.info.run_id, "test")
    assert evaluation["test_per_song_frame_acc"] == {
        s.name: pytest.approx(float((predicted[s.name] == s.labels).mean())) for s in test_songs
    }
    reference = np.concatenate([s.labels for s in test_songs])
    estimate = np.concatenate([predicted[s.name] for s in test_songs])
    recall = evaluation["test_per_class_recall"]
    assert list(recall) == class_names()
    for c, name in enumerate(class_names()):
        if (reference == c).any():
            assert recall[name] == pytest.approx(float((estimate[reference == c] == c).mean()))
        else:
            assert recall[name] is None, name
    # the process that logged the run (what resume checks), here this one
    assert r.data.tags["process_host"] == socket.gethostname()
    assert r.data.tags["process_pid"] == str(os.getpid())
    assert float(r.data.tags["process_started"]) == psutil.Process().create_time()
    assert any(p.startswith("figures/timeline_N061") for p in figures)
    local = mlflow.artifacts.download_artifacts(
        run_id=r.info.run_id, artifact_path="checkpoints/last.pt"
    )
    state = load_checkpoint(local)
    assert state["epoch"] == 2 and state["config"]["data"]["level"] == "beat"
    models = client.search_logged_models([r.info.experiment_id])
    assert [lm.source_run_id for lm in models] == [r.info.run_id]
    # the logged model takes any batch size, not only its input example's
    logged = mlflow.pytorch.load_model(models[0].model_uri)
    steps = int(r.data.params["seq_len"])
    assert logged(torch.zeros(3, steps, 12)).shape[0] == 3


def test_a_config_error_ends_the_run_failed_with_its_config(train_config):
    cfg = train_config("model=crnn2", "seq_len=4")  # crnn2 needs seq_len >= 12
    with pytest.raises(ValueError, match="seq_len >= 12"):
        run(cfg)
    r = _only_run(_client(cfg))
    assert r.info.status == "FAILED"
    assert "seq_len >= 12" in r.data.tags["error"]
    assert r.data.params["seq_len"] == "4"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["seq_mode=window", "trainer.eval_overlap=true"], "are for seq_mode=sequence"),
        (["model=crnn2", "seq_len=16", "trainer.eval_seq_len=8"], "eval_seq_len must be >= 12"),
    ],
)
def test_bad_evaluation_chunking_is_refused(train_config, overrides, match):
    with pytest.raises(ValueError, match=match):
        run(train_config(*overrides))


def test_bad_data_ends_the_run_failed_naming_the_file(train_config, data_root, tmp_path):
    import shutil

    import numpy as np

    broken = tmp_path / "broken"
    shutil.copytree(data_root, broken, ignore=shutil.ignore_patterns("labs"))
    song = sorted((broken / "chord").glob("*.npy"))[0]
    labels = np.load(song)
    labels[10] = 31
    np.save(song, labels)
    cfg = train_config(f"data.root={broken}")
    with pytest.raises(ValueError, match="outside 0..24"):
        run(cfg)
    r = _only_run(_client(cfg))
    assert r.info.status == "FAILED"
    assert song.name in r.data.tags["error"]


def test_an_exception_during_training_ends_the_run_failed(train_config, monkeypatch):
    cfg = train_config()

    def broken_fit(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("chordrec.run.fit", broken_fit)
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg)
    r = _only_run(_client(cfg))
    assert r.info.status == "FAILED"
    assert "boom" in r.data.tags["error"]


def test_template_anchor_runs_without_training(train_config):
    cfg = train_config("experiment=templates_viterbi")
    run(cfg)
    r = _only_run(_client(cfg))
    assert r.info.status == "FINISHED"
    m = r.data.metrics
    assert m["fit/epochs_run"] == 0 and m["time/train_s"] == 0
    assert r.data.tags["stop_reason"] == "training_free"
    assert m["test/frame_acc"] == m["test/frame_acc_viterbi"]
    # the run scores exactly what template matching itself predicts on the test songs
    from chordrec.data.songs import load_songs, song_names
    from chordrec.models.templates import template_predict

    songs = load_songs(cfg.data.root, song_names(cfg.data.root)[60:62])
    correct = sum(int((template_predict(s.chroma) == s.labels).sum()) for s in songs)
    assert m["test/frame_acc_argmax"] == pytest.approx(correct / sum(s.n_frames for s in songs))


def test_transposition_augmentation_at_beat_level(train_config, monkeypatch):
    cfg = train_config("data.augment=transpose", "data.level=beat", "seq_len=16")
    trained_on = []  # the training examples the run hands to the training loop
    fit = chordrec.run.fit

    def recorded(model, train, *args, **kwargs):
        trained_on.append(train)
        return fit(model, train, *args, **kwargs)

    monkeypatch.setattr(chordrec.run, "fit", recorded)
    run(cfg)
    r = _only_run(_client(cfg))
    assert r.info.status == "FINISHED"
    # each example is a chunk of the training songs' beats, every chroma bin and chord
    # root moved by one random number of semitones
    (examples,) = trained_on
    beats = [song_steps(s, "beat") for s in _songs(cfg, "train")]
    plain = BatchedExamples(beats, 16, "sequence")
    assert len(examples) == len(plain)
    everything = list(range(len(plain)))
    x0, y0 = (t.numpy() for t in plain[everything])
    x1, y1 = (t.numpy() for t in examples[everything])
    shifts = [_recover_shift(x1[i], x0[i]) for i in everything]
    for i, k in enumerate(shifts):
        np.testing.assert_array_equal(y1[i], transpose_labels(y0[i], k))
    assert len(set(shifts)) > 3


def test_cosine_schedule_runs_to_max_epochs_past_min_lr(train_config):
    # (also: random chunk offsets and overlapped evaluation chunks run end to end)
    # The plateau stop rule (lr < min_lr) must not cut a cosine schedule short.
    cfg = train_config(
        "scheduler=cosine",
        "trainer.max_epochs=3",
        "trainer.min_lr=5e-4",
        "model=rnn_baseline",
        "seq_len=32",
        "split.max_songs=1",
        "data.random_offset=true",
        "trainer.eval_overlap=true",
        "trainer.eval_seq_len=48",
    )
    run(cfg)
    client = _client(cfg)
    r = _only_run(client)
    assert r.info.status == "FINISHED"
    assert r.data.metrics["fit/epochs_run"] == 3
    assert r.data.tags["stop_reason"] == "max_epochs"
    lrs = [
        m.value
        for m in sorted(client.get_metric_history(r.info.run_id, "train/lr"), key=lambda m: m.step)
    ]
    lr0, eta_min = cfg.optimizer.lr, cfg.scheduler.eta_min
    expected = [eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert lrs == pytest.approx(expected)
    assert lrs[-1] < cfg.trainer.min_lr


def test_init_from_a_run_evaluates_its_weights_under_other_settings(train_config):
    first = train_config("model=rnn_baseline", "seq_len=32", "split.max_songs=1")
    run(first)
    client = _client(first)
    source = _only_run(client)

    # max_epochs=0: new runs that evaluate the source's best weights, as it was
    # evaluated and on overlapped chunks
    evaluate_only = [
        "model=rnn_baseline",
        "seq_len=32",
        "split.max_songs=1",
        f"init_from={source.info.run_id}",
        "trainer.max_epochs=0",
    ]
    run(train_config(*evaluate_only, "scheduler=cosine"))
    run(train_config(*evaluate_only, "trainer.eval_overlap=true"))
    experiment = client.get_experiment_by_name("chordrec").experiment_id
    runs = client.search_runs([experiment], f"tags.init_from = '{source.info.run_id}'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    plain = next(r for r in runs if r.data.params["trainer.eval_overlap"] == "False")
    assert plain.data.metrics["fit/epochs_run"] == 0
    for key in ("val/frame_acc_argmax", "test/frame_acc_argmax", "test/majmin"):
        assert plain.data.metrics[key] == source.data.metrics[key]

    mismatched = train_config(
        "model=rnn_table4", "seq_len=32", "split.max_songs=1", f"init_from={source.info.run_id}"
    )
    with pytest.raises(ValueError, match="differs from this run's"):
        run(mismatched)


def test_a_run_averaging_transpositions_picks_its_epoch_without_them(train_config, tmp_path):
    cfg = train_config("model=rnn_baseline", "seq_len=32", "split.max_songs=1")
    cfg.transpose_average = True
    run(cfg)
    client = _client(cfg)
    r = _only_run(client)
    path = client.download_artifacts(r.info.run_id, "checkpoints/best.pt", str(tmp_path))
    checkpoint = load_checkpoint(path)
    assert checkpoint["inference"]["transpose_average"] is True
    model = build_model(checkpoint["config"]["model"])
    model.load_state_dict(checkpoint["model"])
    validation = [song_steps(s, "frame") for s in _songs(cfg, "validation")]
    averaged = TranspositionAverage(model)
    cpu = torch.device("cpu")
    plain_acc = evaluate(model, validation, 32, "sequence", cpu).frame_accuracy
    averaged_acc = evaluate(averaged, validation, 32, "sequence", cpu).frame_accuracy
    assert plain_acc != averaged_acc
    # each epoch's validation ran the network once; the final scores averaged the keys
    best = r.data.metrics["fit/best_epoch"]
    history = client.get_metric_history(r.info.run_id, "val/acc")
    assert next(h.value for h in history if h.step == best) == pytest.approx(plain_acc)
    assert r.data.metrics["val/frame_acc_argmax"] == pytest.approx(averaged_acc)
