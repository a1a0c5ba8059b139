"""`chordrec transcribe` and `chordrec register` end to end, on audio synthesised here.

Models: the training-free template matcher (``--model templates``); a network whose
linear head holds the same triad templates (a checkpoint built here, no data
needed) saved locally or logged to a temporary SQLite MLflow store and registered;
and a linear model trained for a few seconds on real songs (skipped without the
data set). Transcriptions are scored against the synthesised chords with mir_eval.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mir_eval
import numpy as np
import psutil
import pytest
import soundfile as sf
import torch

from chordrec import tracking
from chordrec.audio.analysis import FeatureWorkers, file_features, files_features
from chordrec.audio.features import MAX_DURATION_S, MAX_SAMPLES, AudioError
from chordrec.cli import build_parser, main
from chordrec.constants import FRAME_RATE
from chordrec.data.sequences import BatchedExamples, song_steps
from chordrec.data.songs import load_songs, song_names
from chordrec.errors import ConfigError
from chordrec.fit import TrainerSettings, fit, seed_everything
from chordrec.inference.predictor import InferenceRecipe, build_predictor
from chordrec.io.atomic_write import write_atomic
from chordrec.io.chord_files import read_lab
from chordrec.models import build_model, templates
from chordrec.transcribe import Transcription, load_model, plan_jobs, transcribe_audio
from tests.test_features import SONG, SR, render_song, write_silence_flac, write_song

# Measured: templates 0.98, template network 0.98 (frame level) and 0.99 (beat level,
# pulsed song), the quickly trained linear model 0.96-0.97 over seeds. A pipeline with
# shifted pitch classes, wrong time units or an untrained model stays far below.
MIN_MAJMIN = 0.9
MIN_MAJMIN_TRAINED = 0.85

LINEAR = {
    "_target_": "chordrec.models.CRNN",
    "in_features": 12,
    "n_classes": 25,
    "conv_blocks": [],
    "rnn": None,
    "head_dropout": 0.0,
}


@pytest.fixture(scope="module")
def song_wav(tmp_path_factory) -> Path:
    return write_song(tmp_path_factory.mktemp("audio") / "song.wav")


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, list[str]]:
    _, intervals, labels = render_song()
    return intervals, labels


def majmin(path: Path, reference) -> float:
    """mir_eval's majmin score of the lab file at ``path`` against ``reference``."""
    est_intervals, est_labels = read_lab(path)
    ref_intervals, ref_labels = reference
    return mir_eval.chord.evaluate(ref_intervals, ref_labels, est_intervals, est_labels)["majmin"]


def template_checkpoint(level: str = "frame") -> dict[str, Any]:
    """A linear CRNN computing :func:`chordrec.models.templates.template_scores` on unit chroma,
    as a training checkpoint (state dict and config)."""
    network = build_model(LINEAR)
    weights = templates.chord_templates()
    weights[1:] /= np.linalg.norm(weights[1:], axis=1, keepdims=True)
    bias = np.zeros(25)
    bias[0] = templates.DEFAULT_NO_CHORD_THRESHOLD
    with torch.no_grad():
        network.head.weight.copy_(torch.from_numpy(weights / templates.DEFAULT_TEMPERATURE))
        network.head.bias.copy_(torch.from_numpy(bias / templates.DEFAULT_TEMPERATURE))
    config = {
        "model": LINEAR,
        "data": {"level": level},
        "seq_len": 64,
        "seq_mode": "sequence",
        "decode": "viterbi",
    }
    recipe = InferenceRecipe.from_config(config, templates.DEFAULT_SELF_TRANSITION)
    return {
        "model": network.state_dict(),
        "config": config,
        "inference": recipe.to_dict(),
        "epoch": 1,
    }


def transcribe(*args: str | Path) -> int:
    return main(["transcribe", "--quiet", *map(str, args)])


# --------------------------------------------------------------- templates, outputs


@pytest.mark.slow
def test_templates_transcribe_the_synthetic_song(song_wav, reference, tmp_path) -> None:
    out = tmp_path / "song.lab"
    assert transcribe(song_wav, "-m", "templates", "-o", out) == 0
    intervals, labels = read_lab(out)
    duration = len(render_song()[0]) / SR
    assert intervals[0, 0] == 0 and intervals[-1, 1] == pytest.approx(duration, abs=1e-6)
    assert (intervals[1:, 0] == intervals[:-1, 1]).all()  # contiguous
    assert all(a != b for a, b in zip(labels, labels[1:], strict=False))  # runs merged
    assert labels[0] == labels[-1] == "N"  # the silences
    assert majmin(out, reference) >= MIN_MAJMIN


def test_default_output_goes_beside_the_audio(song_wav, tmp_path) -> None:
    audio = tmp_path / "beside.wav"
    audio.write_bytes(song_wav.read_bytes())
    assert transcribe(audio, "-m", "templates") == 0
    assert (tmp_path / "beside.lab").is_file()


@pytest.mark.slow
def test_jams_csv_and_plot(song_wav, tmp_path, capsys) -> None:
    lab, jams, csv, png = (tmp_path / f"song.{ext}" for ext in ("lab", "jams", "csv", "png"))
    assert transcribe(song_wav, "-m", "templates", "-o", lab) == 0
    assert transcribe(song_wav, "-m", "templates", "-o", jams, "--plot", png) == 0
    assert transcribe(song_wav, "-m", "templates", "-o", csv) == 0  # format from the suffix
    intervals, labels = read_lab(lab)

    document = json.loads(jams.read_text())
    (annotation,) = document["annotations"]
    assert annotation["namespace"] == "chord"
    assert document["file_metadata"]["duration"] == pytest.approx(intervals[-1, 1])
    assert [d["value"] for d in annotation["data"]] == labels
    starts = [d["time"] for d in annotation["data"]]
    ends = [d["time"] + d["duration"] for d in annotation["data"]]
    assert np.allclose(np.c_[starts, ends], intervals, atol=1e-5)

    lines = csv.read_text().splitlines()
    assert lines[0] == "start,end,chord"
    assert [line.split(",")[2] for line in lines[1:]] == labels

    assert png.read_bytes().startswith(b"\x89PNG")
    assert str(jams) in capsys.readouterr().out


def test_existing_output_is_kept_without_force(song_wav, tmp_path, capsys) -> None:
    out = tmp_path / "song.lab"
    out.write_text("keep me\n")
    assert transcribe(song_wav, "-m", "templates", "-o", out) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and str(out) in err
    assert "Traceback" not in err
    assert out.read_text() == "keep me\n"
    assert transcribe(song_wav, "-m", "templates", "-o", out, "--force") == 0
    assert "C:maj" in out.read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left


def test_segments_end_with_the_audio() -> None:
    """Frame i covers [i, i + 1) / FRAME_RATE s; the last frame reaches past the audio's
    end and is cut there, and a segment left empty by the cut is dropped."""
    chroma = np.zeros((4, 12), np.float32)
    classes = np.array([0, 1, 1, 13])
    intervals, labels = Transcription(chroma, classes, 3 / FRAME_RATE).segments()
    assert labels == ["N", "C:maj"]
    assert np.allclose(intervals, [[0, 1 / FRAME_RATE], [1 / FRAME_RATE, 3 / FRAME_RATE]])
    intervals, labels = Transcription(chroma, classes, 3.5 / FRAME_RATE).segments()
    assert labels == ["N", "C:maj", "C:min"] and intervals[-1, 1] == 3.5 / FRAME_RATE


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.wav", b"", "file is empty"),
        ("garbage.wav", b"RIFF....WAVEjunk" * 64, "not a readable audio file"),
        ("garbage.mp3", b"not an mp3 at all\n" * 64, "not a readable audio file"),
    ],
)
def test_unreadable_files_fail_clearly(tmp_path, capsys, name, content, message) -> None:
    audio = tmp_path / name
    audio.write_bytes(content)
    assert transcribe(audio, "-m", "templates") == 1
    err = capsys.readouterr().err
    assert f"chordrec: error: {audio}: " in err and message in err
    assert "Traceback" not in err
    assert not audio.with_suffix(".lab").exists()


def test_too_short_file_fails_clearly(tmp_path, capsys) -> None:
    audio = write_song(tmp_path / "short.wav", [("C:maj", 0.5)])
    assert transcribe(audio, "-m", "templates") == 1
    err = capsys.readouterr().err
    assert str(audio) in err and "too short" in err


@pytest.mark.slow
def test_directory_with_bad_files(tmp_path, capsys) -> None:
    songs = tmp_path / "songs"
    (songs / "album").mkdir(parents=True)
    write_song(songs / "first.wav", SONG[:4])
    y, _, _ = render_song(SONG[6:10], sr=22050)
    sf.write(songs / "album" / "second.flac", np.stack([y, y], axis=1), 22050)  # stereo, 22 kHz
    (songs / "broken.mp3").write_bytes(b"\x00" * 4096)
    (songs / "empty.wav").write_bytes(b"")
    (songs / "notes.txt").write_text("not audio, not picked up")
    labs = tmp_path / "labs"
    assert main(["transcribe", str(songs), "--out-dir", str(labs), "-m", "templates"]) == 1
    captured = capsys.readouterr()
    assert (labs / "first.lab").is_file() and (labs / "album" / "second.lab").is_file()
    assert sorted(p.name for p in labs.rglob("*") if p.is_file()) == ["first.lab", "second.lab"]
    assert "2 of 4 files failed" in captured.err
    assert str(songs / "broken.mp3") in captured.err and str(songs / "empty.wav") in captured.err
    assert "Traceback" not in captured.err
    assert read_lab(labs / "album" / "second.lab")[1][1:3] == ["D:maj", "B:min"]


@pytest.mark.slow
def test_worker_processes_write_what_one_process_writes(tmp_path, capsys) -> None:
    # --jobs 2 decodes and computes chroma (and beats, at beat level) in worker
    # processes; the files written, their bytes and the failures listed are those of
    # --jobs 1, in the same order.
    songs = tmp_path / "songs"
    songs.mkdir()
    for i in range(3):
        write_song(songs / f"song{i}.wav", SONG[2 * i : 2 * i + 5], pulse=0.5)
    (songs / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 100)
    checkpoint = tmp_path / "beat.pt"
    torch.save(template_checkpoint("beat"), checkpoint)
    outputs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        assert transcribe(songs, "--out-dir", out, "-m", checkpoint, "--jobs", jobs) == 1
        outputs[jobs] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        outputs[jobs]["stderr"] = capsys.readouterr().err.encode()
    assert sorted(outputs["1"]) == ["song0.lab", "song1.lab", "song2.lab", "stderr"]
    assert outputs["1"] == outputs["2"]
    assert b"1 of 4 files failed" in outputs["1"]["stderr"]


def _worker_blas_threads() -> list[int]:
    """Run in a worker: its BLAS libraries' thread counts."""
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.mark.slow
def test_feature_workers_start_warm_with_one_blas_thread_each(tmp_path) -> None:
    """Workers made before the files are known (as the CLI does, before importing its
    model) give the in-process features, in order, with one BLAS thread each."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"song{i}.wav")
        write_song(paths[-1], SONG[i : i + 3], pulse=0.5)
    missing = tmp_path / "missing.wav"
    with pytest.raises(ValueError, match="1 or more"):
        FeatureWorkers(0)
    with FeatureWorkers(2) as workers:
        threads = workers._pool.submit(_worker_blas_threads).result()
        results = list(files_features([*paths, missing], with_beats=True, workers=workers))
    assert threads and set(threads) == {1}
    assert isinstance(results[-1], AudioError) and str(missing) in str(results[-1])
    for path, result in zip(paths, results, strict=False):
        expected = file_features(path, with_beats=True)
        np.testing.assert_array_equal(result.chroma, expected.chroma)
        np.testing.assert_array_equal(result.beats, expected.beats)


def test_jobs_must_be_positive(song_wav, capsys) -> None:
    with pytest.raises(SystemExit):
        transcribe(song_wav, "-m", "templates", "--jobs", "0")
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.wav"], "no such file or directory"),
        (["song.wav", "-m", "not-a-model"], "none of"),
        (["song.wav", "-m", "absent.pt"], "no such checkpoint"),
        (["song.wav", "-m", "bad.pt"], "not a loadable weights-only checkpoint"),
        (["song.wav", "song.wav", "-o", "x.lab", "-m", "templates"], "single input"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_fail_clearly(song_wav, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "song.wav").write_bytes(song_wav.read_bytes())
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert transcribe(*args) == 1
    err = capsys.readouterr().err
    assert err.startswith("chordrec: error:") and message in err and "Traceback" not in err


# --------------------------------------------------------------- networks


def test_checkpoint_file_frame_level(song_wav, reference, tmp_path) -> None:
    checkpoint = tmp_path / "best.pt"
    torch.save(template_checkpoint("frame"), checkpoint)
    out = tmp_path / "song.lab"
    assert transcribe(song_wav, "-m", checkpoint, "-o", out) == 0
    assert majmin(out, reference) >= MIN_MAJMIN


@pytest.mark.slow
def test_checkpoint_file_beat_level(reference, tmp_path) -> None:
    """Beat level: chords struck on every beat (120 BPM) give the tracker a pulse."""
    audio = write_song(tmp_path / "pulse.wav", pulse=0.5)
    checkpoint = tmp_path / "best.pt"
    torch.save(template_checkpoint("beat"), checkpoint)
    out = tmp_path / "pulse.lab"
    assert transcribe(audio, "-m", checkpoint, "-o", out) == 0
    assert majmin(out, reference) >= MIN_MAJMIN


def test_a_checkpoint_needing_unpickling_is_refused(tmp_path) -> None:
    checkpoint = tmp_path / "pickled.pt"
    torch.save({**template_checkpoint(), "extra": Path("objects need unpickling")}, checkpoint)
    with pytest.raises(ValueError, match="weights-only"):
        load_model(str(checkpoint))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """A SQLite MLflow store holding one run with checkpoints/best.pt and a logged model
    (the template network) and one run with a checkpoint but no logged model."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    tracking.configure(root, uri)
    checkpoint = root / "best.pt"
    torch.save(template_checkpoint(), checkpoint)
    runs = {"uri": uri}
    for key in ("with_model", "without_model"):
        with tracking.RunTracker(store_dir=root, system_metrics=False) as tracker:
            tracker.log_epoch(1, {"val/acc": 0.5}, {"best": checkpoint})
            if key == "with_model":
                network = build_model(LINEAR)
                network.load_state_dict(template_checkpoint()["model"])
                tracker.log_model(network, np.zeros((1, 64, 12), np.float32))
            runs[key] = tracker.run_id
    return runs


@pytest.mark.slow
def test_register_then_transcribe_with_the_champion(
    store, song_wav, reference, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    assert main(["register", store["with_model"], "--alias", "champion"]) == 0
    assert "version 1" in capsys.readouterr().out
    out = tmp_path / "song.lab"
    assert transcribe(song_wav, "-o", out) == 0  # default: models:/chordrec@champion
    assert majmin(out, reference) >= MIN_MAJMIN
    for spec in (f"runs:/{store['with_model']}/model", store["with_model"], "models:/chordrec/1"):
        model = load_model(spec)
        assert store["with_model"] in model.source
        assert (model.level, model.decode) == ("frame", "viterbi")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["register", "{without_model}"], "logged no model"),
        (["register", "0" * 32], "no MLflow run"),
        (["transcribe", "song.wav", "-m", "models:/chordrec@nobody"], "not found in the registry"),
        (["transcribe", "song.wav", "-m", "0" * 32], "no MLflow run"),
    ],
)
def test_registry_errors_are_clear(
    store, song_wav, tmp_path, monkeypatch, capsys, command, message
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "song.wav").write_bytes(song_wav.read_bytes())
    assert main([part.format(**store) for part in command]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chordrec: error:") and message in err and "Traceback" not in err


@pytest.mark.integration
def test_a_model_trained_on_real_songs(data_root, reference, tmp_path) -> None:
    """A linear chroma classifier, trained for a few seconds on 10 songs with random
    transposition, transcribes the synthetic song through its checkpoint."""
    seed_everything(0)
    names = song_names(data_root)
    train = [song_steps(s, "frame") for s in load_songs(data_root, names[:10])]
    validation = [song_steps(s, "frame") for s in load_songs(data_root, names[80:81])]
    model = build_model(LINEAR)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    config = {"model": LINEAR, "data": {"level": "frame"}, "seq_len": 32}
    config.update(seq_mode="sequence", decode="viterbi")
    fit(
        model,
        BatchedExamples(train, 32, "sequence", "transpose"),
        validation,
        optimizer,
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
        TrainerSettings(max_epochs=8, progress=False),
        torch.device("cpu"),
        tmp_path / "checkpoints",
        build_predictor(model, config, torch.device("cpu")),
        checkpoint_extra={"config": config},
    )
    trained = load_model(str(tmp_path / "checkpoints" / "best.pt"), "cpu")
    y, _, _ = render_song()
    intervals, labels = transcribe_audio(y, trained).segments()
    ref_intervals, ref_labels = reference
    score = mir_eval.chord.evaluate(ref_intervals, ref_labels, intervals, labels)["majmin"]
    assert score >= MIN_MAJMIN_TRAINED


def test_a_network_transcribes_with_the_runs_evaluation_chunking() -> None:
    """A checkpoint scored on overlapped chunks (trainer.eval_*) transcribes the same way."""
    from chordrec.data.sequences import song_steps
    from chordrec.data.songs import Song
    from chordrec.inference.predictor import predict_log_probs
    from chordrec.transcribe import network_model

    torch.manual_seed(0)
    spec = {**LINEAR, "rnn": {"type": "gru", "hidden_size": 8, "num_layers": 1}}
    network = build_model(spec)
    config = {
        "model": spec,
        "data": {"level": "frame"},
        "seq_len": 16,
        "seq_mode": "sequence",
        "decode": "argmax",
        "trainer": {"eval_seq_len": 24, "eval_overlap": True},
    }
    checkpoint = {"model": network.state_dict(), "config": config}
    rng = np.random.default_rng(0)
    song = Song("x", rng.random((100, 12)).astype(np.float32), np.zeros(100, np.int64), None)
    got = network_model(checkpoint, "test").scores(song)
    steps = song_steps(song, "frame")
    cpu = torch.device("cpu")
    expected = predict_log_probs(network.eval(), steps, 24, "sequence", cpu, overlap=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    plain = predict_log_probs(network, steps, 16, "sequence", cpu)
    assert not np.allclose(got, plain, atol=1e-4)


# --------------------------------------------------------------- output files (issue 9)


def with_umask(mask: int, action):
    """Run ``action()`` with the process umask set to ``mask``, then restore it."""
    previous = os.umask(mask)
    try:
        return action()
    finally:
        os.umask(previous)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_get_the_users_umask_permissions(tmp_path, mask, force) -> None:
    """An output is created like any file the user writes, mode 0o666 less the umask,
    not with the 0o600 of a private temporary file (new file and --force alike)."""
    path = tmp_path / "labs" / "song.lab"
    if force:
        path.parent.mkdir()
        path.write_text("old\n")
    with_umask(mask, lambda: write_atomic(path, lambda tmp: tmp.write_text("new\n"), force))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert path.read_text() == "new\n"
    assert [p.name for p in path.parent.iterdir()] == ["song.lab"]


def test_transcription_outputs_are_readable_as_the_umask_says(song_wav, tmp_path) -> None:
    out, png = tmp_path / "song.lab", tmp_path / "song.png"
    args = (song_wav, "-m", "templates", "-o", out, "--plot", png)
    assert with_umask(0o022, lambda: transcribe(*args)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(png.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("inputs", "options", "output"),
    [
        (["song.lab"], {}, "song.lab"),  # lab in, lab out, beside it
        (["dir/song.lab"], {"out_dir": "dir"}, "dir/song.lab"),
        (["song.lab"], {"output": "song.lab"}, "song.lab"),
        (["song.wav"], {"output": "./song.wav"}, "song.wav"),
        (["song.wav"], {"output": "new/../song.wav"}, "new/../song.wav"),
        (["song.wav"], {"output": "symlink.lab"}, "symlink.lab"),
        (["song.wav"], {"output": "hardlink.lab"}, "hardlink.lab"),
        (["song.wav"], {"plot": "song.wav"}, "song.wav"),
        (["song.wav"], {"plot": "symlink.lab"}, "symlink.lab"),
        (["song.wav"], {"output": "x.lab", "plot": "x.lab"}, "x.lab"),
    ],
)
def test_planning_refuses_an_output_that_would_replace_an_input(
    tmp_path, monkeypatch, inputs, options, output
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    for name in ("song.wav", "song.lab", "dir/song.lab"):
        (tmp_path / name).write_bytes(b"audio, whatever the name")
    (tmp_path / "symlink.lab").symlink_to("song.wav")
    (tmp_path / "hardlink.lab").hardlink_to("song.wav")
    options = {key: Path(value) for key, value in options.items()}
    with pytest.raises(ConfigError) as info:
        plan_jobs(inputs, "lab", **options)
    message = str(info.value)
    assert message.startswith(f"{inputs[0]}: ") and str(Path(output)) in message
    why = "is also its output" if "plot" in options and "output" in options else "is the input file"
    assert why in message and "\n" not in message


def test_planning_allows_outputs_beside_their_inputs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("song.wav", "song.lab"):
        (tmp_path / name).write_bytes(b"audio, whatever the name")
    assert [job.output for job in plan_jobs(["song.lab"], "jams")] == [Path("song.jams")]
    (job,) = plan_jobs(["song.wav"], "lab", Path("song.lab"), plot=Path("song.png"))
    assert (job.output, job.plot) == (Path("song.lab"), Path("song.png"))


def test_an_input_is_never_replaced_by_its_own_output(song_wav, tmp_path, capsys) -> None:
    """Audio named ``song.lab`` (libsndfile reads it by content) would be its own lab
    output: refused before any work, --force or not, and left as it was."""
    audio = tmp_path / "song.lab"
    audio.write_bytes(song_wav.read_bytes())
    for extra in ([], ["--force"], ["--force", "-o", f"{tmp_path}/new/../song.lab"]):
        assert transcribe(audio, "-m", "templates", *extra) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"chordrec: error: {audio}: ") and err.count("\n") == 1
        assert "is the input file itself" in err
    assert audio.read_bytes() == song_wav.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["song.lab"]


# --------------------------------------------------------------- long audio (issue 9)


def test_a_file_over_the_duration_limit_is_refused_in_one_line(tmp_path, capsys) -> None:
    audio = tmp_path / "long.wav"
    sf.write(audio, np.zeros(10 * 8000, np.int16), 8000)  # 10 s of silence at 8 kHz
    assert transcribe(audio, "-m", "templates", "--max-duration", "5", "--force") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chordrec: error: {audio}: too long (10.0 s") and err.count("\n") == 1
    assert "limit is 5 s" in err and "--max-duration" in err
    assert [p.name for p in tmp_path.iterdir()] == ["long.wav"]  # nothing written


@pytest.mark.parametrize("option", ["--max-duration", "--max-samples"])
@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_audio_limits_must_be_positive(song_wav, tmp_path, capsys, option, value) -> None:
    out = tmp_path / "x.lab"
    assert transcribe(song_wav, "-m", "templates", "-o", out, option, value) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chordrec: error: {option} must be a positive") and value in err
    assert not out.exists()


def test_audio_limits_help_gives_the_defaults() -> None:
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = " ".join(commands.choices["transcribe"].format_help().split())
    assert f"default: {MAX_DURATION_S:g} s" in help_text
    assert f"default: {MAX_SAMPLES} = 30 min of 48 kHz stereo" in help_text
    assert MAX_SAMPLES == 30 * 60 * 48_000 * 2


# ------------------------------------------------- all-or-nothing outputs, FIFOs (issue 24)


def test_a_failing_plot_leaves_no_output_behind(song_wav, tmp_path, capsys) -> None:
    """`--plot` into a path that cannot be a folder fails the song with nothing written,
    so the rerun with a good plot path does not stop at "exists"."""
    out, blocker = tmp_path / "song.lab", tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    assert transcribe(song_wav, "-m", "templates", "-o", out, "--plot", blocker / "p.png") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chordrec: error: {song_wav}: ") and "notes.txt" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no .lab, no temp
    assert transcribe(song_wav, "-m", "templates", "-o", out, "--plot", tmp_path / "p.png") == 0
    assert out.is_file() and (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_a_fifo_is_refused_as_not_a_regular_file(tmp_path, capsys) -> None:
    """A FIFO given as input is named as what it is, before any model loads or anything
    waits on it for audio; nothing is written beside it."""
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    assert transcribe(fifo, "-m", "templates") == 1
    err = capsys.readouterr().err
    assert err == (
        f"chordrec: error: {fifo}: not a regular file (a FIFO); chordrec transcribes audio "
        "files: save the audio to a file first\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.wav"]


# --------------------------------------------------------------- memory, dying workers (issue 24)


def write_silent_wav(path: Path, seconds: float, sr: int) -> Path:
    """A 16-bit mono WAV file of ``seconds`` of silence at ``sr`` Hz, written as its
    header and a sparse run of zero bytes: no time or disk space, whatever its size."""
    data = int(seconds * sr) * 2
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, 1, sr, 2 * sr, 2, 16, b"data", data),
    )
    with path.open("wb") as wav:
        wav.write(header)
        wav.truncate(len(header) + data)
    return path


def two_songs(tmp_path: Path) -> Path:
    """``tmp_path/songs`` holding ``a.wav`` and ``c.wav`` (three chords each), for a
    ``b`` file between them that fails."""
    songs = tmp_path / "songs"
    songs.mkdir()
    for name, segments in (("a", SONG[0:3]), ("c", SONG[3:6])):
        write_song(songs / f"{name}.wav", segments)
    return songs


def assert_only_b_failed(out: Path, err: str, message: str) -> None:
    """The batch of :func:`two_songs` and ``b`` listed ``b`` alone as failed, with
    ``message``, and wrote the others' outputs into ``out``."""
    assert "1 of 3 files failed" in err
    assert message in err
    assert sorted(p.name for p in out.iterdir()) == ["a.lab", "c.lab"]


@pytest.mark.slow
def test_a_high_rate_file_is_refused_from_its_header_while_the_others_finish(
    tmp_path, capsys
) -> None:
    """A 4.5-minute FLAC at 655,350 Hz (0.7 MB; 177 million samples, over
    :data:`MAX_SAMPLES`) in a folder is refused from its header, by default, naming its
    length, rate and the option; the songs beside it are transcribed."""
    songs, out = two_songs(tmp_path), tmp_path / "out"
    high = write_silence_flac(songs / "b.flac", 270, 655_350)
    assert transcribe(songs, "-m", "templates", "-j", "1", "--out-dir", out) == 1
    assert_only_b_failed(
        out,
        capsys.readouterr().err,
        f"  {high}: too many samples to decode (270.0 s at 655350 Hz × 1 channel = "
        f"176,944,500 samples; the limit is {MAX_SAMPLES:,} samples, --max-samples N raises it)",
    )


def _kill_processes_reading(path: Path, kills: int, done: threading.Event) -> list[int]:
    """Kill (SIGKILL) each process below this one that opens ``path``, until ``kills``
    of them or ``done``; the ids of those killed."""
    target, killed = str(path.resolve()), []
    while len(killed) < kills and not done.is_set():
        for child in psutil.Process().children(recursive=True):
            try:
                if child.pid not in killed and any(f.path == target for f in child.open_files()):
                    child.kill()
                    killed.append(child.pid)
            except psutil.Error:  # ended meanwhile
                pass
        time.sleep(0.001)
    return killed


@pytest.mark.slow
def test_a_worker_killed_on_a_file_fails_that_file_and_the_others_finish(tmp_path, capsys) -> None:
    """The worker process reading one file of a folder is killed (SIGKILL, as the
    out-of-memory killer does), and again when that file is retried: the file is listed
    as failed, every other file gets its output. The file: 160 s of silence at 655,350 Hz
    (105 million samples, within the limits), decoded long enough to be caught."""
    songs, out = two_songs(tmp_path), tmp_path / "out"
    doomed = write_silent_wav(songs / "b.wav", 160, 655_350)
    done = threading.Event()
    with ThreadPoolExecutor(1) as killer:
        killed = killer.submit(_kill_processes_reading, doomed, 2, done)
        try:
            status = transcribe(songs, "-m", "templates", "-j", "2", "--out-dir", out)
        finally:
            done.set()
        assert len(killed.result()) == 2
    assert status == 1
    assert_only_b_failed(
        out,
        capsys.readouterr().err,
        f"  {doomed}: the worker process computing its features died 2 times",
    )


@pytest.mark.slow
def test_running_out_of_memory_on_a_file_fails_that_file_and_the_others_finish(
    tmp_path, capsys
) -> None:
    """Under an address-space limit (``ulimit -v``: 1 GB more than this process maps),
    a file whose decoding needs more (10 minutes at 655,350 Hz, 393 million samples,
    let through by ``--max-samples inf``) fails with "out of memory"; the songs beside
    it are transcribed, in the same process."""
    songs, out = two_songs(tmp_path), tmp_path / "out"
    huge = write_silent_wav(songs / "b.wav", 600, 655_350)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + 2**30, hard))
    try:
        status = transcribe(
            songs, "-m", "templates", "-j", "1", "--out-dir", out, "--max-samples", "inf"
        )
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert status == 1
    assert_only_b_failed(
        out,
        capsys.readouterr().err,
        f"  {huge}: out of memory computing its features (Unable to allocate",
    )
