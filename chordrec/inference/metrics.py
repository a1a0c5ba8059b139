"""Scoring of frame-wise chord predictions: frame accuracy, MIREX-style chord metrics.

Frame-level functions take class indices of :mod:`chordrec.data.chords` shaped
(frames,). Segment-level functions work in seconds: frame ``i`` spans
``[i / frame_rate, (i + 1) / frame_rate)`` with ``frame_rate = 44100 / 512`` by
default (the data set's hop), and labels are Harte strings as mir_eval reads them.
:func:`chord_scores` follows :func:`mir_eval.chord.evaluate` step by step, computing
only the metrics reported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chordrec.constants import FRAME_RATE
from chordrec.data.chords import N_CLASSES, class_to_harte

__all__ = [
    "SCORE_KEYS",
    "frame_accuracy",
    "frames_to_segments",
    "harte_class",
    "reference_frame_classes",
    "reference_frame_positions",
    "chord_scores",
    "aggregate_chord_scores",
    "confusion_matrix",
    "per_class_recall",
]

#: Keys of the dictionaries returned by :func:`chord_scores`.
SCORE_KEYS: tuple[str, ...] = ("majmin", "root", "seg", "overseg", "underseg")


def _check_classes(classes: np.ndarray, name: str, n_classes: int = N_CLASSES) -> np.ndarray:
    arr = np.asarray(classes)
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (frames,), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(
            f"{name} must lie in 0..{n_classes - 1}, got range {arr.min()}..{arr.max()}"
        )
    return arr.astype(np.int64, copy=False)


def _check_frame_rate(frame_rate: float) -> float:
    fr = float(frame_rate)
    if not (np.isfinite(fr) and fr > 0):
        raise ValueError(f"frame_rate must be a positive finite number, got {frame_rate!r}")
    return fr


def _check_intervals(intervals: np.ndarray, labels: Sequence[str], name: str) -> np.ndarray:
    arr = np.asarray(intervals, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} intervals must have shape (n, 2), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} intervals are empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} intervals contain NaN or inf")
    if (arr[:, 1] < arr[:, 0]).any():
        raise ValueError(f"{name} intervals have an end before their start")
    if len(labels) != arr.shape[0]:
        raise ValueError(f"{name}: {arr.shape[0]} intervals but {len(labels)} labels")
    return arr


def frame_accuracy(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of frames whose predicted class equals the reference, in [0, 1].

    ``predicted``, ``reference``: shape (frames,), equal; any comparable dtype.
    Raises ValueError on a shape mismatch or on zero frames.
    """
    pred = np.asarray(predicted)
    ref = np.asarray(reference)
    if pred.ndim != 1 or pred.shape != ref.shape:
        raise ValueError(
            f"predicted and reference must have equal shape (frames,), "
            f"got {pred.shape} and {ref.shape}"
        )
    if pred.size == 0:
        raise ValueError("cannot compute the accuracy of zero frames")
    return float(np.mean(pred == ref))


def frames_to_segments(
    classes: np.ndarray, frame_rate: float = FRAME_RATE
) -> tuple[np.ndarray, list[str]]:
    """Merge runs of equal frame classes into labelled time intervals.

    Parameters
    ----------
    classes : np.ndarray, shape (frames,), int in [0, 24]
    frame_rate : float
        Frames per second; frame ``i`` spans ``[i / frame_rate, (i + 1) / frame_rate)``.

    Returns
    -------
    intervals : np.ndarray, shape (segments, 2), float64
        Start and end of each run in seconds; consecutive runs share their boundary.
    labels : list[str], length segments
        Harte label of each run (``"N"``, ``"C:maj"``, ``"A:min"``, ...).
    """
    cls = _check_classes(classes, "classes")
    fr = _check_frame_rate(frame_rate)
    if cls.size == 0:
        return np.zeros((0, 2)), []
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    ends = np.r_[starts[1:], cls.size]
    intervals = np.stack([starts / fr, ends / fr], axis=1)
    return intervals, class_to_harte(cls[starts])


def harte_class(label: str) -> int:
    """The 25-class index of a Harte label by its major/minor reduction, or -1.

    ``N`` is 0; a chord whose triad is major (major third and fifth, e.g. ``C:maj``,
    ``C:7``, ``C:maj7``, ``C:maj/3``) is ``1 + root``, one whose triad is minor (minor
    third and fifth: ``A:min``, ``A:min7``) ``13 + root``; anything else (``X``,
    ``sus4``, ``dim``, ``aug``, power chords) is -1, outside the vocabulary. Raises
    ValueError for a label mir_eval cannot parse.
    """
    import mir_eval  # imported when first needed: scipy.stats and all, about 1.5 s

    try:
        root, semitones, _ = mir_eval.chord.encode(label)
    except mir_eval.chord.InvalidChordException as exc:
        raise ValueError(f"not a Harte chord label: {label!r} ({exc})") from None
    if label == mir_eval.chord.NO_CHORD:
        return 0
    if root < 0 or not semitones[7]:
        return -1
    if semitones[4] and not semitones[3]:
        return 1 + int(root)
    if semitones[3] and not semitones[4]:
        return 13 + int(root)
    return -1


def reference_frame_classes(
    intervals: np.ndarray, labels: Sequence[str], n_frames: int, frame_rate: float = FRAME_RATE
) -> np.ndarray:
    """The annotated class of each frame, shape (n_frames,) int64: the
    :func:`harte_class` of the segment holding the frame's centre ``i / frame_rate``
    (seconds); -1 for a frame outside every segment or with a label outside the
    vocabulary. ``intervals`` (n, 2) seconds, sorted, with ``labels`` (n,)."""
    classes = np.array([harte_class(label) for label in labels], dtype=np.int64)
    segment = _frame_segments(intervals, labels, n_frames, frame_rate)
    return np.where(segment >= 0, classes[np.maximum(segment, 0)], -1)


def _frame_segments(
    intervals: np.ndarray, labels: Sequence[str], n_frames: int, frame_rate: float
) -> np.ndarray:
    """The index of the segment holding each frame's centre ``i / frame_rate``, shape
    (n_frames,) int64; -1 for a frame outside every segment."""
    ref = _check_intervals(intervals, labels, "reference")
    times = np.arange(n_frames) / _check_frame_rate(frame_rate)
    segment = np.searchsorted(ref[:, 0], times, side="right") - 1
    inside = (segment >= 0) & (times < ref[np.maximum(segment, 0), 1])
    return np.where(inside, segment, -1)


def reference_frame_positions(
    intervals: np.ndarray,
    labels: Sequence[str],
    n_frames: int,
    change_zone_s: float,
    frame_rate: float = FRAME_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each frame lies in the annotation, two bool arrays of shape (n_frames,):
    ``at_change``, the frame's centre ``i / frame_rate`` is within ``change_zone_s``
    seconds of a chord change (a segment's start whose label differs from the previous
    segment's); ``inverted``, the frame's segment is an inversion (a Harte label with a
    bass other than ``/1``, e.g. ``C:maj/3``). ``intervals`` (n, 2) seconds, sorted,
    with ``labels`` (n,)."""
    if not change_zone_s >= 0:
        raise ValueError(f"change_zone_s must be >= 0 seconds, got {change_zone_s}")
    segment = _frame_segments(intervals, labels, n_frames, frame_rate)
    starts = np.asarray(intervals, dtype=np.float64)[:, 0]
    changes = np.array(
        [starts[k] for k in range(1, len(labels)) if labels[k] != labels[k - 1]], np.float64
    )
    times = np.arange(n_frames) / frame_rate
    if changes.size:
        before = np.searchsorted(changes, times).clip(1, changes.size) - 1  # or the first
        gap = np.minimum(
            np.abs(times - changes[before]),
            np.abs(times - changes[np.minimum(before + 1, changes.size - 1)]),
        )
        at_change = gap <= change_zone_s
    else:
        at_change = np.zeros(n_frames, bool)
    bass = [label.partition("/")[2] for label in labels]
    inverted_segment = np.array([b not in ("", "1") for b in bass], bool)
    inverted = (segment >= 0) & inverted_segment[np.maximum(segment, 0)]
    return at_change, inverted


def chord_scores(
    predicted_classes: np.ndarray,
    reference_intervals: np.ndarray,
    reference_labels: Sequence[str],
    frame_rate: float = FRAME_RATE,
) -> dict[str, float]:
    """MIREX chord metrics of a frame-wise prediction against a reference annotation.

    The prediction is turned into segments (:func:`frames_to_segments`), then scored
    exactly as :func:`mir_eval.chord.evaluate` does: the estimate is cropped or padded
    with ``N`` to the reference's span, both are merged onto common intervals, and
    the comparisons are weighted by duration.

    Parameters
    ----------
    predicted_classes : np.ndarray, shape (frames,), int in [0, 24]
    reference_intervals : np.ndarray, shape (n, 2)
        Reference segments in seconds (e.g. from :func:`chordrec.io.chord_files.read_lab`).
    reference_labels : sequence of str, length n
        Harte labels of the reference segments (any vocabulary mir_eval parses).
    frame_rate : float
        Frames per second of the prediction.

    Returns
    -------
    dict[str, float]
        ``majmin``: weighted chord symbol recall on the major/minor reduction
        (reference segments without such a reduction, e.g. sus or dim, are left
        out); ``root``: same on chord roots; ``overseg``, ``underseg``: directional
        Hamming scores of the segmentations; ``seg``: their minimum. All in [0, 1].
    """
    est_intervals, est_labels = frames_to_segments(predicted_classes, frame_rate)
    if est_intervals.shape[0] == 0:
        raise ValueError("predicted_classes holds no frames")
    return segment_chord_scores(reference_intervals, reference_labels, est_intervals, est_labels)


def segment_chord_scores(
    reference_intervals: np.ndarray,
    reference_labels: Sequence[str],
    estimated_intervals: np.ndarray,
    estimated_labels: Sequence[str],
) -> dict[str, float]:
    """MIREX chord metrics of an estimated annotation (segments and Harte labels, e.g. a
    ``.lab`` file of any tool) against a reference, as :func:`mir_eval.chord.evaluate`
    computes them; the same dict as :func:`chord_scores`.

    Both ``*_intervals`` are arrays of shape (n, 2) in seconds, one Harte label per row.
    The estimate is cropped or padded with ``N`` to the reference's span. Raises
    ValueError for malformed intervals or a label mir_eval cannot parse.
    """
    ref_intervals = _check_intervals(reference_intervals, reference_labels, "reference")
    ref_labels = list(reference_labels)
    est_intervals = _check_intervals(estimated_intervals, estimated_labels, "estimate")
    est_labels = list(estimated_labels)
    for label in set(ref_labels) | set(est_labels):
        harte_class(label)  # ValueError naming a label mir_eval would not parse

    import mir_eval

    chord = mir_eval.chord
    est_intervals, est_labels = mir_eval.util.adjust_intervals(
        est_intervals,
        est_labels,
        ref_intervals.min(),
        ref_intervals.max(),
        chord.NO_CHORD,
        chord.NO_CHORD,
    )
    merged_ref = chord.merge_chord_intervals(ref_intervals, ref_labels)
    merged_est = chord.merge_chord_intervals(est_intervals, est_labels)
    intervals, ref_common, est_common = mir_eval.util.merge_labeled_intervals(
        ref_intervals, ref_labels, est_intervals, est_labels
    )
    durations = mir_eval.util.intervals_to_durations(intervals)

    overseg = float(chord.overseg(merged_ref, merged_est))
    underseg = float(chord.underseg(merged_ref, merged_est))
    return {
        "majmin": float(chord.weighted_accuracy(chord.majmin(ref_common, est_common), durations)),
        "root": float(chord.weighted_accuracy(chord.root(ref_common, est_common), durations)),
        "seg": min(overseg, underseg),
        "overseg": overseg,
        "underseg": underseg,
    }


def aggregate_chord_scores(
    per_song: Sequence[dict[str, float]], durations: Sequence[float]
) -> dict[str, float]:
    """Duration-weighted mean of per-song score dictionaries.

    ``per_song``: dicts with the same keys (e.g. from :func:`chord_scores`);
    ``durations``: one non-negative weight per song, normally its length in seconds,
    not all zero. Returns a dict with the same keys, each the weighted mean.
    """
    if len(per_song) != len(durations):
        raise ValueError(f"got {len(per_song)} score dicts but {len(durations)} durations")
    if len(per_song) == 0:
        raise ValueError("need at least one song")
    weights = np.asarray(durations, dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("durations must be finite and non-negative")
    if weights.sum() == 0:
        raise ValueError("durations sum to zero")
    keys = list(per_song[0])
    for k, scores in enumerate(per_song):
        if set(scores) != set(keys):
            raise ValueError(f"per_song[{k}] has keys {sorted(scores)}, expected {sorted(keys)}")
    return {
        key: float(np.average([scores[key] for scores in per_song], weights=weights))
        for key in keys
    }


def confusion_matrix(
    predicted: np.ndarray, reference: np.ndarray, n_classes: int = N_CLASSES
) -> np.ndarray:
    """Frame counts per (reference, predicted) class pair.

    ``predicted``, ``reference``: shape (frames,), ints in ``0..n_classes - 1``.
    Returns shape (n_classes, n_classes), int64: entry ``[r, p]`` counts frames with
    reference ``r`` predicted as ``p`` (rows are the reference).
    """
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    n_classes = int(n_classes)
    pred = _check_classes(predicted, "predicted", n_classes)
    ref = _check_classes(reference, "reference", n_classes)
    if pred.shape != ref.shape:
        raise ValueError(
            f"predicted and reference must have equal shape, got {pred.shape} and {ref.shape}"
        )
    counts = np.bincount(ref * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix with reference rows.

    ``confusion``: shape (classes, classes), non-negative counts. Returns shape
    (classes,), float64: ``confusion[c, c] / confusion[c].sum()``, NaN for classes
    that never occur in the reference (an all-zero row).
    """
    conf = np.asarray(confusion)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be square (classes, classes), got {conf.shape}")
    conf = conf.astype(np.float64)
    if not np.isfinite(conf).all() or (conf < 0).any():
        raise ValueError("confusion must hold finite non-negative counts")
    support = conf.sum(axis=1)
    recall = np.full(conf.shape[0], np.nan)
    present = support > 0
    recall[present] = np.diag(conf)[present] / support[present]
    return recall
