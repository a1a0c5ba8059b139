"""Tests of chordrec.data.sequences (windows, chunks, training examples) and chord transposition,
and the promise that window and sequence mode score exactly the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chordrec.data.chords import N_CLASSES, transpose_chroma, transpose_labels
from chordrec.data.sequences import (
    IGNORE_LABEL,
    BatchedExamples,
    ChromaAugment,
    count_chunks,
    song_chunks,
    song_steps,
    song_windows,
)
from chordrec.data.songs import Song
from chordrec.inference.predictor import evaluate, predict_log_probs
from chordrec.models import CRNN


def _song(name: str, n_frames: int, seed: int, beat_every: int = 5) -> Song:
    rng = np.random.default_rng(seed)
    chroma = rng.random((n_frames, 12)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, n_frames).astype(np.int64)
    beats = np.arange(2, n_frames, beat_every, dtype=np.int64)
    return Song(name, chroma, labels, beats)


SONGS = [
    _song("N001-M01-T01", 37, 0),
    _song("N002-M01-T02", 50, 1, beat_every=4),
    _song("N003-M01-T03", 64, 2, beat_every=7),
]


# --------------------------------------------------------------------------- windows


def test_song_windows_end_at_their_step_with_zero_left_padding():
    features = np.arange(1, 5 * 12 + 1, dtype=np.float32).reshape(5, 12)
    windows = song_windows(features, 3)
    assert windows.shape == (5, 3, 12)
    assert windows.dtype == np.float32
    padded = np.concatenate([np.zeros((2, 12), np.float32), features])
    for t in range(5):
        np.testing.assert_array_equal(windows[t, -1], features[t])
        np.testing.assert_array_equal(windows[t], padded[t : t + 3])
    assert (windows[0, :2] == 0).all()
    assert (windows[1, 0] == 0).all()
    np.testing.assert_array_equal(windows[1, 1], features[0])


def test_song_windows_longer_than_the_song():
    features = np.ones((2, 12), np.float32)
    windows = song_windows(features, 4)
    assert windows.shape == (2, 4, 12)
    assert windows[1].sum(axis=1).tolist() == [0, 0, 12, 12]


def test_song_windows_of_length_one_are_the_steps():
    features = np.random.default_rng(0).random((6, 12))
    np.testing.assert_array_equal(song_windows(features, 1)[:, 0], features)


# --------------------------------------------------------------------------- chunks


def test_song_chunks_pad_the_last_chunk():
    features = np.arange(1, 10 * 12 + 1, dtype=np.float32).reshape(10, 12)
    labels = np.arange(10, dtype=np.int64)
    x, y = song_chunks(features, labels, 4)
    assert x.shape == (3, 4, 12) and y.shape == (3, 4)  # ceil(10 / 4) = 3
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x.reshape(-1, 12)[:10], features)
    assert (x[2, 2:] == 0).all()
    np.testing.assert_array_equal(y[:2].ravel(), labels[:8])
    np.testing.assert_array_equal(y[2], [8, 9, IGNORE_LABEL, IGNORE_LABEL])


def test_song_chunks_exact_multiple_has_no_padding():
    features = np.ones((8, 12), np.float32)
    x, y = song_chunks(features, np.zeros(8, np.int64), 4)
    assert x.shape == (2, 4, 12)
    assert (y != IGNORE_LABEL).all()


def test_song_chunks_shorter_than_one_chunk():
    x, y = song_chunks(np.ones((3, 12), np.float32), np.array([1, 2, 3]), 8)
    assert x.shape == (1, 8, 12)
    assert y.tolist() == [[1, 2, 3] + [IGNORE_LABEL] * 5]


def test_count_chunks_is_floor_per_song():
    assert count_chunks([31, 32, 65, 0]) == 0 + 1 + 2 + 0
    assert count_chunks([10, 11], length=5) == 4
    assert count_chunks([]) == 0


def test_song_steps_levels():
    song = SONGS[0]
    frame = song_steps(song, "frame")
    assert frame.n_steps == song.n_frames
    assert frame.features is song.chroma
    beat = song_steps(song, "beat")
    assert beat.n_steps == len(song.beats) - 1
    assert beat.features.shape == (beat.n_steps, 12)
    assert beat.to_frames(np.arange(beat.n_steps)).shape == (song.n_frames,)
    with pytest.raises(ValueError, match="level"):
        song_steps(song, "bar")


# --------------------------------------------------------------------------- examples


def _all(examples: BatchedExamples) -> tuple[np.ndarray, np.ndarray]:
    x, y = examples[list(range(len(examples)))]
    return x.numpy(), y.numpy()


@pytest.mark.parametrize("level", ["frame", "beat"])
def test_batched_examples_window_mode(level):
    steps = [song_steps(s, level) for s in SONGS]
    examples = BatchedExamples(steps, seq_len=6, mode="window")
    assert len(examples) == sum(s.n_steps for s in steps)
    x, y = examples[[0, 3, 1]]
    assert x.dtype == torch.float32 and x.shape == (3, 6, 12)
    assert y.dtype == torch.int64 and y.shape == (3,)

    x, y = _all(examples)
    start = 0
    for s in steps:
        stop = start + s.n_steps
        np.testing.assert_array_equal(x[start:stop], song_windows(s.features, 6))
        np.testing.assert_array_equal(y[start:stop], s.labels)
        start = stop


@pytest.mark.parametrize("level", ["frame", "beat"])
def test_batched_examples_sequence_mode(level):
    steps = [song_steps(s, level) for s in SONGS]
    examples = BatchedExamples(steps, seq_len=8, mode="sequence")
    assert len(examples) == sum(-(-s.n_steps // 8) for s in steps)
    x, y = examples[[2, 0]]
    assert x.dtype == torch.float32 and x.shape == (2, 8, 12)
    assert y.dtype == torch.int64 and y.shape == (2, 8)

    x, y = _all(examples)
    start = 0
    for s in steps:
        cx, cy = song_chunks(s.features, s.labels, 8)
        np.testing.assert_array_equal(x[start : start + len(cx)], cx)
        np.testing.assert_array_equal(y[start : start + len(cy)], cy)
        start += len(cx)
    assert start == len(examples)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq_len": 0, "mode": "window"}, "seq_len"),
        ({"seq_len": 4, "mode": "many"}, "mode"),
        ({"seq_len": 4, "mode": "window", "augment": "pitch"}, "augment"),
    ],
)
def test_batched_examples_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchedExamples([song_steps(SONGS[0], "frame")], **kwargs)


def _recover_shift(augmented: np.ndarray, original: np.ndarray) -> int:
    """The one shift k with transpose_chroma(original, k) == augmented."""
    found = [k for k in range(12) if np.array_equal(transpose_chroma(original, k), augmented)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("mode", ["window", "sequence"])
def test_transpose_augmentation_keeps_chroma_and_labels_consistent(mode):
    steps = [song_steps(s, "frame") for s in SONGS]
    plain = BatchedExamples(steps, seq_len=8, mode=mode)
    augmented = BatchedExamples(steps, seq_len=8, mode=mode, augment="transpose")
    x0, y0 = _all(plain)
    torch.manual_seed(1234)
    x1, y1 = _all(augmented)
    assert x1.shape == x0.shape and y1.shape == y0.shape
    assert x1.dtype == np.float32 and y1.dtype == np.int64

    shifts = np.array([_recover_shift(x1[i], x0[i]) for i in range(len(x0))])
    assert len(set(shifts.tolist())) > 3  # really random, not one shift for all
    for i, k in enumerate(shifts):
        np.testing.assert_array_equal(transpose_chroma(x1[i], -k), x0[i])
        np.testing.assert_array_equal(transpose_labels(y1[i], -k), y0[i])
        np.testing.assert_array_equal(y1[i], transpose_labels(y0[i], k))
    assert ((y1 == IGNORE_LABEL) == (y0 == IGNORE_LABEL)).all()
    assert ((y1 == 0) == (y0 == 0)).all()

    torch.manual_seed(1234)
    x2, y2 = _all(augmented)  # same seed, same shifts
    np.testing.assert_array_equal(x2, x1)
    np.testing.assert_array_equal(y2, y1)


def test_random_offsets_shift_each_chunk_within_its_song():
    steps = [song_steps(s, "frame") for s in SONGS]
    L = 8
    examples = BatchedExamples(steps, seq_len=L, mode="sequence", random_offset=True)
    assert len(examples) == len(BatchedExamples(steps, seq_len=L, mode="sequence"))
    torch.manual_seed(0)
    x, y = _all(examples)
    offsets, i = [], 0
    for n, s in enumerate(steps):
        # the song followed by padding: zero chroma, ignored labels
        pad = -(-s.n_steps // L) * L + L - s.n_steps
        fx = np.concatenate([s.features, np.zeros((pad, 12), np.float32)])
        fy = np.concatenate([s.labels, np.full(pad, IGNORE_LABEL)])
        for k in range(-(-s.n_steps // L)):
            # random chroma: exactly one offset 0..L-1 reproduces the example
            found = [
                r
                for r in range(L)
                if np.array_equal(x[i], fx[k * L + r : k * L + r + L])
                and np.array_equal(y[i], fy[k * L + r : k * L + r + L])
            ]
            assert len(found) == 1, (n, k, found)
            assert found[0] <= s.n_steps - 1 - k * L  # never a chunk of padding only
            offsets.append(found[0])
            i += 1
    assert i == len(examples)
    assert len(set(offsets)) > 3  # really drawn per example


def test_random_offsets_are_for_sequence_mode_only():
    with pytest.raises(ValueError, match="sequence mode only"):
        BatchedExamples([song_steps(SONGS[0], "frame")], 4, "window", random_offset=True)


# --------------------------------------------------------------------------- transposition


def test_transpose_labels_examples():
    labels = np.array([0, 1, 12, 13, 24, IGNORE_LABEL])
    np.testing.assert_array_equal(transpose_labels(labels, 1), [0, 2, 1, 14, 13, IGNORE_LABEL])
    np.testing.assert_array_equal(transpose_labels(labels, -1), [0, 12, 11, 24, 23, IGNORE_LABEL])
    np.testing.assert_array_equal(transpose_labels(labels, 12), labels)


def test_transpose_labels_round_trip_and_quality():
    labels = np.arange(N_CLASSES)
    for k in range(-13, 14):
        moved = transpose_labels(labels, k)
        assert moved[0] == 0  # N stays N
        assert ((moved >= 1) & (moved <= 12)).tolist()[1:13] == [True] * 12  # major stays major
        assert (moved[13:] >= 13).all()  # minor stays minor
        assert sorted(moved.tolist()) == labels.tolist()
        np.testing.assert_array_equal(transpose_labels(moved, -k), labels)


def test_transpose_labels_per_row_shifts():
    labels = np.array([[1, 0, 13], [1, 0, 13]])
    np.testing.assert_array_equal(
        transpose_labels(labels, np.array([[2], [11]])), [[3, 0, 15], [12, 0, 24]]
    )


def test_transpose_chroma_moves_energy_up():
    chroma = np.zeros((1, 12), np.float32)
    chroma[0, 0] = 1.0  # C
    assert transpose_chroma(chroma, 4)[0].argmax() == 4  # E
    assert transpose_chroma(chroma, -1)[0].argmax() == 11  # B


def test_transpose_chroma_round_trip_and_agrees_with_labels():
    rng = np.random.default_rng(0)
    chroma = rng.random((7, 12)).astype(np.float32)
    shifts = rng.integers(-12, 12, 7)
    moved = transpose_chroma(chroma, shifts)
    for i, k in enumerate(shifts):
        np.testing.assert_array_equal(moved[i], transpose_chroma(chroma[i], int(k)))
    np.testing.assert_array_equal(transpose_chroma(moved, -shifts), chroma)
    for k in range(12):
        np.testing.assert_array_equal(transpose_chroma(transpose_chroma(chroma, k), -k), chroma)

    # a chord's template moves with its label: root of label c is (c - 1) % 12
    roots = np.eye(12, dtype=np.float32)[[(c - 1) % 12 for c in range(1, 25)]]
    for k in range(12):
        moved_roots = transpose_chroma(roots, k).argmax(axis=1)
        moved_labels = transpose_labels(np.arange(1, 25), k)
        np.testing.assert_array_equal(moved_roots, (moved_labels - 1) % 12)


def test_transpose_chroma_needs_12_bins():
    with pytest.raises(ValueError, match="12 bins"):
        transpose_chroma(np.zeros((3, 11)), 1)


# --------------------------------------------------------------------------- both modes


def _models() -> dict[str, CRNN]:
    torch.manual_seed(0)
    return {
        "bilstm": CRNN(rnn={"type": "lstm", "hidden_size": 8}),
        "pooled_conv": CRNN(
            conv_blocks=[{"channels": 4, "kernel": 3, "pool": 2}],
            rnn={"type": "gru", "hidden_size": 6, "bidirectional": False},
        ),
        "per_step_linear": CRNN(conv_blocks=[], rnn=None),
    }


@pytest.mark.parametrize("level", ["frame", "beat"])
@pytest.mark.parametrize("model_name", ["bilstm", "pooled_conv", "per_step_linear"])
def test_both_modes_score_the_same_frames(level, model_name):
    model = _models()[model_name]
    steps = [song_steps(s, level) for s in SONGS]
    device = torch.device("cpu")
    window = evaluate(model, steps, 8, "window", device, batch_size=16)
    sequence = evaluate(model, steps, 8, "sequence", device, batch_size=2)
    total = sum(s.n_frames for s in SONGS)
    for result in (window, sequence):
        assert result.n_frames == total
        assert [lp.shape for lp in result.log_probs] == [(s.n_frames, N_CLASSES) for s in SONGS]
        assert all(np.isfinite(lp).all() for lp in result.log_probs)
        for lp in result.log_probs:  # rows are log posteriors
            np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-5)
        assert 0.0 <= result.frame_accuracy <= 1.0
        assert np.isfinite(result.loss)


@pytest.mark.parametrize("level", ["frame", "beat"])
def test_per_step_model_gives_identical_predictions_in_both_modes(level):
    model = _models()["per_step_linear"]
    steps = [song_steps(s, level) for s in SONGS]
    device = torch.device("cpu")
    window = evaluate(model, steps, 8, "window", device, batch_size=16)
    sequence = evaluate(model, steps, 8, "sequence", device, batch_size=2)
    for w, s in zip(window.log_probs, sequence.log_probs, strict=True):
        np.testing.assert_array_equal(w.argmax(axis=1), s.argmax(axis=1))
        np.testing.assert_allclose(w, s, rtol=1e-5, atol=1e-6)
    assert window.frame_accuracy == sequence.frame_accuracy
    assert window.loss == pytest.approx(sequence.loss, rel=1e-6)

    # and the accuracy is the per-frame agreement with the song labels
    correct = sum(
        int((lp.argmax(axis=1) == song.labels).sum())
        for lp, song in zip(window.log_probs, SONGS, strict=True)
    )
    assert window.frame_accuracy == correct / window.n_frames
    if level == "beat":  # every frame of a beat span carries the span's prediction
        song, lp = SONGS[1], window.log_probs[1]
        for a, b in zip(song.beats[:-1], song.beats[1:], strict=True):
            assert (lp[a:b] == lp[a]).all()


def _brute_force_overlap(model: CRNN, features: np.ndarray, seq_len: int) -> np.ndarray:
    """Reference for overlapped chunks, step by step: each step's two chunks (starting
    every seq_len // 2 steps from seq_len // 2 steps before the song, zero-padded), their
    posteriors weighted by the step's distance from the chunk ends."""
    hop, n = seq_len // 2, len(features)
    padded = np.concatenate([np.zeros((hop, 12)), features, np.zeros((seq_len, 12))])
    result = np.zeros((n, N_CLASSES))
    with torch.no_grad():
        for i in range(n):
            at = hop + i
            total, weights = np.zeros(N_CLASSES), 0.0
            for start in range(0, at + 1, hop):
                if start + seq_len <= at:
                    continue
                x = torch.tensor(padded[start : start + seq_len][None], dtype=torch.float32)
                probs = torch.softmax(model.step_logits(x), -1)[0, at - start].numpy()
                weight = min(at - start + 1, seq_len - (at - start))
                total += weight * probs
                weights += weight
            result[i] = total / weights
    return np.log(result)


@pytest.mark.parametrize("model_name", ["bilstm", "pooled_conv"])
@pytest.mark.parametrize("seq_len", [8, 9])
def test_overlapped_chunks_match_a_brute_force_reference(model_name, seq_len):
    model = _models()[model_name].eval()
    steps = song_steps(SONGS[0], "frame")
    got = predict_log_probs(
        model, steps, seq_len, "sequence", torch.device("cpu"), batch_size=3, overlap=True
    )
    assert got.shape == (steps.n_steps, N_CLASSES) and got.dtype == np.float32
    np.testing.assert_allclose(got, _brute_force_overlap(model, steps.features, seq_len), atol=1e-5)
    # and it differs from plain chunks: edges now see both sides
    plain = predict_log_probs(model, steps, seq_len, "sequence", torch.device("cpu"))
    assert not np.allclose(got, plain, atol=1e-4)


@pytest.mark.parametrize("level", ["frame", "beat"])
def test_overlap_changes_nothing_for_a_per_step_model(level):
    model = _models()["per_step_linear"]
    steps = [song_steps(s, level) for s in SONGS]
    device = torch.device("cpu")
    plain = evaluate(model, steps, 8, "sequence", device, batch_size=2)
    overlapped = evaluate(model, steps, 6, "sequence", device, batch_size=2, overlap=True)
    for a, b in zip(plain.log_probs, overlapped.log_probs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert plain.frame_accuracy == overlapped.frame_accuracy


def test_overlap_needs_two_steps():
    with pytest.raises(ValueError, match="seq_len >= 2"):
        predict_log_probs(
            _models()["bilstm"],
            song_steps(SONGS[0], "frame"),
            1,
            "sequence",
            torch.device("cpu"),
            overlap=True,
        )


def test_the_course_baseline_trains_on_the_same_windows_as_window_mode():
    """The benchmark's course loop (windows built up front, float64) and window mode
    (views of one stream) give the same examples and labels, in the same order."""
    from chordrec.bench.course_baseline import course_windows

    songs = [song_steps(_song(f"s{n}", n, seed=n), "frame") for n in (5, 2, 7)]
    for seq_len in (1, 3, 8):
        windows, labels = course_windows(songs, seq_len)
        assert windows.dtype == np.float64 and windows.shape == (14, seq_len, 12)
        ours = BatchedExamples(songs, seq_len, "window")
        x, y = ours[list(range(len(ours)))]
        assert np.array_equal(windows.astype(np.float32), x.numpy())
        assert np.array_equal(labels, y.numpy())


def test_chroma_augment_keeps_silence_unit_norms_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 12)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    x[:, :3] = 0.0  # silent steps
    augment = ChromaAugment(bin_gain_db=6.0, noise=0.05, mix=0.5, mix_prob=1.0)
    torch.manual_seed(0)
    first = augment(x)
    torch.manual_seed(0)
    np.testing.assert_array_equal(augment(x), first)  # torch's RNG decides
    assert first.dtype == np.float32 and first.shape == x.shape
    assert (first[:, :3] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(first[:, 3:], axis=-1), 1.0, rtol=1e-5)
    assert not np.allclose(first, x)
    assert (x[:, 3:] != 0).all()  # the input is left as it was
    assert not ChromaAugment().active and ChromaAugment(noise=0.1).active
    with pytest.raises(ValueError, match="chroma_augment.noise must be >= 0"):
        ChromaAugment(noise=-1.0)
    with pytest.raises(ValueError, match="mix_prob must lie in"):
        ChromaAugment(mix_prob=2.0)


def test_batched_examples_apply_the_chroma_augment_to_each_batch():
    steps = [song_steps(s, "frame") for s in SONGS]
    plain = BatchedExamples(steps, 8, "sequence")
    augment = ChromaAugment(bin_gain_db=3.0)
    augmented = BatchedExamples(steps, 8, "sequence", chroma_augment=augment)
    assert (
        BatchedExamples(steps, 8, "sequence", chroma_augment=ChromaAugment()).chroma_augment is None
    )
    x, y = plain[[0, 3]]
    torch.manual_seed(1)
    xa, ya = augmented[[0, 3]]
    torch.manual_seed(1)
    np.testing.assert_array_equal(xa.numpy(), augment(x.numpy()))
    np.testing.assert_array_equal(ya.numpy(), y.numpy())  # the chords stay
