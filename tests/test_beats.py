"""Tests of chordrec.data.beats: beat-synchronous chroma and labels, and back to frames."""

from __future__ import annotations

import numpy as np
import pytest

from chordrec.data.beats import beat_sync, beat_sync_labels, expand_beats_to_frames

# 12 frames, beats at 2, 5 and 9: span 0 = frames 2..4, span 1 = frames 5..8; frames
# 0-1 (before the first beat) and 9-11 (from the last beat on) belong to no span.
BEATS = np.array([2, 5, 9])
N_FRAMES = 12


def _chroma() -> np.ndarray:
    """Row i is i * (1, 2, ..., 12), except frames outside the spans, which are huge."""
    chroma = np.arange(N_FRAMES, dtype=np.float64)[:, None] * np.arange(1, 13)[None, :]
    chroma[[0, 1, 9, 10, 11]] = 1000.0
    return chroma.astype(np.float32)


def test_beat_sync_hand_computed_means():
    synced = beat_sync(_chroma(), BEATS)
    assert synced.shape == (2, 12)
    assert synced.dtype == np.float32
    # span 0: mean of frames 2, 3, 4 = 3; span 1: mean of frames 5..8 = 6.5
    np.testing.assert_allclose(synced[0], 3.0 * np.arange(1, 13))
    np.testing.assert_allclose(synced[1], 6.5 * np.arange(1, 13))


def test_beat_sync_one_row_per_inter_beat_span():
    rng = np.random.default_rng(0)
    chroma = rng.random((100, 12)).astype(np.float32)
    beats = np.array([7, 8, 20, 33, 34, 90])
    synced = beat_sync(chroma, beats)
    assert synced.shape == (5, 12)
    for i, (a, b) in enumerate(zip(beats[:-1], beats[1:], strict=True)):
        np.testing.assert_allclose(synced[i], chroma[a:b].mean(axis=0), rtol=1e-6)


def test_beat_sync_last_beat_may_equal_n_frames():
    chroma = np.arange(24, dtype=np.float32).reshape(6, 4).repeat(3, axis=1)
    synced = beat_sync(chroma, np.array([0, 3, 6]))
    np.testing.assert_allclose(synced, [chroma[:3].mean(0), chroma[3:].mean(0)])


def test_beat_sync_labels_majority_and_tie_to_smallest_class():
    #                  0  1 | 2  3  4 | 5  6  7  8 | 9 10 11
    labels = np.array([2, 2, 1, 1, 2, 4, 3, 4, 3, 4, 4, 4])
    synced = beat_sync_labels(labels, BEATS)
    assert synced.dtype == np.int64
    # span 0: 1 twice, 2 once -> 1 (frames 0-1 would make it 2 if counted);
    # span 1: 4 and 3 twice each -> tie -> 3 (frames 9-11 would make it 4 if counted)
    np.testing.assert_array_equal(synced, [1, 3])


def test_beat_sync_labels_tie_among_many_classes():
    labels = np.array([24, 13, 7, 0, 5, 5, 24, 24])
    np.testing.assert_array_equal(beat_sync_labels(labels, np.array([0, 4, 8])), [0, 5])


def test_expand_beats_to_frames_edges():
    values = np.array([10, 20])
    frames = expand_beats_to_frames(values, BEATS, N_FRAMES)
    assert frames.shape == (N_FRAMES,)
    # frames 0-1 (before the first beat) take span 0; frames 9-11 (from the last beat) span 1
    np.testing.assert_array_equal(frames, [10, 10, 10, 10, 10, 20, 20, 20, 20, 20, 20, 20])


def test_expand_beats_to_frames_keeps_trailing_axes():
    values = np.arange(2 * 25, dtype=np.float32).reshape(2, 25)
    frames = expand_beats_to_frames(values, BEATS, N_FRAMES)
    assert frames.shape == (N_FRAMES, 25)
    np.testing.assert_array_equal(frames[:5], np.repeat(values[:1], 5, axis=0))
    np.testing.assert_array_equal(frames[5:], np.repeat(values[1:], 7, axis=0))


def test_expand_beats_to_frames_beats_on_song_edges():
    frames = expand_beats_to_frames(np.array([1, 2, 3]), np.array([0, 2, 3, 6]), 6)
    np.testing.assert_array_equal(frames, [1, 1, 2, 3, 3, 3])


def test_round_trip_labels_constant_within_spans():
    rng = np.random.default_rng(1)
    n_frames = 200
    beats = np.sort(rng.choice(np.arange(5, 190), size=25, replace=False))
    span_labels = rng.integers(0, 25, len(beats) - 1)
    labels = rng.integers(0, 25, n_frames)  # anything outside [first beat, last beat)
    labels[beats[0] : beats[-1]] = np.repeat(span_labels, np.diff(beats))

    synced = beat_sync_labels(labels, beats)
    np.testing.assert_array_equal(synced, span_labels)
    frames = expand_beats_to_frames(synced, beats, n_frames)
    assert frames.shape == (n_frames,)
    np.testing.assert_array_equal(frames[beats[0] : beats[-1]], labels[beats[0] : beats[-1]])
    assert (frames[: beats[0]] == synced[0]).all()
    assert (frames[beats[-1] :] == synced[-1]).all()


@pytest.mark.parametrize("beats", [[2, 5, 5, 9], [2, 6, 5, 9], [9, 5, 2]])
def test_non_increasing_beats_raise(beats):
    beats = np.array(beats)
    with pytest.raises(ValueError, match="strictly increasing"):
        beat_sync(_chroma(), beats)
    with pytest.raises(ValueError, match="strictly increasing"):
        beat_sync_labels(np.zeros(N_FRAMES, np.int64), beats)
    with pytest.raises(ValueError, match="strictly increasing"):
        expand_beats_to_frames(np.zeros(len(beats) - 1), beats, N_FRAMES)


def test_decreasing_unsigned_beats_raise_value_error():
    with pytest.raises(ValueError, match="strictly increasing"):
        beat_sync(_chroma(), np.array([5, 3, 9], np.uint64))


@pytest.mark.parametrize("beats", [[3], [], [[2, 5], [6, 9]]])
def test_too_few_or_badly_shaped_beats_raise(beats):
    with pytest.raises(ValueError, match="at least 2"):
        beat_sync(_chroma(), np.array(beats, dtype=np.int64))


@pytest.mark.parametrize("beats", [[-1, 5, 9], [2, 5, 13]])
def test_beats_outside_the_song_raise(beats):
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\]"):
        beat_sync(_chroma(), np.array(beats))
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\]"):
        expand_beats_to_frames(np.zeros(2), np.array(beats), N_FRAMES)


@pytest.mark.parametrize("n_values", [1, 3, 0])
def test_expand_with_wrong_number_of_span_values_raises(n_values):
    with pytest.raises(ValueError, match=f"expected 2 span values for 3 beats, got {n_values}"):
        expand_beats_to_frames(np.zeros(n_values), BEATS, N_FRAMES)


def test_expand_with_n_frames_before_last_beat_raises():
    with pytest.raises(ValueError, match="must lie in"):
        expand_beats_to_frames(np.zeros(2), BEATS, 8)
