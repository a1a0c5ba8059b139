"""Tests of chordrec.decoding: Viterbi against brute force, argmax, tuning, validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chordrec.decoding import (
    beat_viterbi_decode,
    decode,
    tune_beat_transitions,
    tune_self_transition,
    viterbi_decode,
)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)


def _log_trans(n_classes: int, p: float) -> np.ndarray:
    trans = np.full((n_classes, n_classes), (1 - p) / (n_classes - 1))
    np.fill_diagonal(trans, p)
    with np.errstate(divide="ignore"):
        return np.log(trans)


def _path_score(log_probs: np.ndarray, path: np.ndarray, p: float) -> float:
    """Log joint of a path (up to the constant uniform initial term)."""
    log_trans = _log_trans(log_probs.shape[1], p)
    score = log_probs[np.arange(len(path)), path].sum()
    return float(score + log_trans[path[:-1], path[1:]].sum())


def _brute_force(log_probs: np.ndarray, p: float) -> tuple[np.ndarray, float]:
    n_frames, n_classes = log_probs.shape
    best_path, best_score = None, -np.inf
    for path in itertools.product(range(n_classes), repeat=n_frames):
        score = _path_score(log_probs, np.array(path), p)
        if best_path is None or score > best_score:
            best_path, best_score = np.array(path), score
    return best_path, best_score


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_viterbi_matches_brute_force(seed: int, p: float):
    rng = np.random.default_rng(seed)
    log_probs = _log_softmax(rng.normal(scale=2.0, size=(5, 3)))
    path = viterbi_decode(log_probs, p)
    expected_path, expected_score = _brute_force(log_probs, p)
    assert path.dtype == np.int64 and path.shape == (5,)
    np.testing.assert_array_equal(path, expected_path)
    assert _path_score(log_probs, path, p) == pytest.approx(expected_score, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_viterbi_with_minus_inf_matches_brute_force(seed: int):
    rng = np.random.default_rng(100 + seed)
    log_probs = _log_softmax(rng.normal(size=(6, 3)))
    log_probs[rng.random((6, 3)) < 0.3] = -np.inf
    log_probs[:, seed % 3] = np.log(0.2)  # keep one finite path
    path = viterbi_decode(log_probs, 0.8)
    _, expected_score = _brute_force(log_probs, 0.8)
    assert _path_score(log_probs, path, 0.8) == pytest.approx(expected_score, abs=1e-12)
    assert np.isfinite(log_probs[np.arange(6), path]).all()


def test_self_transition_one_forbids_changes_and_zero_forbids_staying():
    rng = np.random.default_rng(1)
    log_probs = _log_softmax(rng.normal(size=(50, 4)))
    assert len(set(viterbi_decode(log_probs, 1.0).tolist())) == 1
    path = viterbi_decode(log_probs, 0.0)
    assert (path[1:] != path[:-1]).all()


def test_uniform_transitions_give_argmax():
    # p = 1/classes makes every transition equally likely: Viterbi = argmax.
    # (A p *below* 1/classes would penalise staying, so "small p" alone is not argmax.)
    rng = np.random.default_rng(2)
    log_probs = _log_softmax(rng.normal(size=(300, 25)))
    argmax = decode(log_probs, "argmax")
    np.testing.assert_array_equal(viterbi_decode(log_probs, 1 / 25), argmax)
    np.testing.assert_array_equal(decode(log_probs, "viterbi", 1 / 25), argmax)
    np.testing.assert_array_equal(argmax, log_probs.argmax(axis=1))
    assert argmax.dtype == np.int64


def test_viterbi_smooths_a_one_frame_blip():
    log_probs = np.log(np.full((21, 3), 0.1))
    log_probs[:, 0] = np.log(0.8)
    log_probs[10] = np.log([0.1, 0.8, 0.1])
    assert decode(log_probs, "argmax")[10] == 1
    np.testing.assert_array_equal(decode(log_probs, "viterbi", 0.99), np.zeros(21))


def test_viterbi_edge_shapes():
    assert viterbi_decode(np.zeros((0, 5)), 0.9).shape == (0,)
    np.testing.assert_array_equal(viterbi_decode(np.zeros((4, 1)), 0.9), np.zeros(4))
    np.testing.assert_array_equal(viterbi_decode(np.log([[0.2, 0.8]]), 0.9), [1])


def _reference_viterbi(log_probs: np.ndarray, p: float) -> np.ndarray:
    """The textbook update: each frame's full (classes x classes) candidate matrix and
    its column-wise argmax (ties to the lowest index)."""
    n_frames, n_classes = log_probs.shape
    log_trans = _log_trans(n_classes, p)
    backptr = np.zeros((n_frames, n_classes), dtype=np.intp)
    value = log_probs[0].copy()
    for t in range(1, n_frames):
        cand = value[:, None] + log_trans
        backptr[t] = cand.argmax(axis=0)
        value = cand[backptr[t], np.arange(n_classes)] + log_probs[t]
    path = np.empty(n_frames, dtype=np.int64)
    path[-1] = int(np.argmax(value))
    for t in range(n_frames - 1, 0, -1):
        path[t - 1] = backptr[t, path[t]]
    return path


@pytest.mark.parametrize("p", [0.0, 0.04, 0.5, 0.9, 0.999, 1.0])
def test_viterbi_equals_the_full_update_ties_and_minus_inf_included(p: float):
    # Integer scores make ties common; -inf entries and whole -inf rows stress the
    # tie rule. The O(classes) update must pick exactly the full update's path.
    rng = np.random.default_rng(int(p * 1000))
    for trial in range(40):
        n_classes = [2, 3, 25][trial % 3]
        scores = rng.integers(-3, 1, size=(60, n_classes)).astype(np.float64)
        scores[rng.random(scores.shape) < 0.15] = -np.inf
        scores[trial % 60] = -np.inf
        with np.errstate(invalid="ignore"):
            expected = _reference_viterbi(scores, p)
        np.testing.assert_array_equal(viterbi_decode(scores, p), expected)
    scores = _log_softmax(rng.normal(size=(2_000, 25)))
    np.testing.assert_array_equal(viterbi_decode(scores, p), _reference_viterbi(scores, p))


def test_viterbi_on_a_long_song_beats_argmax_and_every_constant_path():
    rng = np.random.default_rng(3)
    log_probs = _log_softmax(rng.normal(size=(20_000, 25)))
    path = viterbi_decode(log_probs, 0.9)
    assert path.shape == (20_000,) and path.dtype == np.int64
    assert path.min() >= 0 and path.max() < 25
    score = _path_score(log_probs, path, 0.9)
    assert score >= _path_score(log_probs, log_probs.argmax(axis=1), 0.9)
    for c in range(25):
        assert score >= _path_score(log_probs, np.full(20_000, c), 0.9)


@pytest.mark.parametrize(
    "log_probs, message",
    [
        (np.zeros(5), "shape"),
        (np.zeros((2, 3, 4)), "shape"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0.0, np.inf]]), r"\+inf"),
        (np.array([["a", "b"]]), "real"),
    ],
)
def test_viterbi_rejects_bad_scores(log_probs, message):
    with pytest.raises(ValueError, match=message):
        viterbi_decode(log_probs, 0.9)
    with pytest.raises(ValueError, match=message):
        decode(log_probs, "argmax")


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_viterbi_rejects_bad_self_transition(p):
    with pytest.raises(ValueError, match="self_transition"):
        viterbi_decode(np.zeros((3, 3)), p)


def test_decode_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown decoding method 'beam'"):
        decode(np.zeros((3, 3)), "beam")


def _noisy_songs(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Piecewise-constant labels (segments of 20-60 frames) seen through noisy scores."""
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(3):
        lengths = rng.integers(20, 60, size=10)
        y = np.repeat(rng.integers(0, 5, size=10), lengths)
        logits = rng.normal(scale=1.5, size=(y.size, 5))
        logits[np.arange(y.size), y] += 1.0
        scores.append(_log_softmax(logits))
        labels.append(y)
    return scores, labels


def test_tune_self_transition_beats_argmax_on_sticky_labels():
    scores, labels = _noisy_songs(0)
    p, acc = tune_self_transition(scores, labels, candidates=(0.2, 0.5, 0.9, 0.99))
    argmax_acc = np.mean(np.concatenate([s.argmax(1) for s in scores]) == np.concatenate(labels))
    assert p in (0.9, 0.99)
    assert acc > argmax_acc + 0.1
    # the reported accuracy is the pooled frame accuracy of that p
    pooled = np.concatenate([viterbi_decode(s, p) for s in scores]) == np.concatenate(labels)
    assert acc == pytest.approx(pooled.mean())


def test_tune_self_transition_validates():
    scores, labels = _noisy_songs(1)
    with pytest.raises(ValueError, match="2 score arrays but 3"):
        tune_self_transition(scores[:2], labels)
    with pytest.raises(ValueError, match=r"labels_per_song\[1\]"):
        tune_self_transition(scores, [labels[0], labels[1][:-1], labels[2]])
    with pytest.raises(ValueError, match="at least one candidate"):
        tune_self_transition(scores, labels, candidates=())
    with pytest.raises(ValueError, match="at least one song"):
        tune_self_transition([], [])


def _brute_force_beat_path(log_probs: np.ndarray, beats, p: float, p_beat: float) -> np.ndarray:
    """The best path over all class sequences, self-transition ``p_beat`` into beat frames."""
    n, k = log_probs.shape
    between, at_beat = _log_trans(k, p), _log_trans(k, p_beat)
    best, best_score = None, -np.inf
    for path in itertools.product(range(k), repeat=n):
        score = sum(log_probs[t, c] for t, c in enumerate(path))
        score += sum(
            (at_beat if t in beats else between)[path[t - 1], path[t]] for t in range(1, n)
        )
        if score > best_score:
            best, best_score = np.array(path), score
    return best


def test_beat_viterbi_finds_the_best_path_with_its_own_transition_at_beats():
    rng = np.random.default_rng(3)
    for _ in range(20):
        log_probs = _log_softmax(rng.normal(size=(6, 3)))
        beats = np.sort(rng.choice(6, size=2, replace=False))
        p, p_beat = rng.uniform(0.3, 0.99), rng.uniform(0.05, 0.9)
        path = beat_viterbi_decode(log_probs, beats, p, p_beat)
        expected = _brute_force_beat_path(log_probs, set(beats.tolist()), p, p_beat)
        np.testing.assert_array_equal(path, expected)


def test_beat_viterbi_reduces_to_viterbi_and_to_changes_on_beats_only():
    rng = np.random.default_rng(4)
    log_probs = _log_softmax(rng.normal(size=(400, 25)))
    beats = np.arange(0, 400, 25)
    np.testing.assert_array_equal(
        beat_viterbi_decode(log_probs, beats, 0.9, 0.9), viterbi_decode(log_probs, 0.9)
    )
    np.testing.assert_array_equal(
        decode(log_probs, "beat_viterbi", 0.9, beats, 0.5),
        beat_viterbi_decode(log_probs, beats, 0.9, 0.5),
    )
    path = beat_viterbi_decode(log_probs, beats, 1.0, 0.5)
    changes = np.flatnonzero(np.diff(path)) + 1
    assert len(changes) > 3 and set(changes.tolist()) <= set(beats.tolist())
    # no beats: plain Viterbi between them
    no_beats = np.zeros(0, np.int64)
    np.testing.assert_array_equal(
        beat_viterbi_decode(log_probs, no_beats, 0.9, 0.1), viterbi_decode(log_probs, 0.9)
    )


@pytest.mark.parametrize(
    "beats, message",
    [
        (np.array([0, 10]), r"\[0, 10\)"),
        (np.array([-1, 3]), r"\[0, 10\)"),
        (np.array([1.0, 3.0]), "integer"),
        (np.zeros((2, 2), np.int64), "integer"),
    ],
)
def test_beat_viterbi_rejects_bad_beats(beats, message):
    with pytest.raises(ValueError, match=message):
        beat_viterbi_decode(np.zeros((10, 3)), beats, 0.9, 0.5)
    with pytest.raises(ValueError, match="beat_viterbi decoding needs the beats"):
        decode(np.zeros((10, 3)), "beat_viterbi", 0.9)


def _songs_changing_on_beats(seed: int) -> tuple[list, list, list]:
    """Songs whose chords change on beats (every 20 frames), scores blurred so that
    each change looks 3 frames early: plain Viterbi puts it there, beat-aware Viterbi
    can put it on the beat."""
    rng = np.random.default_rng(seed)
    scores, labels, beats = [], [], []
    for _ in range(3):
        chords = rng.integers(0, 25, 15)
        y = np.repeat(chords, 20)
        seen = np.concatenate([y[3:], np.repeat(y[-1], 3)])  # the blur: 3 frames early
        lp = rng.normal(scale=0.5, size=(len(y), 25))
        lp[np.arange(len(y)), seen] += 2.0
        scores.append(_log_softmax(lp))
        labels.append(y)
        beats.append(np.arange(0, len(y), 20))
    return scores, labels, beats


def test_tuning_beat_transitions_puts_the_changes_on_the_beats():
    scores, labels, beats = _songs_changing_on_beats(5)
    p, p_beat, accuracy = tune_beat_transitions(scores, labels, beats)
    _, plain = tune_self_transition(scores, labels)
    assert accuracy > plain + 0.1  # plain Viterbi misses 3 frames of every 20
    assert p_beat < p  # changes easier on beats than between them
    decoded = [beat_viterbi_decode(s, b, p, p_beat) for s, b in zip(scores, beats, strict=True)]
    correct = sum(int((d == y).sum()) for d, y in zip(decoded, labels, strict=True))
    assert accuracy == correct / sum(len(y) for y in labels)
    # the grid includes plain Viterbi (at beats as between): a tie keeps the first pair
    assert tune_beat_transitions(scores, labels, beats, [0.9], [0.9]) == tune_beat_transitions(
        scores, labels, beats, [0.9], []
    )
    with pytest.raises(ValueError, match="2 beat arrays for 3 songs"):
        tune_beat_transitions(scores, labels, beats[:2])
    with pytest.raises(ValueError, match="between beats"):
        tune_beat_transitions(scores, labels, beats, [])
