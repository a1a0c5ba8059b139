"""Tests of chordrec.inference.metrics: hand-computed cases and one real song."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chordrec.constants import FRAME_RATE
from chordrec.inference.metrics import (
    SCORE_KEYS,
    aggregate_chord_scores,
    chord_scores,
    confusion_matrix,
    frame_accuracy,
    frames_to_segments,
    harte_class,
    per_class_recall,
    reference_frame_classes,
    reference_frame_positions,
)
from chordrec.io.chord_files import read_lab

REPO = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = (REPO / "data" / "rwc-pop", REPO.parent / "shared" / "datasets" / "rwc-pop")


def test_frame_accuracy():
    assert frame_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5
    with pytest.raises(ValueError, match="equal shape"):
        frame_accuracy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="zero frames"):
        frame_accuracy(np.zeros(0), np.zeros(0))


def test_frames_to_segments():
    intervals, labels = frames_to_segments(np.array([0, 0, 1, 1, 1, 22]), frame_rate=2.0)
    np.testing.assert_allclose(intervals, [[0.0, 1.0], [1.0, 2.5], [2.5, 3.0]])
    assert labels == ["N", "C:maj", "A:min"]
    intervals, labels = frames_to_segments(np.array([5]))
    np.testing.assert_allclose(intervals, [[0.0, 512 / 44100]])
    assert labels == ["E:maj"]
    intervals, labels = frames_to_segments(np.zeros(0, dtype=np.int64))
    assert intervals.shape == (0, 2) and labels == []


@pytest.mark.parametrize(
    "classes, kwargs, message",
    [
        (np.array([0, 25]), {}, "0..24"),
        (np.array([0.5, 1.0]), {}, "integer"),
        (np.zeros((2, 2), dtype=int), {}, "shape"),
        (np.array([1, 2]), {"frame_rate": 0.0}, "frame_rate"),
    ],
)
def test_frames_to_segments_validates(classes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        frames_to_segments(classes, **kwargs)


def test_read_lab(tmp_path: Path):
    path = tmp_path / "song.lab"
    path.write_text("0.000\t0.104\tN\n\n0.104 1.858  Ab:min\n1.858\t3.646\tGb:maj6\n")
    intervals, labels = read_lab(path)
    np.testing.assert_allclose(intervals, [[0.0, 0.104], [0.104, 1.858], [1.858, 3.646]])
    assert labels == ["N", "Ab:min", "Gb:maj6"]


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("1.0 G:maj", "expected 'start end label'"),
        ("1.0 two G:maj", "must be numbers"),
        ("1.0 nan G:maj", "finite"),
        ("3.0 2.0 G:maj", "before start"),
    ],
)
def test_read_lab_names_file_and_line(tmp_path: Path, bad_line: str, problem: str):
    path = tmp_path / "broken.lab"
    path.write_text(f"0.0\t1.0\tC:maj\n\n{bad_line}\n4.0\t5.0\tN\n")
    with pytest.raises(ValueError, match=problem) as info:
        read_lab(path)
    assert f"{path}:3:" in str(info.value)
    assert bad_line in str(info.value)


def test_read_lab_empty_file(tmp_path: Path):
    path = tmp_path / "empty.lab"
    path.write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="no intervals"):
        read_lab(path)


def test_chord_scores_perfect():
    scores = chord_scores(np.array([1, 1, 8, 8]), np.array([[0.0, 2.0], [2.0, 4.0]]),
                          ["C:maj", "G:maj"], frame_rate=1.0)  # fmt: skip
    assert set(scores) == set(SCORE_KEYS)
    assert all(v == pytest.approx(1.0) for v in scores.values())


def test_chord_scores_hand_computed():
    ref = np.array([[0.0, 2.0], [2.0, 4.0]])
    # one long C:maj against C:maj | G:maj: half right, under-segmented
    s = chord_scores(np.array([1, 1, 1, 1]), ref, ["C:maj", "G:maj"], frame_rate=1.0)
    assert s == pytest.approx(
        {"majmin": 0.5, "root": 0.5, "seg": 0.5, "overseg": 1.0, "underseg": 0.5}
    )
    # right root, wrong quality; the 7th reduces to major
    s = chord_scores(np.array([13, 13, 8, 8]), ref, ["C:maj", "G:7"], frame_rate=1.0)
    assert s["root"] == pytest.approx(1.0) and s["majmin"] == pytest.approx(0.5)
    # a sus4 segment has no major/minor reduction: left out of majmin, not of root
    s = chord_scores(np.array([8, 8, 8, 8]), ref, ["C:sus4", "G:maj"], frame_rate=1.0)
    assert s["majmin"] == pytest.approx(1.0) and s["root"] == pytest.approx(0.5)


def test_chord_scores_pads_and_crops_the_estimate():
    ref = np.array([[0.0, 4.0]])
    short = chord_scores(np.array([1, 1]), ref, ["C:maj"], frame_rate=1.0)  # N for 2..4 s
    assert short["majmin"] == pytest.approx(0.5)
    long = chord_scores(np.ones(6, dtype=int), ref, ["C:maj"], frame_rate=1.0)
    assert long["majmin"] == pytest.approx(1.0) and long["seg"] == pytest.approx(1.0)


def test_chord_scores_validates():
    with pytest.raises(ValueError, match="2 intervals but 1 labels"):
        chord_scores(np.array([1]), np.array([[0.0, 1.0], [1.0, 2.0]]), ["C:maj"])
    with pytest.raises(ValueError, match="shape"):
        chord_scores(np.array([1]), np.array([0.0, 1.0]), ["C:maj"])
    with pytest.raises(ValueError, match="end before"):
        chord_scores(np.array([1]), np.array([[1.0, 0.0]]), ["C:maj"])
    with pytest.raises(ValueError, match="no frames"):
        chord_scores(np.zeros(0, dtype=int), np.array([[0.0, 1.0]]), ["C:maj"])


def test_aggregate_chord_scores_weights_by_duration():
    a = dict.fromkeys(SCORE_KEYS, 1.0)
    b = dict.fromkeys(SCORE_KEYS, 0.0)
    total = aggregate_chord_scores([a, b], [30.0, 10.0])
    assert total == pytest.approx(dict.fromkeys(SCORE_KEYS, 0.75))
    with pytest.raises(ValueError, match="keys"):
        aggregate_chord_scores([a, {"majmin": 1.0}], [1.0, 1.0])
    with pytest.raises(ValueError, match="2 score dicts but 1"):
        aggregate_chord_scores([a, b], [1.0])
    with pytest.raises(ValueError, match="sum to zero"):
        aggregate_chord_scores([a, b], [0.0, 0.0])


def test_confusion_matrix_and_recall():
    reference = np.array([1, 1, 1, 2, 2, 0])
    predicted = np.array([1, 1, 2, 2, 0, 0])
    conf = confusion_matrix(predicted, reference)
    assert conf.shape == (25, 25) and conf.dtype == np.int64
    assert conf.sum() == 6
    assert conf[1, 1] == 2 and conf[1, 2] == 1 and conf[2, 2] == 1 and conf[2, 0] == 1
    assert conf[0, 0] == 1
    recall = per_class_recall(conf)
    assert recall.shape == (25,)
    np.testing.assert_allclose(recall[:3], [1.0, 2 / 3, 0.5])
    assert np.isnan(recall[3:]).all()  # absent from the reference
    with pytest.raises(ValueError, match="equal shape"):
        confusion_matrix(predicted[:-1], reference)
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix(predicted, reference, n_classes=2)
    with pytest.raises(ValueError, match="square"):
        per_class_recall(np.zeros((2, 3)))


@pytest.mark.integration
def test_chord_labels_agree_with_lab_annotations():
    data = next((d for d in DATA_CANDIDATES if (d / "labs").is_dir()), None)
    if data is None:
        pytest.skip("the RWC-Pop data set is not available")
    song = "N001-M01-T01"
    classes = np.load(data / "chord" / f"{song}.npy")
    intervals, labels = read_lab(data / "labs" / f"{song}.lab")
    scores = chord_scores(classes, intervals, labels, frame_rate=FRAME_RATE)
    # labs/ and chord/ agree where the major/minor reduction exists
    assert scores["majmin"] > 0.99
    assert scores["root"] > 0.99


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("N", 0),
        ("C:maj", 1),
        ("C:7", 1),
        ("C:maj7", 1),
        ("E:maj/3", 5),
        ("A:min", 22),
        ("A:min7", 22),
        ("C#:min/b3", 14),
        ("Db:min", 14),
        ("C:sus4", -1),
        ("C:dim", -1),
        ("C:aug", -1),
        ("C:5", -1),
        ("X", -1),
    ],
)
def test_harte_class_reduces_to_major_minor(label: str, expected: int):
    assert harte_class(label) == expected


def test_harte_class_names_a_bad_label():
    with pytest.raises(ValueError, match="C:nonsense"):
        harte_class("C:nonsense")


def test_reference_frame_classes_take_the_label_at_each_frame_centre():
    intervals = np.array([[0.0, 1.0], [1.0, 2.5], [2.5, 3.0]])
    labels = ["N", "G:maj", "E:dim"]
    n = int(3.5 * FRAME_RATE)
    classes = reference_frame_classes(intervals, labels, n)
    times = np.arange(n) / FRAME_RATE
    assert classes.shape == (n,) and classes.dtype == np.int64
    assert (classes[times < 1.0] == 0).all()
    assert (classes[(times >= 1.0) & (times < 2.5)] == 8).all()
    assert (classes[times >= 2.5] == -1).all()  # dim: outside the vocabulary; past the end
    late = reference_frame_classes(np.array([[0.5, 1.0]]), ["C:maj"], 200)
    assert (late[: int(0.5 * FRAME_RATE)] == -1).all()  # before the first segment


def test_reference_frame_positions_mark_chord_changes_and_inversions():
    intervals = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0], [4.0, 5.0]])
    labels = ["N", "C:maj/3", "C:maj/3", "A:min", "F:maj/1"]
    n = int(5.5 * FRAME_RATE)
    at_change, inverted = reference_frame_positions(intervals, labels, n, 0.25)
    times = np.arange(n) / FRAME_RATE
    assert at_change.shape == inverted.shape == (n,) and at_change.dtype == bool
    near = lambda c: np.abs(times - c) <= 0.25  # noqa: E731
    # changes at 1 s and 3 s and 4 s; none at 2 s, where the label repeats
    assert (at_change == (near(1.0) | near(3.0) | near(4.0))).all()
    assert (inverted == ((times >= 1.0) & (times < 3.0))).all()  # /1 is the root position
    none, _ = reference_frame_positions(intervals[:1], labels[:1], 50, 0.25)
    assert not none.any()  # one segment: no change
    with pytest.raises(ValueError, match="change_zone_s"):
        reference_frame_positions(intervals, labels, n, -1.0)
