"""Tests of the synthetic training songs (chordrec.synth_train) and the training mix
(config group ``data``: ``rwc_pop``, ``rwc_pop+synth``, ``synth``).

The held-out factor: no training song's chord instrument is one the out-of-domain songs
play, and the parts share no song. The rendered tests need the ``fluidsynth`` program
and the fast-loading Debian soundfonts (skipped without them): they build three short
training songs and train one epoch on them beside two RWC-Pop songs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from chordrec.audio.analysis import file_features
from chordrec.constants import OOD_SONGS_PER_PART, SYNTH_TRAIN_SONGS
from chordrec.data import synthetic
from chordrec.data.sequences import BatchedExamples, song_steps
from chordrec.data.songs import Song, load_songs
from chordrec.errors import ConfigError
from chordrec.io.atomic_write import ForeignDirectoryError
from chordrec.run import build_context, check_settings, train
from chordrec.synth_train import (
    FEATURE_FOLDERS,
    PART,
    SONG_SECONDS,
    build_train_set,
    ensure_train_set,
    frame_labels,
    read_train_set,
)
from chordrec.tracking.runs import DIGEST_LENGTH
from tests.conftest import OOD, REPO, compose_train
from tests.test_synthetic import FAKE_FONTS, FAST_FONTS, SHORT, _skip_without_fluidsynth

TRAIN = REPO / "data" / "synth-train"  # the full training set, where `make data` built it
TINY = ["model=rnn_baseline", "seq_len=32"]


@pytest.fixture(scope="module")
def train_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short training songs rendered with the fast-loading soundfonts, their
    features computed in this process (compiled once for the tests that follow)."""
    _skip_without_fluidsynth()
    dest = tmp_path_factory.mktemp("synth") / "synth-train"
    return ensure_train_set(dest, 0, 3, FAST_FONTS, song_seconds=SHORT, workers=1)


# --------------------------------------------------------------------------- config


def test_the_mix_is_a_config_group_of_presets_that_differ_in_the_fraction_only() -> None:
    default = compose_train([])
    assert default == compose_train(["data=rwc_pop"])
    assert default.data.synth_fraction == 0.0
    assert default.data.synth_root == "data/synth-train"
    for option, fraction in (("rwc_pop+synth", 0.5), ("synth", 1.0)):
        mixed = compose_train([f"data={option}"])
        assert mixed.data.synth_fraction == fraction
        assert {**mixed.data, "synth_fraction": 0.0} == {**default.data}
    # a preset's data settings stay, the mix comes from the group
    champion = compose_train(["experiment=best_templates", "data=rwc_pop+synth"])
    assert champion.data.augment == "transpose" and champion.data.random_offset is True
    assert champion.data.synth_fraction == 0.5
    assert compose_train(["data.synth_fraction=0.25"]).data.synth_fraction == 0.25
    for bad in ("1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"data\.synth_fraction must lie in \[0, 1\]"):
            check_settings(compose_train([f"data.synth_fraction={bad}"]))


def test_best_synth_is_best_templates_on_the_chosen_mix_only() -> None:
    preset = compose_train(["experiment=best_synth"])
    fraction = preset.data.synth_fraction
    assert 0.0 < fraction < 1.0
    assert preset.preset == "best_synth"
    composed = compose_train(
        ["experiment=best_templates", "data=rwc_pop+synth", f"data.synth_fraction={fraction}"]
    )
    assert {**preset, "preset": None} == {**composed, "preset": None}


def _steps(name: str, frames: int, rng: np.random.Generator):
    chroma = rng.random((frames, 12), dtype=np.float32)
    labels = rng.integers(0, 25, frames)
    return song_steps(Song(name, chroma, labels, np.array([0, frames - 1])), "frame")


def test_an_epoch_trains_on_every_rwc_example_and_the_fraction_drawn_from_the_pool() -> None:
    rng = np.random.default_rng(0)
    rwc = [_steps("rwc", 100, rng), _steps("rwc2", 60, rng)]  # 4 + 2 chunks of 32
    pool = [_steps(f"synth{i}", 64, rng) for i in range(5)]  # 10 chunks
    alone = BatchedExamples(rwc, 32, "sequence")
    torch.manual_seed(3)
    expected = torch.randperm(len(alone)).tolist()
    torch.manual_seed(3)
    assert alone.epoch_order() == expected  # no pool: the order of every earlier run

    for fraction, drawn in ((0.25, 2), (0.5, 6), (0.8, 24)):
        mixed = BatchedExamples(rwc, 32, "sequence", pool=pool, pool_fraction=fraction)
        assert (len(mixed), mixed.base, mixed.pool_per_epoch) == (16, 6, drawn)
        order = mixed.epoch_order()
        assert sorted(i for i in order if i < 6) == list(range(6))  # each RWC chunk once
        from_pool = [i for i in order if i >= 6]
        assert len(from_pool) == drawn and len(order) == 6 + drawn
        assert len(set(from_pool)) == min(drawn, 10)  # no repeats until the pool is used up
        assert mixed.epoch_order() != order  # drawn afresh each epoch
    with pytest.raises(ValueError, match="pool_fraction must lie in"):
        BatchedExamples(rwc, 32, "sequence", pool=pool, pool_fraction=1.0)


# --------------------------------------------------------------------------- held out


def _drawn(part: str, count: int, programs) -> list[synthetic.Song]:
    seconds = SONG_SECONDS if part == PART else synthetic.SONG_SECONDS
    settings = synthetic.set_settings(0, count, (part,), FAKE_FONTS, seconds)
    return synthetic.draw_set_songs(settings, programs)[part]


def _digests(songs: list[synthetic.Song]) -> set[str]:
    return {
        hashlib.sha256(data).hexdigest()
        for song in songs
        for data in (synthetic.song_midi(song), synthetic.song_lab(song).encode())
    }


def test_train_and_test_parts_share_no_song_and_no_chord_instrument() -> None:
    """The held-out factor: the training songs' chord programs and the out-of-domain
    songs' are disjoint, so every test song's chord instrument is unheard in training;
    and no MIDI or .lab file is in both. Checked on drawn songs, and on the built sets
    where `make data` built them."""
    train_programs = {p for ps in synthetic.TRAIN_CHORD_PROGRAMS.values() for p in ps}
    ood_programs = {p for ps in synthetic.CHORD_PROGRAMS.values() for p in ps}
    assert not train_programs & ood_programs
    train = _drawn(PART, 40, synthetic.TRAIN_CHORD_PROGRAMS)
    test = _drawn("test", OOD_SONGS_PER_PART, synthetic.CHORD_PROGRAMS)
    assert {s.programs["chords"] for s in train} <= train_programs
    assert {s.programs["chords"] for s in test} <= ood_programs
    assert not _digests(train) & _digests(test)
    assert len({s.styles["chord_family"] for s in train}) >= 5  # the families still vary

    if not (TRAIN / synthetic.MANIFEST_FILE).is_file() or not (OOD / "manifest.json").is_file():
        pytest.skip("the built sets are checked where `make data` built them")
    built = json.loads((TRAIN / synthetic.MANIFEST_FILE).read_text())
    ood = json.loads((OOD / synthetic.MANIFEST_FILE).read_text())
    songs = built["parts"][PART]
    assert len(songs) == SYNTH_TRAIN_SONGS and built["chord_programs"] == {
        f: list(p) for f, p in synthetic.TRAIN_CHORD_PROGRAMS.items()
    }
    for part in ("validation", "test"):
        used = {song["programs"]["chords"] for song in songs}
        assert not used & {song["programs"]["chords"] for song in ood["parts"][part]}
        files = {f["sha256"] for song in ood["parts"][part] for f in song["files"].values()}
        assert not files & {f["sha256"] for song in songs for f in song["files"].values()}


@pytest.mark.integration
def test_the_out_of_domain_parts_are_the_songs_built_before() -> None:
    """Drawing the training songs changed nothing of the out-of-domain parts: today's
    draw gives the MIDI, .lab and metadata of the set built in data/ood-synth. And a part
    of 16 songs, the parts' size before they grew to 64, is the first 16 of today's."""
    if not (OOD / synthetic.MANIFEST_FILE).is_file():
        pytest.skip(f"{OOD} is missing: run `make data`")
    manifest = json.loads((OOD / synthetic.MANIFEST_FILE).read_text())
    fonts = [Path(name) for name in manifest["soundfonts"]]
    size = manifest["songs_per_part"]
    settings = synthetic.set_settings(0, size, synthetic.PARTS, fonts, synthetic.SONG_SECONDS)
    drawn = synthetic.draw_set_songs(settings)
    small = synthetic.set_settings(0, 16, synthetic.PARTS, fonts, synthetic.SONG_SECONDS)
    for part, songs in synthetic.draw_set_songs(small).items():
        assert [synthetic.song_midi(s) for s in songs] == [
            synthetic.song_midi(s) for s in drawn[part][:16]
        ]
    for part, songs in drawn.items():
        for song, entry in zip(songs, manifest["parts"][part], strict=True):
            assert synthetic.song_metadata(song) == {k: v for k, v in entry.items() if k != "files"}
            midi = hashlib.sha256(synthetic.song_midi(song)).hexdigest()
            lab = hashlib.sha256(synthetic.song_lab(song).encode()).hexdigest()
            assert (midi, lab) == (
                entry["files"]["midi"]["sha256"],
                entry["files"]["lab"]["sha256"],
            )


# --------------------------------------------------------------------------- built


@pytest.mark.slow
def test_built_songs_load_like_rwc_pops_with_the_features_transcribe_computes(
    train_set: Path, tmp_path: Path
) -> None:
    manifest = json.loads((train_set / synthetic.MANIFEST_FILE).read_text())
    assert manifest["generator"] == "chordrec.synth_train"
    assert list(manifest["parts"]) == [PART] and manifest["songs_per_part"] == 3
    read = read_train_set(train_set)
    assert read.names == ["train-000", "train-001", "train-002"]
    assert read.digest == hashlib.sha256((train_set / "manifest.json").read_bytes()).hexdigest()
    train_programs = {p for ps in synthetic.TRAIN_CHORD_PROGRAMS.values() for p in ps}
    for entry, song in zip(manifest["parts"][PART], load_songs(train_set, read.names), strict=True):
        assert entry["programs"]["chords"] in train_programs
        assert set(entry["files"]) == {"midi", "lab", *FEATURE_FOLDERS}  # no audio kept
        lab = train_set / entry["files"]["lab"]["path"]
        assert np.array_equal(song.labels, frame_labels(lab, song.n_frames))
        assert 0 < (song.labels == 0).mean() < 0.5 and song.labels.max() > 0
    assert not list(train_set.rglob("*.flac"))

    # the stored features are those of the rendered audio through transcribe's path
    settings = synthetic.set_settings(0, 1, (PART,), FAST_FONTS, SHORT)  # song 0 as built
    (song,) = synthetic.draw_set_songs(settings, synthetic.TRAIN_CHORD_PROGRAMS)[PART]
    job = synthetic.write_song(tmp_path, PART, song)
    synthetic.render(synthetic.fluidsynth_program(), *job)
    features = file_features(job[2], with_beats=True)
    stored = load_songs(train_set, ["train-000"])[0]
    assert np.array_equal(features.chroma, stored.chroma)
    assert np.array_equal(features.beats, stored.beats)

    mtime = (train_set / "manifest.json").stat().st_mtime_ns
    ensure_train_set(train_set, 0, 3, FAST_FONTS, song_seconds=SHORT)  # kept, not rebuilt
    assert (train_set / "manifest.json").stat().st_mtime_ns == mtime


def test_a_folder_chordrec_did_not_make_is_never_replaced(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / synthetic.MANIFEST_FILE).write_text('{"generator": "chordrec.data.synthetic"}\n')
    before = (app / synthetic.MANIFEST_FILE).read_bytes()  # another kind of set: not this
    with pytest.raises(ForeignDirectoryError, match="a synthetic training set it"):
        build_train_set(app, 0, 1, FAKE_FONTS)
    assert (app / synthetic.MANIFEST_FILE).read_bytes() == before


# --------------------------------------------------------------------------- runs


def test_a_missing_train_set_fails_the_run_in_one_line_naming_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any song loads: the setting, the folder, the command that builds it, and
    what this machine lacks to run that command."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    nowhere = tmp_path / "synth-train"
    for option in ("rwc_pop+synth", "synth"):
        cfg = compose_train([f"data={option}", f"data.synth_root={nowhere}", "data.root=/nowhere"])
        with pytest.raises(ConfigError) as failed:
            build_context(cfg)
        message = str(failed.value)
        assert "\n" not in message
        assert message.startswith("data.synth_fraction=")
        assert (
            f"data.synth_root: {nowhere}/manifest.json: no synthetic training set there" in message
        )
        assert f"`chordrec data synth --train-dest {nowhere}`" in message
        assert "lacks: fluidsynth not installed (not on PATH)" in message


@pytest.mark.integration
def test_data_synth_trains_on_the_synthetic_songs_only(train_config, train_set: Path) -> None:
    context = build_context(train_config(*TINY, "data=synth", f"data.synth_root={train_set}"))
    assert context.parts["train"] == [] and len(context.parts["synth"]) == 2  # max_songs=2
    assert len(context.parts["validation"]) == 2  # RWC-Pop's
    assert len(context.train_examples) == context.train_examples.base
    assert context.train_examples.pool_per_epoch == 0


@pytest.mark.integration
def test_a_run_on_rwc_pop_and_synthetic_songs_logs_both_sources_and_ood_scores(
    train_config, train_set: Path
) -> None:
    if not (OOD / synthetic.MANIFEST_FILE).is_file():
        pytest.skip(f"{OOD} is missing: run `make data`")
    cfg = train_config(*TINY, "data=rwc_pop+synth", f"data.synth_root={train_set}")
    metrics = train(cfg)
    mlflow.set_tracking_uri(f"sqlite:///{cfg.tracking.store_dir}/mlflow.db")
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("chordrec").experiment_id])
    inputs = {
        d.dataset.name: (
            d.dataset.digest,
            [t.value for t in d.tags if t.key == "mlflow.data.context"],
        )
        for d in run.inputs.dataset_inputs
    }
    digest = read_train_set(train_set).digest
    assert inputs["chordrec-synth/train"] == (digest[:DIGEST_LENGTH], ["training"])
    assert inputs["RWC-Pop/train"][1] == ["training"]
    assert set(inputs) == {
        "RWC-Pop/train",
        "RWC-Pop/validation",
        "RWC-Pop/test",
        "chordrec-synth/train",
        "chordrec-ood-synth/validation",  # the out-of-domain songs it was scored on
    }
    assert inputs["chordrec-ood-synth/validation"][1] == ["ood_validation"]
    assert run.data.tags["synth_sha256"] == digest
    assert run.data.params["sizes.synth.songs"] == "2"
    assert "50% synthetic training examples" in run.data.tags["mlflow.note.content"]
    for key in ("ood_val/majmin", "ood_val/root", "ood_val/frame_acc"):
        assert run.data.metrics[key] == metrics[key]
