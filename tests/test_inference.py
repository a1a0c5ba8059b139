"""One inference path: training's validation, a run's final evaluation and
transcription run a model through the same predictor and give identical predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chordrec.data.chords import transpose_chroma, transpose_labels
from chordrec.data.sequences import BatchedExamples, song_steps
from chordrec.data.songs import Song
from chordrec.fit import TrainerSettings, fit, seed_everything
from chordrec.inference.predictor import (
    InferenceRecipe,
    TranspositionAverage,
    build_predictor,
    predict_log_probs,
    with_templates,
)
from chordrec.io.checkpoints import load_checkpoint
from chordrec.models import build_model
from chordrec.models.templates import template_scores
from chordrec.transcribe import network_model
from tests.test_device import SPEC

CPU = torch.device("cpu")


def _songs(n: int, seed: int) -> list[Song]:
    rng = np.random.default_rng(seed)
    songs = []
    for i in range(n):
        labels = np.repeat(rng.integers(0, 25, 20), 15)
        chroma = rng.random((len(labels), 12)).astype(np.float32)
        chroma[np.arange(len(labels)), labels % 12] += 2.0  # learnable
        beats = np.arange(0, len(labels), 15)
        songs.append(Song(f"s{seed}-{i}", chroma, labels.astype(np.int64), beats))
    return songs


@pytest.mark.parametrize(
    ("level", "overlap", "template_weight"),
    [("frame", True, 0.0), ("beat", False, 0.0), ("frame", False, 0.5)],
)
def test_validation_evaluation_and_transcription_agree(
    tmp_path: Path, level, overlap, template_weight
) -> None:
    seed_everything(0)
    config = {
        "model": SPEC,
        "data": {"level": level},
        "seq_len": 16,
        "seq_mode": "sequence",
        "decode": "viterbi",
        "template_weight": template_weight,
        "trainer": {"eval_seq_len": 32 if overlap else None, "eval_overlap": overlap},
    }
    model = build_model(SPEC)
    train = [song_steps(s, level) for s in _songs(4, 0)]
    validation = [song_steps(s, level) for s in _songs(2, 1)]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    result = fit(
        model,
        BatchedExamples(train, 16, "sequence"),
        validation,
        optimizer,
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1),
        TrainerSettings(max_epochs=1, progress=False),
        CPU,
        tmp_path,
        build_predictor(model, config, CPU),
        checkpoint_extra={"config": config},
    )
    model.load_state_dict(result.best_state)
    scored = build_predictor(model, config, CPU, self_transition=0.9)
    evaluation = scored.evaluate(validation)
    # training's validation of its best epoch is the final evaluation
    assert result.history["val/acc"][result.best_epoch - 1] == evaluation.frame_accuracy
    # a transcription loads the checkpoint and predicts each song as the run scored it
    checkpoint = load_checkpoint(tmp_path / "best.pt")
    checkpoint["inference"] = scored.recipe.to_dict()
    transcriber = network_model(checkpoint, "best.pt")
    for steps, frame_lp in zip(validation, evaluation.log_probs, strict=True):
        np.testing.assert_array_equal(scored.frame_log_probs(steps.song), frame_lp)
        np.testing.assert_array_equal(transcriber.scores(steps.song), frame_lp)
        np.testing.assert_array_equal(
            scored.classes(frame_lp),
            network_decode(transcriber, transcriber.scores(steps.song)),
        )


def network_decode(model, log_probs: np.ndarray) -> np.ndarray:
    from chordrec.decoding import decode

    return decode(log_probs, model.decode, model.self_transition)


def test_a_recipe_round_trips_and_refuses_bad_settings() -> None:
    recipe = InferenceRecipe("beat", "sequence", 64, True, "viterbi", 0.99, 0.5)
    assert InferenceRecipe.from_dict(recipe.to_dict()) == recipe
    older = {k: v for k, v in recipe.to_dict().items() if k != "template_weight"}
    assert InferenceRecipe.from_dict(older).template_weight == 0.0  # a checkpoint before it
    beat_aware = InferenceRecipe("frame", "sequence", 64, True, "beat_viterbi", 0.9999, 0.0, 0.9)
    assert InferenceRecipe.from_dict(beat_aware.to_dict()) == beat_aware
    assert InferenceRecipe.from_dict(older).beat_self_transition is None
    assert not InferenceRecipe.from_dict(older).transpose_average
    averaged = InferenceRecipe("frame", "sequence", 64, True, "viterbi", transpose_average=True)
    assert InferenceRecipe.from_dict(averaged.to_dict()) == averaged
    for field, value, match in (
        ("level", "bar", "level must be one of"),
        ("seq_mode", "chunks", "sequence mode must be one of"),
        ("decode", "beam", "decoding must be one of"),
        ("seq_len", 0, "chunk length must be >= 1"),
        ("self_transition", 1.0, "self-transition must lie in"),
        ("template_weight", -0.5, "template_weight must be >= 0"),
        ("beat_self_transition", 0.0, "beat self-transition must lie in"),
    ):
        with pytest.raises(ValueError, match=match):
            InferenceRecipe.from_dict({**recipe.to_dict(), field: value})


def test_the_evaluation_chunk_length_is_eval_seq_len_else_seq_len() -> None:
    base = {"data": {"level": "frame"}, "seq_len": 16, "seq_mode": "sequence"}
    assert InferenceRecipe.from_config(base).seq_len == 16
    config = {**base, "trainer": {"eval_seq_len": 48, "eval_overlap": True}}
    assert InferenceRecipe.from_config(config).seq_len == 48
    assert InferenceRecipe.from_config(config).overlap


def test_templates_join_the_network_as_a_product_of_experts() -> None:
    rng = np.random.default_rng(0)
    chroma = rng.random((50, 12)).astype(np.float32)
    chroma[10] = 0.0  # silence
    network = np.log(rng.dirichlet(np.ones(25), 50)).astype(np.float32)
    assert with_templates(network, chroma, 0.0) is network
    combined = with_templates(network, chroma, 0.7)
    assert combined.shape == (50, 25) and combined.dtype == np.float32
    np.testing.assert_allclose(np.exp(combined).sum(axis=1), 1.0, rtol=1e-5)
    assert combined[10, 0] == pytest.approx(0.0, abs=1e-6)  # silent: N with certainty
    expected = network + 0.7 * template_scores(chroma)
    loud = np.arange(50) != 10
    np.testing.assert_allclose(  # the same ranking as the weighted sum on every loud frame
        combined[loud] - combined[loud, :1], (expected - expected[:, :1])[loud], rtol=1e-4
    )
    dominated = with_templates(network, chroma, 1e3)
    np.testing.assert_array_equal(dominated.argmax(axis=1), template_scores(chroma).argmax(axis=1))


def test_transposition_averaging_favours_no_key() -> None:
    torch.manual_seed(0)
    network = build_model(SPEC).eval()
    averaged = TranspositionAverage(network)
    chroma = torch.rand(3, 40, 12)
    with torch.no_grad():
        log_probs = averaged.step_logits(chroma).numpy()
        np.testing.assert_allclose(np.exp(log_probs).sum(axis=-1), 1.0, rtol=1e-5)
        # an untrained network prefers some keys; averaged, a transposed song gets the
        # transposed posteriors
        moved = averaged.step_logits(torch.from_numpy(transpose_chroma(chroma.numpy(), 5)))
        plain = network.step_logits(torch.from_numpy(transpose_chroma(chroma.numpy(), 5)))
        up = transpose_labels(np.arange(25), 5)
        np.testing.assert_allclose(moved.numpy()[..., up], log_probs, atol=1e-5)
        assert not np.allclose(torch.log_softmax(plain, -1).numpy()[..., up], log_probs, atol=1e-3)
        # the last step alone, as window mode predicts
        np.testing.assert_allclose(
            averaged.last_step_logits(chroma).numpy(), log_probs[:, -1], atol=1e-5
        )
        # a model that favours no key already is left as it is
        templates = build_model({"_target_": "chordrec.models.ChromaTemplates"})
        np.testing.assert_allclose(
            TranspositionAverage(templates).step_logits(chroma).numpy(),
            torch.log_softmax(templates.step_logits(chroma), -1).numpy(),
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="needs 12 chroma bins"):
        averaged.step_logits(torch.rand(1, 8, 24))


def test_a_recipe_that_averages_transpositions_scores_with_them() -> None:
    seed_everything(0)
    config = {
        "model": SPEC,
        "data": {"level": "frame"},
        "seq_len": 16,
        "seq_mode": "sequence",
        "transpose_average": True,
        "trainer": {"eval_seq_len": 32, "eval_overlap": True},
    }
    model = build_model(SPEC)
    predictor = build_predictor(model, config, CPU)
    assert predictor.recipe.transpose_average
    song = _songs(1, 2)[0]
    expected = TranspositionAverage(model).eval()
    steps = song_steps(song, "frame")
    np.testing.assert_array_equal(
        predictor.frame_log_probs(song),
        predict_log_probs(expected, steps, 32, "sequence", CPU, overlap=True),
    )
    plain = build_predictor(model, {**config, "transpose_average": False}, CPU)
    assert not np.allclose(plain.frame_log_probs(song), predictor.frame_log_probs(song))
