"""Out-of-domain scores: every run transcribes the synthesized validation songs as
``chordrec transcribe`` does and logs ``ood_val/…``; the test part is scored on request.
Without the set, the default (``ood.part=auto``) skips the scores with a warning and the
run's tag ``ood_skipped`` saying why, and a part asked for by name fails the run before
it trains. A machine without fluidsynth gets a green ``make data`` and ``make train``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import mir_eval
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from chordrec import tracking
from chordrec.constants import OOD_SONGS_PER_PART
from chordrec.data import synthetic
from chordrec.data.synthetic import ood_songs
from chordrec.errors import ConfigError
from chordrec.io.chord_files import read_lab
from chordrec.ood import part_identity, score_lab_files
from chordrec.run import OOD_SKIPPED_TAG, evaluate, out_of_domain, train
from chordrec.tracking.runs import DIGEST_LENGTH
from tests.conftest import OOD, QUICK, REPO, compose_train, run_chordrec, subprocess_env

TINY = ["model=rnn_baseline", "seq_len=32", "split.max_songs=1", "decode=viterbi"]


def _client(cfg) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{cfg.tracking.store_dir}/mlflow.db")
    return MlflowClient()


@pytest.mark.integration
def test_a_run_logs_what_transcribing_its_songs_scores(train_config, tmp_path: Path):
    """The run's ood_val scores equal those of `chordrec transcribe` with the run's best
    checkpoint on the same song, scored by mir_eval from the written .lab."""
    cfg = train_config(*TINY, "trainer.max_epochs=2")
    metrics = train(cfg)
    client = _client(cfg)
    (record,) = client.search_runs([client.get_experiment_by_name("chordrec").experiment_id])
    logged = record.data.metrics
    for key in ("ood_val/majmin", "ood_val/root", "ood_val/frame_acc"):
        assert 0.0 <= logged[key] <= 1.0
        assert metrics[key] == logged[key]
    per_song = json.loads(
        Path(
            client.download_artifacts(record.info.run_id, "ood/validation.json", tmp_path)
        ).read_text()
    )
    ((audio, reference),) = ood_songs(OOD, "validation")[:1]
    assert list(per_song) == [audio.stem]  # split.max_songs=1 limits this part too
    assert per_song[audio.stem]["majmin"] == logged["ood_val/majmin"]
    song = per_song[audio.stem]
    for where in ("wrong_at_change", "wrong_inverted"):  # where the errors lie
        assert 0.0 <= song[where] <= 1.0 - song["frame_acc"] + 1e-12

    tracking.configure(cfg.tracking.store_dir)
    best = tracking.run_checkpoint(record.info.run_id, "best", tmp_path / "ckpt")
    out = tmp_path / "song.lab"
    done = run_chordrec("transcribe", str(audio), "--model", str(best), "-o", str(out), cwd=REPO)
    assert done.returncode == 0, done.stderr
    ref_iv, ref_lb = read_lab(reference)
    est_iv, est_lb = read_lab(out)
    scores = mir_eval.chord.evaluate(ref_iv, ref_lb, est_iv, est_lb)
    assert scores["majmin"] == pytest.approx(logged["ood_val/majmin"], abs=1e-3)
    assert scores["root"] == pytest.approx(logged["ood_val/root"], abs=1e-3)

    # the songs it was scored on, as a dataset input: the set's manifest and these names
    (scored,) = [
        d for d in record.inputs.dataset_inputs if d.dataset.name.startswith("chordrec-ood")
    ]
    expected = part_identity(OOD, "validation", [audio.stem])
    assert scored.dataset.name == "chordrec-ood-synth/validation"
    assert scored.dataset.digest == expected.digest[:DIGEST_LENGTH]
    assert [t.value for t in scored.tags if t.key == "mlflow.data.context"] == ["ood_validation"]
    assert json.loads(scored.dataset.profile)["songs"] == 1
    assert expected.digest != part_identity(OOD, "validation", [audio.stem, "other"]).digest

    # the test part only on request, as a re-evaluation of the run
    tested = evaluate(record.info.run_id, cfg, ["ood.part=test"])
    assert set(k for k in tested if k.startswith("ood")) == {
        "ood_test/majmin",
        "ood_test/root",
        "ood_test/frame_acc",
    }
    runs = client.search_runs(
        [record.info.experiment_id], f"attributes.run_id != '{record.info.run_id}'"
    )
    (again,) = runs
    assert [
        (d.dataset.name, [t.value for t in d.tags if t.key == "mlflow.data.context"])
        for d in again.inputs.dataset_inputs
        if d.dataset.name.startswith("chordrec-ood")
    ] == [("chordrec-ood-synth/test", ["ood_test"])]


@pytest.mark.integration
def test_templates_are_scored_out_of_domain_too(train_config):
    metrics = train(train_config("experiment=templates"))
    assert metrics["ood_val/root"] >= metrics["ood_val/majmin"] > 0.5


@pytest.mark.slow
def test_a_missing_set_fails_the_run_before_training(train_config, tmp_path: Path):
    """A part named explicitly is never dropped: without the set the run fails."""
    cfg = train_config(*TINY, "ood.part=validation", f"ood.root={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match=r"nowhere.*make data.*ood\.part=null"):
        train(cfg)
    client = _client(cfg)
    (record,) = client.search_runs([client.get_experiment_by_name("chordrec").experiment_id])
    assert record.info.status == "FAILED"  # before any epoch
    assert "train/loss" not in record.data.metrics


@pytest.mark.slow
def test_out_of_domain_settings_are_checked(train_config):
    with pytest.raises(ConfigError, match="ood.part must be one of"):
        train(train_config(*TINY, "ood.part=train"))
    with pytest.raises(ConfigError, match="ood.max_songs must be at least 1"):
        train(train_config(*TINY, "ood.max_songs=0"))


@pytest.mark.integration
def test_ood_part_null_scores_no_out_of_domain_songs(train_config):
    metrics = train(train_config(*TINY, "ood.part=null"))
    assert not any(k.startswith("ood") for k in metrics)


@pytest.mark.integration
def test_the_default_run_scores_every_validation_song(monkeypatch):
    """The songs a run scores out of domain (each one's scores are logged, as
    test_a_run_logs_what_transcribing_its_songs_scores shows) are, by default, every
    song of data/ood-synth/validation."""
    monkeypatch.chdir(REPO)  # where the default, relative data paths lead
    scored = out_of_domain(compose_train([]))[0]
    on_disk = sorted((OOD / "validation").glob("*.flac"))
    assert len(on_disk) == OOD_SONGS_PER_PART
    assert [audio.absolute() for audio, _ in scored] == on_disk
    assert [lab.absolute() for _, lab in scored] == [a.with_suffix(".lab") for a in on_disk]


@pytest.mark.slow
def test_chordrec_ood_scores_a_model_per_song_and_in_all(tmp_path: Path):
    done = run_chordrec("ood", "--model", "templates", "--max-songs", "2", cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "song",
        "validation-000",
        "validation-001",
        "all",
    ]
    total = lines[-1].split()
    assert 0.5 < float(total[1]) <= float(total[2]) <= 1.0  # majmin <= root
    assert lines[0].split()[-4:] == ["root", "at", "change", "inverted"]
    errors = [float(v) for v in total[5:10]]  # chord->N ... inverted, fractions of frames
    assert all(0.0 <= e <= 1.0 - float(total[3]) + 1e-4 for e in errors), lines[-1]
    assert "(2 songs; templates, viterbi 0.9995)" in lines[-1]
    # another tool's .lab files (here `chordrec transcribe`'s) score as the model does
    audio = [str(song) for song, _ in ood_songs(OOD, "validation")[:2]]
    labs = tmp_path / "labs"
    written = run_chordrec(
        "transcribe", "--model", "templates", "--out-dir", str(labs), *audio, cwd=REPO
    )
    assert written.returncode == 0, written.stderr
    from_labs = run_chordrec("ood", "--labs", str(labs), "--max-songs", "2", cwd=REPO)
    assert from_labs.returncode == 0, from_labs.stderr
    labs_total = from_labs.stdout.splitlines()[-1].split()
    assert labs_total[:3] == total[:3], (from_labs.stdout, done.stdout)  # all, majmin, root
    missing = run_chordrec("ood", "--model", "templates", "--root", str(tmp_path), cwd=REPO)
    assert missing.returncode != 0
    assert str(tmp_path) in missing.stderr and "make data" in missing.stderr


@pytest.mark.integration
def test_lab_files_are_scored_against_the_references_and_a_bad_one_is_named(tmp_path: Path):
    if not (OOD / synthetic.MANIFEST_FILE).exists():
        pytest.skip(f"{OOD} is missing: run make data")
    songs = ood_songs(OOD, "test")[:3]
    for _, reference in songs:
        shutil.copy(reference, tmp_path / reference.name)
    weighted, per_song = score_lab_files(tmp_path, songs)
    assert weighted == {"majmin": 1.0, "root": 1.0}
    assert list(per_song) == [audio.stem for audio, _ in songs]
    # every chord's root moved (to F#, or C where it was F#): only the N segments right
    intervals, labels = read_lab(songs[0][1])
    shifted = [
        label if label == "N" else ("C:maj" if mir_eval.chord.encode(label)[0] == 6 else "F#:maj")
        for label in labels
    ]
    shifted_lab = tmp_path / songs[0][1].name
    shifted_lab.write_text(
        "".join(f"{a:.6f} {b:.6f} {lab}\n" for (a, b), lab in zip(intervals, shifted, strict=True))
    )
    assert score_lab_files(tmp_path, songs)[1][songs[0][0].stem][0] < 0.5
    shifted_lab.write_text("0.0 1.0 C:maj\nnot a lab line\n")
    with pytest.raises(ValueError, match=str(shifted_lab)):
        score_lab_files(tmp_path, songs)
    shifted_lab.write_text("0.0 1.0 C:maj\n1.0 2.0 H:major\n")  # not a Harte label
    with pytest.raises(ValueError, match=f"{shifted_lab}: not a Harte chord label: 'H:major'"):
        score_lab_files(tmp_path, songs)
    shifted_lab.unlink()
    with pytest.raises(ValueError, match=f"{shifted_lab}: no such file"):
        score_lab_files(tmp_path, songs)


def test_best_templates_is_best_decoded_with_the_templates():
    def flat(cfg) -> dict:
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.pop("hydra", None)
        return pd.json_normalize(plain, sep=".").iloc[0].to_dict()

    best, champion = (
        flat(compose_train(["experiment=best"])),
        flat(compose_train(["experiment=best_templates"])),
    )
    changed = {k for k in best.keys() | champion.keys() if best.get(k) != champion.get(k)}
    assert changed == {"preset", "template_weight"}
    assert champion["template_weight"] == 1.0


@pytest.fixture
def no_fluidsynth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine without fluidsynth on PATH nor Debian's soundfont (the missing path it
    would have)."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    monkeypatch.delenv("CHORDREC_SOUNDFONTS", raising=False)
    missing = tmp_path / "FluidR3_GM.sf2"
    fonts = (synthetic.Soundfont(missing, "fluid-soundfont-gm"),)
    monkeypatch.setattr(synthetic, "DEBIAN_SOUNDFONTS", fonts)
    return missing


def test_by_default_a_missing_set_is_skipped_saying_why(no_fluidsynth: Path, tmp_path: Path):
    """ood.part=auto (the default) scores no out-of-domain songs when the set is not
    there, and says what is missing and how to get it; a part named explicitly fails."""
    nowhere = tmp_path / "ood-synth"
    assert compose_train([]).ood.part == "auto"
    songs, part, skipped = out_of_domain(compose_train([f"ood.root={nowhere}"]))
    assert songs == [] and part is None
    assert skipped == (
        f"{nowhere} missing: fluidsynth not installed (not on PATH), soundfont "
        f"{no_fluidsynth} missing; apt-get install fluidsynth fluid-soundfont-gm (elsewhere: "
        "fluidsynth from your package manager, and General MIDI soundfonts named with "
        "--soundfont or $CHORDREC_SOUNDFONTS), then make data"
    )
    for asked in ("validation", "test"):  # a user's explicit request is never dropped
        with pytest.raises(
            ConfigError,
            match=r"ood-synth/manifest\.json: no out-of-domain set there; build it with "
            r"`make data`.*lacks: fluidsynth not installed.*ood\.part=auto skips a missing set",
        ):
            out_of_domain(compose_train([f"ood.root={nowhere}", f"ood.part={asked}"]))
    assert out_of_domain(compose_train([f"ood.root={nowhere}", "ood.part=null"])) == (
        [],
        None,
        None,
    )
    with pytest.raises(ConfigError, match="ood.max_songs must be at least 1"):
        out_of_domain(compose_train([f"ood.root={nowhere}", "ood.max_songs=0"]))
    nowhere.mkdir()  # a folder without the set's manifest is no set either
    assert out_of_domain(compose_train([f"ood.root={nowhere}"]))[2].startswith(
        f"{nowhere} holds no manifest.json: fluidsynth not installed"
    )


def test_with_fluidsynth_a_missing_set_is_skipped_naming_make_data(tmp_path: Path):
    if shutil.which("fluidsynth") is None or not all(
        sf.path.is_file() for sf in synthetic.DEBIAN_SOUNDFONTS
    ):
        pytest.skip("needs the fluidsynth program and the Debian soundfonts")
    nowhere = tmp_path / "ood-synth"
    assert out_of_domain(compose_train([f"ood.root={nowhere}"]))[2] == (
        f"{nowhere} missing: build it with make data"
    )


def _fake_venv(clone: Path) -> None:
    """A .venv in ``clone`` that `make` takes as installed: its python and chordrec run
    this interpreter (on this checkout)."""
    bin_dir = clone / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, args in (("python", ""), ("chordrec", "-m chordrec ")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args}"$@"\n')
        script.chmod(0o755)
    for prerequisite in ("pyproject.toml", "requirements.lock"):  # of .venv/.installed
        (clone / prerequisite).write_text("")
        os.utime(clone / prerequisite, (0, 0))  # older than .installed: install is done
    (clone / ".venv" / ".installed").touch()


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.integration
def test_a_machine_without_fluidsynth_gets_a_green_make_data_and_make_train(
    data_root: Path, tmp_path: Path
):
    """`make data` then `make train` in a copy of the Makefile, fluidsynth hidden from
    PATH: the data set is fetched (from the local copy), the out-of-domain set skipped
    in one line, and a 1-epoch run on 2 songs ends FINISHED, tagged ood_skipped with
    why, after one warning line."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs make")
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "Makefile", clone)
    _fake_venv(clone)
    bin_dir = tmp_path / "bin"  # a PATH without fluidsynth: the tools a run uses only
    bin_dir.mkdir()
    for tool in ("git", "sh", "make"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    env = subprocess_env(
        PATH=str(bin_dir),
        CHORDREC_DATA_SOURCE=str(data_root.resolve()),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("CHORDREC_SOUNDFONTS", None)

    def run_make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [make, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )

    data = run_make("data")
    assert data.returncode == 0, data.stdout + data.stderr
    (skip,) = [line for line in data.stderr.splitlines() if "out-of-domain" in line]
    assert skip.startswith("chordrec: skipped: cannot build the out-of-domain set in ")
    assert "fluidsynth not installed (not on PATH)" in skip and "apt-get install fluidsynth" in skip
    assert (clone / "data" / "rwc-pop" / "SHA256SUMS").is_file()
    assert not (clone / "data" / "ood-synth").exists()

    train = run_make("train", f"ARGS={' '.join(QUICK)}")
    output = train.stdout + train.stderr
    assert train.returncode == 0, output
    assert output.count("chordrec: skipped: cannot build the out-of-domain set") == 1  # make data
    (warning,) = [line for line in output.splitlines() if "no out-of-domain scores" in line]
    assert "WARNING" in warning
    # (Debian's soundfonts are named too where they are missing)
    assert (
        "no out-of-domain scores (ood.part=auto): data/ood-synth missing: fluidsynth not "
        "installed (not on PATH)" in warning
    )
    assert "apt-get install fluidsynth" in warning and warning.endswith(", then make data")
    db = sqlite3.connect(clone / "mlruns" / "mlflow.db")
    try:
        ((run_id, status),) = db.execute("SELECT run_uuid, status FROM runs").fetchall()
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
        metrics = {
            k for (k,) in db.execute("SELECT key FROM metrics WHERE run_uuid = ?", (run_id,))
        }
    finally:
        db.close()
    assert status == "FINISHED"
    assert tags[OOD_SKIPPED_TAG] == warning.split("(ood.part=auto): ", 1)[1]
    assert "test/frame_acc" in metrics and not any(k.startswith("ood") for k in metrics)
