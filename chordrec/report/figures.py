"""Report figures: learning curves, chord timelines and the confusion matrix.

This is the only module of the package that uses matplotlib. It never touches
``pyplot`` or its global state: every function builds a standalone
:class:`matplotlib.figure.Figure` (rendered by the non-interactive Agg backend when
saved), so it is safe in threads and worker processes and needs no display. The
functions return the figure; callers save it, e.g. ``fig.savefig("curves.png")``.

Chord classes follow :mod:`chordrec.data.chords`: 0 = ``N``, 1-12 = major C..B,
13-24 = minor C..B.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from chordrec.constants import FRAME_RATE
from chordrec.data.chords import N_CLASSES, PITCH_CLASSES, class_names

__all__ = [
    "chord_timeline",
    "confusion_matrix_figure",
    "learning_curves",
    "transcription_figure",
]

_HISTORY_KEYS = ("train/acc", "val/acc", "train/loss", "val/loss")
_TRAIN_COLOR = "tab:blue"
_VAL_COLOR = "tab:orange"
_MAJOR_COLOR = "tab:blue"
_MINOR_COLOR = "tab:purple"
_NO_CHORD_COLOR = "0.45"
_CORRECT_COLOR = "tab:green"
_WRONG_COLOR = "tab:red"
_REFERENCE_SHADOW = "0.82"
_QUALITY_LEGEND = (  # (color, label) of bars colored by chord quality
    (_MAJOR_COLOR, "major"),
    (_MINOR_COLOR, "minor"),
    (_NO_CHORD_COLOR, "no chord"),
)


# --------------------------------------------------------------------------- curves


def learning_curves(history: Mapping[str, Sequence[float]]) -> Figure:
    """Plot per-epoch accuracy and loss (the report's Figures 10-11).

    ``history`` maps ``train/acc``, ``val/acc`` (frame accuracies as fractions in
    [0, 1]), ``train/loss``, ``val/loss`` (cross-entropy, nats per frame) and,
    optionally, ``train/lr`` (learning rate per epoch, > 0) to sequences of one value per
    epoch, all of the same length ``n_epochs >= 1``. Entry ``i`` belongs to epoch
    ``i + 1``. Other keys are ignored.

    Returns a figure with two panels side by side: accuracy (y in %, the best
    validation epoch marked) and loss. If ``train/lr`` is given, the loss panel gets a
    twin y-axis with the learning rate on a log scale (three axes in all).

    Raises ``ValueError`` if a required key is missing, the series are empty or of
    different lengths, an accuracy lies outside [0, 1], or the learning rate has a
    negative or no positive value.
    """
    missing = [key for key in _HISTORY_KEYS if key not in history]
    if missing:
        raise ValueError(f"history lacks the series {missing}; it needs {list(_HISTORY_KEYS)}")
    keys = list(_HISTORY_KEYS) + (["train/lr"] if "train/lr" in history else [])
    series: dict[str, np.ndarray] = {}
    for key in keys:
        values = np.asarray(history[key], dtype=float)
        if values.ndim != 1:
            raise ValueError(
                f"history[{key!r}] must be one value per epoch, got shape {values.shape}"
            )
        series[key] = values
    lengths = {key: len(values) for key, values in series.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"history series must have equal lengths, got {lengths}")
    n_epochs = lengths["train/acc"]
    if n_epochs == 0:
        raise ValueError("history is empty: need at least one epoch")
    for key in ("train/acc", "val/acc"):
        finite = series[key][np.isfinite(series[key])]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise ValueError(f"history[{key!r}] must hold fractions in [0, 1], not percentages")
    if "train/lr" in series:
        lr = series["train/lr"]
        if np.any(lr < 0):
            raise ValueError("history['train/lr'] must not be negative")
        if not np.any(lr > 0):
            raise ValueError(
                "history['train/lr'] needs a positive value to be drawn on a log scale"
            )

    epochs = np.arange(1, n_epochs + 1)
    marker = "o" if n_epochs <= 40 else None
    style = {"marker": marker, "markersize": 3.5, "linewidth": 1.6}

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)

    ax_acc.plot(epochs, series["train/acc"], color=_TRAIN_COLOR, label="train", **style)
    ax_acc.plot(epochs, series["val/acc"], color=_VAL_COLOR, label="validation", **style)
    val_acc = series["val/acc"]
    if np.any(np.isfinite(val_acc)):
        best = int(np.nanargmax(val_acc))
        ax_acc.axvline(epochs[best], color="0.6", linestyle=":", linewidth=1.0)
        ax_acc.plot(
            epochs[best],
            val_acc[best],
            linestyle="none",
            marker="*",
            markersize=12,
            color=_VAL_COLOR,
            markeredgecolor="black",
            markeredgewidth=0.6,
            label=f"best val {100 * val_acc[best]:.1f} % (epoch {epochs[best]})",
        )
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax_acc.set_title("Frame accuracy")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend(loc="lower right", fontsize="small")

    ax_loss.plot(epochs, series["train/loss"], color=_TRAIN_COLOR, label="train", **style)
    ax_loss.plot(epochs, series["val/loss"], color=_VAL_COLOR, label="validation", **style)
    ax_loss.set_title("Loss")
    ax_loss.set_ylabel("cross-entropy loss")
    handles, labels = ax_loss.get_legend_handles_labels()
    if "train/lr" in series:
        ax_lr = ax_loss.twinx()
        lr = np.where(series["train/lr"] > 0, series["train/lr"], np.nan)
        (lr_line,) = ax_lr.plot(
            epochs, lr, color="0.35", linestyle="--", linewidth=1.2, label="learning rate"
        )
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate")
        handles.append(lr_line)
        labels.append("learning rate")
    ax_loss.legend(handles, labels, loc="upper right", fontsize="small")

    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, n_epochs + 0.5)
        ax.grid(True, alpha=0.3)
    return fig


# ------------------------------------------------------------------------- timeline


def _check_classes(name: str, classes: np.ndarray) -> np.ndarray:
    """Return ``classes`` as an int array, shape (frames,), after checking it."""
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ValueError(f"{name} must have shape (frames,), got {classes.shape}")
    if not (np.issubdtype(classes.dtype, np.integer) or np.issubdtype(classes.dtype, np.bool_)):
        if not np.issubdtype(classes.dtype, np.floating) or not np.all(
            np.isfinite(classes) & (classes == np.round(classes))
        ):
            raise ValueError(f"{name} must hold integer chord classes, got dtype {classes.dtype}")
    classes = classes.astype(np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= N_CLASSES):
        raise ValueError(f"{name} must hold chord classes in 0..{N_CLASSES - 1}")
    return classes


def _runs(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encode ``classes``, shape (frames,): (starts, lengths, values) in frames."""
    change = np.flatnonzero(np.diff(classes)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(classes)]))
    return starts, ends - starts, classes[starts]


def _quality_colors(classes: np.ndarray) -> np.ndarray:
    """RGBA colors, shape (n, 4), by chord quality of ``classes`` (major / minor / N)."""
    palette = to_rgba_array([_NO_CHORD_COLOR, _MAJOR_COLOR, _MINOR_COLOR])
    return palette[np.where(classes == 0, 0, np.where(classes <= 12, 1, 2))]


def _draw_bars(
    ax: Axes,
    classes: np.ndarray,
    frame_rate: float,
    *,
    correct: np.ndarray | None = None,
    height: float = 0.8,
    fixed_color: str | None = None,
) -> None:
    """Draw a chord sequence, shape (frames,), as piano-roll bars (one row per class).

    Each run of equal class (and, if ``correct`` is given, equal correctness, a bool
    per frame) becomes one bar from its first frame's start to its last frame's end,
    in seconds. Bars are colored green / red by correctness when ``correct`` is
    given, all ``fixed_color`` when that is given, else by chord quality. All bars go
    into one collection, so even per-frame label noise draws quickly.
    """
    key = classes if correct is None else classes * 2 + correct.astype(np.int64)
    starts, lengths, values = _runs(key)
    rows = values if correct is None else values // 2
    x0 = starts / frame_rate
    x1 = (starts + lengths) / frame_rate
    y0 = rows - height / 2
    y1 = rows + height / 2
    verts = np.stack(
        [np.column_stack(corner) for corner in ((x0, y0), (x0, y1), (x1, y1), (x1, y0))],
        axis=1,
    )
    if fixed_color is not None:
        facecolors = to_rgba_array([fixed_color])
    elif correct is not None:
        facecolors = to_rgba_array([_WRONG_COLOR, _CORRECT_COLOR])[values % 2]
    else:
        facecolors = _quality_colors(rows)
    bars = PolyCollection(verts, facecolors=facecolors, linewidths=0)
    ax.add_collection(bars, autolim=False)


def _setup_chord_axis(ax: Axes) -> None:
    names = class_names()
    ax.set_ylim(-0.5, N_CLASSES - 0.5)
    ax.set_yticks(np.arange(N_CLASSES), names, fontsize=6.5)
    ax.tick_params(axis="y", length=2, pad=1)
    for boundary in (0.5, 12.5):
        ax.axhline(boundary, color="0.55", linewidth=0.6)
    ax.set_yticks(np.arange(N_CLASSES) + 0.5, minor=True)
    ax.grid(True, axis="y", which="minor", color="0.93", linewidth=0.5)
    ax.grid(True, axis="x", which="major", color="0.85", linewidth=0.5)
    ax.set_axisbelow(True)
    ax.set_ylabel("chord")


def _check_song(
    chroma: np.ndarray, frame_rate: float, **chords: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Check a timeline's input: ``chroma`` (frames, 12) as floats and each of
    ``chords`` (name -> (frames,) classes) as int arrays, all of one non-zero length,
    and a positive ``frame_rate``. Raises ``ValueError`` naming what is wrong."""
    chroma = np.asarray(chroma, dtype=float)
    if chroma.ndim != 2 or chroma.shape[1] != 12:
        raise ValueError(f"chroma must have shape (frames, 12), got {chroma.shape}")
    classes = [_check_classes(name, values) for name, values in chords.items()]
    lengths = [len(chroma), *(len(c) for c in classes)]
    if len(set(lengths)) != 1:
        names = ["chroma", *chords]
        raise ValueError(
            f"{', '.join(names[:-1])} and {names[-1]} must have the same number of frames, "
            f"got {', '.join(map(str, lengths[:-1]))} and {lengths[-1]}"
        )
    if not lengths[0]:
        raise ValueError("a chord timeline needs at least one frame")
    if not (np.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(
            f"frame_rate must be a positive number of frames per second, got {frame_rate}"
        )
    return chroma, classes


def _timeline_axes(
    n_chord_panels: int, height: float, title: str
) -> tuple[Figure, Axes, list[Axes]]:
    """A figure of a chromagram panel over ``n_chord_panels`` chord panels (twice as
    tall), sharing the time axis; ``title``, if given, as the figure's title."""
    fig = Figure(figsize=(13.0, height), layout="constrained")
    ax_chroma, *ax_chords = fig.subplots(
        1 + n_chord_panels,
        1,
        sharex=True,
        gridspec_kw={"height_ratios": [1.0] + [2.0] * n_chord_panels},
    )
    if title:
        fig.suptitle(title, fontsize="large")
    return fig, ax_chroma, ax_chords


def _draw_chromagram(ax: Axes, chroma: np.ndarray, duration: float) -> None:
    """``chroma`` (frames, 12) as an image over ``[0, duration]`` seconds, the color
    scale spanning its finite min..max."""
    finite = chroma[np.isfinite(chroma)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    ax.imshow(
        chroma.T,
        origin="lower",
        aspect="auto",
        extent=(0.0, duration, -0.5, 11.5),
        cmap="magma",
        vmin=vmin,
        vmax=vmax if vmax > vmin else vmin + 1.0,
        interpolation="nearest",
    )
    ax.set_yticks(np.arange(12), PITCH_CLASSES, fontsize=7)
    ax.tick_params(axis="y", length=2, pad=1)
    ax.set_ylabel("pitch class")
    ax.set_title("Chromagram")


def _chord_panel(ax: Axes, title: str, legend: Sequence[tuple[str, str]]) -> None:
    """Label a chord piano-roll panel: chord axis, ``title`` and a legend of
    ``(color, label)`` patches in one row above its right corner."""
    _setup_chord_axis(ax)
    ax.set_title(title)
    ax.legend(
        handles=[Patch(color=color, label=label) for color, label in legend],
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=len(legend),
        fontsize="small",
        frameon=False,
        borderaxespad=0.2,
    )


def _time_axis(ax: Axes, duration: float) -> None:
    ax.set_xlim(0.0, duration)
    ax.set_xlabel("time (s)")


def chord_timeline(
    chroma: np.ndarray,
    reference: np.ndarray,
    predicted: np.ndarray,
    *,
    frame_rate: float = FRAME_RATE,
    title: str = "",
) -> Figure:
    """Plot a song's chromagram with its reference and predicted chords (Figures 12-14).

    ``chroma``: shape (frames, 12), pitch classes C..B on the last axis, in any
    energy unit (the color scale spans the song's own finite min..max).
    ``reference`` and ``predicted``: shape (frames,), integer chord classes in 0..24.
    ``frame_rate``: frames per second (default the data set's, about 86.13); frame ``i``
    covers ``[i, i + 1) / frame_rate`` seconds.

    Returns a figure with three stacked panels sharing the time axis in seconds:
    the chromagram, the reference chords, and the predicted chords, the last two as
    piano rolls with one row per chord class (labelled with Harte names). Reference
    bars are colored by quality (major / minor / N); prediction bars are green where
    they match the reference and red where not, drawn over a grey copy of the
    reference. The prediction panel's title gives the frame accuracy. ``title``, if
    given, becomes the figure's title.

    Raises ``ValueError`` on a chroma that is not (frames, 12), chord sequences of
    another length or with non-integer or out-of-range classes, no frames, or a
    non-positive frame rate.
    """
    chroma, (reference, predicted) = _check_song(
        chroma, frame_rate, reference=reference, predicted=predicted
    )
    duration = len(chroma) / frame_rate
    correct = predicted == reference
    accuracy = float(correct.mean())

    fig, ax_chroma, (ax_ref, ax_pred) = _timeline_axes(2, 9.5, title)
    _draw_chromagram(ax_chroma, chroma, duration)

    _draw_bars(ax_ref, reference, frame_rate)
    _chord_panel(ax_ref, "Reference chords", _QUALITY_LEGEND)

    _draw_bars(ax_pred, reference, frame_rate, fixed_color=_REFERENCE_SHADOW, height=0.95)
    _draw_bars(ax_pred, predicted, frame_rate, correct=correct, height=0.6)
    _chord_panel(
        ax_pred,
        f"Predicted chords (frame accuracy {100 * accuracy:.1f} %)",
        ((_CORRECT_COLOR, "correct"), (_WRONG_COLOR, "wrong"), (_REFERENCE_SHADOW, "reference")),
    )
    _time_axis(ax_pred, duration)
    return fig


# ------------------------------------------------------------------------ confusion


def confusion_matrix_figure(confusion: np.ndarray) -> Figure:
    """Plot a row-normalised chord confusion matrix.

    ``confusion``: shape (25, 25), non-negative frame counts; row ``r``, column
    ``c`` counts frames of reference class ``r`` predicted as class ``c`` (classes
    as in :func:`chordrec.data.chords.class_names`). Each row is divided by its total,
    so a cell shows the fraction of the reference class's frames (rows without
    frames stay empty); cells of at least 5 % are written as whole percentages.
    The title gives the overall frame accuracy (trace / total).

    Returns a figure with the matrix and its colorbar (two axes).
    Raises ``ValueError`` unless ``confusion`` is a finite, non-negative (25, 25)
    array.
    """
    counts = np.asarray(confusion, dtype=float)
    if counts.shape != (N_CLASSES, N_CLASSES):
        raise ValueError(
            f"confusion must have shape ({N_CLASSES}, {N_CLASSES}), got {counts.shape}"
        )
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("confusion must hold finite, non-negative counts")

    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    total = counts.sum()
    accuracy = float(np.trace(counts) / total) if total > 0 else float("nan")

    fig = Figure(figsize=(10.0, 9.0), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8, format=PercentFormatter(xmax=1.0))
    colorbar.set_label("share of the reference class's frames")

    for r, c in zip(*np.nonzero(normalised >= 0.05), strict=True):
        value = normalised[r, c]
        ax.text(
            c,
            r,
            f"{100 * value:.0f}",
            ha="center",
            va="center",
            fontsize=6,
            color="white" if value > 0.55 else "black",
        )

    names = class_names()
    ticks = np.arange(N_CLASSES)
    ax.set_xticks(ticks, names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    for boundary in (0.5, 12.5):
        ax.axhline(boundary, color="0.5", linewidth=0.6)
        ax.axvline(boundary, color="0.5", linewidth=0.6)
    ax.set_xlabel("predicted chord")
    ax.set_ylabel("reference chord")
    accuracy_text = "n/a" if np.isnan(accuracy) else f"{100 * accuracy:.1f} %"
    ax.set_title(f"Confusion matrix, row-normalised (%), frame accuracy {accuracy_text}")
    return fig


# ------------------------------------------------------------------- transcription


def transcription_figure(
    chroma: np.ndarray,
    predicted: np.ndarray,
    *,
    frame_rate: float = FRAME_RATE,
    title: str = "",
) -> Figure:
    """Plot a transcription: the chromagram over the predicted chords (no reference).

    ``chroma``: shape (frames, 12), pitch classes C..B, any energy unit;
    ``predicted``: shape (frames,), integer chord classes in 0..24; ``frame_rate``
    in frames per second (frame ``i`` covers ``[i, i + 1) / frame_rate`` s).
    Returns a figure with two panels sharing the time axis in seconds: the
    chromagram and the chords as a piano roll colored by quality (major / minor /
    N). Raises ``ValueError`` on mismatched or empty input or a non-positive rate.
    """
    chroma, (predicted,) = _check_song(chroma, frame_rate, predicted=predicted)
    duration = len(chroma) / frame_rate
    fig, ax_chroma, (ax_chords,) = _timeline_axes(1, 6.5, title)
    _draw_chromagram(ax_chroma, chroma, duration)
    _draw_bars(ax_chords, predicted, frame_rate)
    _chord_panel(ax_chords, "Predicted chords", _QUALITY_LEGEND)
    _time_axis(ax_chords, duration)
    return fig
