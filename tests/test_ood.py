"""Out-of-domain scores: every run transcribes the synthesized validation songs as
``chordrec transcribe`` does and logs ``ood_val/…``; the test part is scored on request;
a missing set fails a run before it trains."""

from __future__ import annotations

import json
from pathlib import Path

import mir_eval
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from chordrec import tracking
from chordrec.data.synthetic import ood_songs
from chordrec.errors import ConfigError
from chordrec.io.chord_files import read_lab
from chordrec.run import evaluate, out_of_domain_songs, train
from tests.conftest import OOD, REPO, compose_train, run_chordrec

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

    # the test part only on request, as a re-evaluation of the run
    tested = evaluate(record.info.run_id, cfg, ["ood.part=test"])
    assert set(k for k in tested if k.startswith("ood")) == {
        "ood_test/majmin",
        "ood_test/root",
        "ood_test/frame_acc",
    }


@pytest.mark.integration
def test_templates_are_scored_out_of_domain_too(train_config):
    metrics = train(train_config("experiment=templates"))
    assert metrics["ood_val/root"] >= metrics["ood_val/majmin"] > 0.5


@pytest.mark.slow
def test_a_missing_set_fails_the_run_before_training(train_config, tmp_path: Path):
    cfg = train_config(*TINY, f"ood.root={tmp_path / 'nowhere'}")
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


def test_the_default_run_scores_all_16_validation_songs(monkeypatch):
    """The songs a run scores out of domain (each one's scores are logged, as
    test_a_run_logs_what_transcribing_its_songs_scores shows) are, by default, every
    song of data/ood-synth/validation."""
    monkeypatch.chdir(REPO)  # where the default, relative data paths lead
    scored = out_of_domain_songs(compose_train([]))
    on_disk = sorted((OOD / "validation").glob("*.flac"))
    assert len(on_disk) == 16
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
    assert "(2 songs; templates, viterbi 0.9995)" in lines[-1]
    missing = run_chordrec("ood", "--model", "templates", "--root", str(tmp_path), cwd=REPO)
    assert missing.returncode != 0
    assert str(tmp_path) in missing.stderr and "make data" in missing.stderr


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
