"""Tests of chordrec.report.figures on small generated data (no display, Agg only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from chordrec.data.chords import class_names
from chordrec.report.figures import (
    chord_timeline,
    confusion_matrix_figure,
    learning_curves,
    transcription_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=60)
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_MAGIC)


def _history(n_epochs: int = 6, *, lr: bool = True) -> dict[str, list[float]]:
    epochs = np.arange(n_epochs)
    history = {
        "train/acc": list(0.3 + 0.5 * (1 - np.exp(-epochs / 2))),
        "val/acc": list(0.25 + 0.45 * (1 - np.exp(-epochs / 2))),
        "train/loss": list(2.5 * np.exp(-epochs / 3) + 0.4),
        "val/loss": list(2.4 * np.exp(-epochs / 3) + 0.7),
    }
    if lr:
        history["train/lr"] = list(1e-3 * 0.5 ** (epochs // 2))
    return history


def _song(n_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chroma (n_frames, 12), reference and predicted classes (n_frames,) with runs."""
    rng = np.random.default_rng(seed)
    change = rng.random(n_frames) < 0.01
    reference = rng.integers(0, 25, size=int(change.sum()) + 1)[np.cumsum(change)]
    predicted = reference.copy()
    predicted[rng.random(n_frames) < 0.2] = 7
    chroma = rng.random((n_frames, 12))
    return chroma, reference, predicted


# ----------------------------------------------------------------- learning curves


def test_learning_curves_with_lr_has_twin_log_axis(tmp_path: Path) -> None:
    fig = learning_curves(_history())
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    ax_acc, ax_loss, ax_lr = fig.axes
    assert ax_acc.get_title() == "Frame accuracy"
    assert ax_loss.get_title() == "Loss"
    assert ax_acc.get_xlabel() == ax_loss.get_xlabel() == "epoch"
    assert ax_lr.get_yscale() == "log"
    assert ax_lr.get_ylabel() == "learning rate"
    # epochs start at 1
    train_line = ax_acc.get_lines()[0]
    assert list(train_line.get_xdata()) == [1, 2, 3, 4, 5, 6]
    legend_texts = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert legend_texts == ["train", "validation", "learning rate"]
    _assert_png(fig, tmp_path / "curves.png")


def test_learning_curves_accuracy_shown_as_percent() -> None:
    fig = learning_curves(_history(lr=False))
    assert len(fig.axes) == 2
    ax_acc = fig.axes[0]
    assert ax_acc.yaxis.get_major_formatter()(0.5, 0) == "50%"
    legend_texts = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    best = max(_history()["val/acc"])
    assert legend_texts[-1] == f"best val {100 * best:.1f} % (epoch 6)"


def test_learning_curves_single_epoch(tmp_path: Path) -> None:
    history = {"train/acc": [0.5], "val/acc": [0.4], "train/loss": [1.0], "val/loss": [1.2]}
    fig = learning_curves(history)
    ax_acc, ax_loss = fig.axes
    # one point per series, at epoch 1, with the values given
    assert [list(line.get_xdata()) for line in ax_loss.get_lines()] == [[1], [1]]
    assert [list(line.get_ydata()) for line in ax_loss.get_lines()] == [[1.0], [1.2]]
    assert [list(line.get_ydata()) for line in ax_acc.get_lines()[:2]] == [[0.5], [0.4]]
    legend_texts = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    assert legend_texts[-1] == "best val 40.0 % (epoch 1)"
    _assert_png(fig, tmp_path / "one.png")


def test_learning_curves_unequal_lengths_raise() -> None:
    history = _history()
    history["val/loss"] = history["val/loss"][:-1]
    with pytest.raises(ValueError, match="equal lengths"):
        learning_curves(history)
    history = _history()
    history["train/lr"] = history["train/lr"][:2]
    with pytest.raises(ValueError, match="equal lengths"):
        learning_curves(history)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"val/loss": None}, r"history lacks the series \['val/loss'\]"),
        (
            {"train/acc": [], "val/acc": [], "train/loss": [], "val/loss": [], "train/lr": []},
            "history is empty",
        ),
        (
            {"train/acc": [30.0, 40.0, 50.0, 60.0, 70.0, 80.0]},
            r"history\['train/acc'\] must hold fractions in \[0, 1\], not percentages",
        ),
        ({"train/lr": [0.0] * 6}, r"history\['train/lr'\] needs a positive value"),
        ({"train/lr": [-1e-3] * 6}, r"history\['train/lr'\] must not be negative"),
        ({"val/acc": [[0.5]] * 6}, r"history\['val/acc'\] must be one value per epoch"),
    ],
)
def test_learning_curves_bad_history_raises(change: dict[str, list | None], match: str) -> None:
    history = _history()
    for key, value in change.items():
        if value is None:
            del history[key]
        else:
            history[key] = value
    with pytest.raises(ValueError, match=match):
        learning_curves(history)


# --------------------------------------------------------------------- timeline


def test_chord_timeline_panels_and_titles(tmp_path: Path) -> None:
    chroma, reference, predicted = _song(500)
    fig = chord_timeline(chroma, reference, predicted, title="Song 7")
    assert len(fig.axes) == 3
    ax_chroma, ax_ref, ax_pred = fig.axes
    assert fig.get_suptitle() == "Song 7"
    assert ax_chroma.get_title() == "Chromagram"
    assert ax_ref.get_title() == "Reference chords"
    accuracy = 100 * np.mean(reference == predicted)
    assert ax_pred.get_title() == f"Predicted chords (frame accuracy {accuracy:.1f} %)"
    assert ax_pred.get_xlabel() == "time (s)"
    # shared time axis in seconds, spanning the song
    assert ax_pred.get_xlim() == pytest.approx((0.0, 500 / (44100 / 512)))
    assert ax_chroma.get_xlim() == ax_pred.get_xlim()
    # y ticks: pitch classes and chord names
    assert [t.get_text() for t in ax_chroma.get_yticklabels()][:3] == ["C", "C#", "D"]
    assert [t.get_text() for t in ax_ref.get_yticklabels()] == class_names()
    assert [t.get_text() for t in ax_pred.get_yticklabels()] == class_names()
    _assert_png(fig, tmp_path / "timeline.png")


def test_chord_timeline_frame_rate_and_perfect_prediction() -> None:
    chroma, reference, _ = _song(200)
    fig = chord_timeline(chroma, reference, reference, frame_rate=10.0)
    assert fig.get_suptitle() == ""
    assert fig.axes[2].get_xlim() == pytest.approx((0.0, 20.0))
    assert "100.0 %" in fig.axes[2].get_title()


def test_chord_timeline_accepts_integral_floats_and_single_frame(tmp_path: Path) -> None:
    fig = chord_timeline(np.zeros((1, 12)), np.array([3.0]), np.array([0]))
    assert "0.0 %" in fig.axes[2].get_title()
    _assert_png(fig, tmp_path / "single.png")


@pytest.mark.parametrize(
    ("chroma_shape", "ref_len", "pred_len", "match"),
    [
        ((100, 11), 100, 100, "12"),
        ((100,), 100, 100, "12"),
        ((100, 12), 99, 100, "same number of frames"),
        ((100, 12), 100, 101, "same number of frames"),
        ((0, 12), 0, 0, "at least one frame"),
    ],
)
def test_chord_timeline_bad_shapes_raise(
    chroma_shape: tuple[int, ...], ref_len: int, pred_len: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        chord_timeline(
            np.zeros(chroma_shape),
            np.zeros(ref_len, dtype=int),
            np.zeros(pred_len, dtype=int),
        )


def test_chord_timeline_bad_classes_raise() -> None:
    chroma = np.zeros((10, 12))
    ok = np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="0..24"):
        chord_timeline(chroma, np.full(10, 25), ok)
    with pytest.raises(ValueError, match="0..24"):
        chord_timeline(chroma, ok, np.full(10, -1))
    with pytest.raises(ValueError, match="integer"):
        chord_timeline(chroma, np.full(10, 1.5), ok)
    with pytest.raises(ValueError, match=r"shape \(frames,\)"):
        chord_timeline(chroma, ok.reshape(2, 5), ok)
    with pytest.raises(ValueError, match="frame_rate"):
        chord_timeline(chroma, ok, ok, frame_rate=0.0)


def _bars(collection: PolyCollection) -> np.ndarray:
    """(start s, end s, row centre) of each bar of a piano-roll collection: (bars, 3)."""
    corners = np.array([path.vertices[:4] for path in collection.get_paths()])
    xs, ys = corners[:, :, 0], corners[:, :, 1]
    return np.column_stack([xs.min(axis=1), xs.max(axis=1), ys.mean(axis=1)])


@pytest.mark.slow
def test_chord_timeline_draws_one_bar_per_run_not_per_frame(tmp_path: Path) -> None:
    # 20k frames: long runs in the reference, per-frame label noise in the
    # prediction (the worst case). Each chord layer is one collection holding one
    # bar per run of equal class (and correctness), which is what keeps it cheap.
    rng = np.random.default_rng(1)
    n_frames, frame_rate = 20_000, 10.0
    chroma = rng.random((n_frames, 12))
    reference = np.repeat(rng.integers(0, 25, 40), n_frames // 40)  # 40 runs of 500
    predicted = rng.integers(0, 25, n_frames)
    fig = chord_timeline(chroma, reference, predicted, frame_rate=frame_rate)
    _, ax_ref, ax_pred = fig.axes

    def runs(classes: np.ndarray) -> np.ndarray:
        """(start s, end s, class) of each run of equal values: (runs, 3)."""
        change = np.flatnonzero(np.diff(classes)) + 1
        starts, ends = np.r_[0, change], np.r_[change, len(classes)]
        return np.column_stack([starts / frame_rate, ends / frame_rate, classes[starts]])

    reference_runs = runs(reference)
    assert len(reference_runs) <= 40
    [ref_bars] = ax_ref.collections
    np.testing.assert_allclose(_bars(ref_bars), reference_runs)
    shadow, prediction = ax_pred.collections
    np.testing.assert_allclose(_bars(shadow), reference_runs)
    # prediction bars split where the predicted class or its correctness changes
    key = predicted * 2 + (predicted == reference)
    expected = runs(key)
    expected[:, 2] //= 2  # the row is the predicted class
    np.testing.assert_allclose(_bars(prediction), expected)
    assert len(expected) < n_frames  # some runs are longer than a frame
    fig.savefig(tmp_path / "long.png", dpi=72)
    assert (tmp_path / "long.png").read_bytes().startswith(PNG_MAGIC)


# -------------------------------------------------------------------- confusion


def test_confusion_matrix_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    confusion = rng.integers(0, 5, (25, 25)) + np.diag(rng.integers(50, 100, 25))
    confusion[4] = 0  # a class without reference frames stays empty
    fig = confusion_matrix_figure(confusion)
    assert len(fig.axes) == 2  # matrix and colorbar
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted chord"
    assert ax.get_ylabel() == "reference chord"
    accuracy = 100 * np.trace(confusion) / confusion.sum()
    assert ax.get_title().endswith(f"frame accuracy {accuracy:.1f} %")
    assert [t.get_text() for t in ax.get_xticklabels()] == class_names()
    assert [t.get_text() for t in ax.get_yticklabels()] == class_names()
    shown = ax.get_images()[0].get_array()
    sums = np.asarray(shown).sum(axis=1)
    expected = np.ones(25)
    expected[4] = 0.0
    np.testing.assert_allclose(sums, expected)
    _assert_png(fig, tmp_path / "confusion.png")


def test_confusion_matrix_all_zero_renders(tmp_path: Path) -> None:
    fig = confusion_matrix_figure(np.zeros((25, 25)))
    assert "n/a" in fig.axes[0].get_title()
    _assert_png(fig, tmp_path / "empty.png")


@pytest.mark.parametrize(
    ("confusion", "match"),
    [
        (np.zeros((24, 25)), r"shape \(25, 25\), got \(24, 25\)"),
        (np.zeros((25,)), r"shape \(25, 25\), got \(25,\)"),
        (np.zeros((25, 25, 1)), r"shape \(25, 25\), got \(25, 25, 1\)"),
        (-np.ones((25, 25)), "finite, non-negative counts"),
        (np.full((25, 25), np.nan), "finite, non-negative counts"),
    ],
)
def test_confusion_matrix_bad_input_raises(confusion: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix_figure(confusion)


# ------------------------------------------------------------------- transcription


def test_transcription_figure_panels_and_legend(tmp_path: Path) -> None:
    chroma, _, predicted = _song(300)
    fig = transcription_figure(chroma, predicted, frame_rate=10.0, title="song.wav")
    assert len(fig.axes) == 2
    ax_chroma, ax_chords = fig.axes
    assert fig.get_suptitle() == "song.wav"
    assert (ax_chroma.get_title(), ax_chords.get_title()) == ("Chromagram", "Predicted chords")
    assert [t.get_text() for t in ax_chords.get_legend().get_texts()] == [
        "major",
        "minor",
        "no chord",
    ]
    assert ax_chords.get_xlim() == pytest.approx((0.0, 30.0))
    assert ax_chroma.get_xlim() == ax_chords.get_xlim()
    assert [t.get_text() for t in ax_chords.get_yticklabels()] == class_names()
    _assert_png(fig, tmp_path / "transcription.png")


def test_transcription_figure_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="same number of frames"):
        transcription_figure(np.zeros((10, 12)), np.zeros(9, dtype=int))
    with pytest.raises(ValueError, match="at least one frame"):
        transcription_figure(np.zeros((0, 12)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="frame_rate"):
        transcription_figure(np.zeros((10, 12)), np.zeros(10, dtype=int), frame_rate=-1.0)
