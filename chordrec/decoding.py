"""Frame-wise decoding of chord posteriors: argmax and HMM (Viterbi) smoothing, with or
without the beats.

All functions take per-frame log scores shaped (frames, classes), i.e. one row per
chroma frame, as produced by a classifier's ``log_softmax`` or by
:func:`chordrec.models.templates.template_scores`, and return class indices shaped
(frames,), dtype int64.

The HMM used by :func:`viterbi_decode` has a single parameter, the self-transition
probability ``p``: the transition matrix holds ``p`` on its diagonal and
``(1 - p) / (classes - 1)`` everywhere else, and the initial distribution is
uniform. ``p = 1 / classes`` makes every transition equally likely, so Viterbi
then reduces to the frame-wise argmax; larger ``p`` penalises chord changes and
removes short spurious segments. :func:`beat_viterbi_decode` gives the frames on a
beat a self-transition of their own, so that chords change more readily on beats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from chordrec.compiled_cache import first_call_locked

__all__ = [
    "DEFAULT_SELF_TRANSITIONS",
    "DECODE_METHODS",
    "viterbi_decode",
    "beat_viterbi_decode",
    "decode",
    "tune_self_transition",
    "tune_beat_transitions",
]

#: Grid searched by :func:`tune_self_transition` unless told otherwise.
DEFAULT_SELF_TRANSITIONS: tuple[float, ...] = (
    0.5,
    0.7,
    0.8,
    0.9,
    0.95,
    0.98,
    0.99,
    0.995,
    0.998,
    0.999,
    0.9995,
    0.9999,
)

#: Grids searched by :func:`tune_beat_transitions`: the self-transition between beats,
#: and the one at beat frames (besides the value between beats, i.e. plain Viterbi).
BETWEEN_BEATS_SELF_TRANSITIONS: tuple[float, ...] = (0.999, 0.9995, 0.9999, 0.99999)
AT_BEATS_SELF_TRANSITIONS: tuple[float, ...] = (0.5, 0.9, 0.99)

#: Names accepted by :func:`decode`.
DECODE_METHODS: tuple[str, ...] = ("argmax", "viterbi", "beat_viterbi")


def _check_log_probs(log_probs: np.ndarray, name: str = "log_probs") -> np.ndarray:
    """Validate per-frame log scores: 2-D (frames, classes), no NaN, no +inf.

    ``-inf`` (probability 0) is allowed. Returns a float64 array.
    """
    arr = np.asarray(log_probs)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (frames, classes), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} needs at least one class, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if np.isposinf(arr).any():
        raise ValueError(f"{name} contains +inf (log scores must be < +inf)")
    return arr


def _check_self_transition(self_transition: float) -> float:
    p = float(self_transition)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"self_transition must lie in [0, 1], got {self_transition!r}")
    return p


def _log_transition_matrix(n_classes: int, self_transition: float) -> np.ndarray:
    """Log of the (classes, classes) transition matrix ``A[i, j] = P(j at t | i at t-1)``."""
    if n_classes == 1:
        return np.zeros((1, 1))
    off = (1.0 - self_transition) / (n_classes - 1)
    trans = np.full((n_classes, n_classes), off)
    np.fill_diagonal(trans, self_transition)
    with np.errstate(divide="ignore"):
        return np.log(trans)


def viterbi_decode(log_probs: np.ndarray, self_transition: float) -> np.ndarray:
    """Most likely class path under a "sticky" HMM, in the log domain.

    Parameters
    ----------
    log_probs : np.ndarray, shape (frames, classes)
        Per-frame log posteriors or log-likelihoods (natural log). ``-inf`` is
        allowed (a class impossible at that frame); NaN and ``+inf`` are not.
    self_transition : float in [0, 1]
        Probability of staying in the same class from one frame to the next. The
        remaining mass ``1 - self_transition`` is spread uniformly over the other
        ``classes - 1`` classes. The initial distribution is uniform.

    Returns
    -------
    path : np.ndarray, shape (frames,), int64
        The class sequence maximising ``sum_t log_probs[t, path[t]] + sum_t
        log A[path[t-1], path[t]]``. Ties go to the lowest class index. If every
        path has probability zero the result is still a valid class sequence.

    Notes
    -----
    Dynamic programming over frames, compiled (numba). The transition matrix's one
    parameter makes each frame's update O(classes): the best predecessor of class
    ``j`` is ``j`` itself or the best other class, i.e. the best or second-best
    class of the previous frame. About 2 ms for 20,000 frames × 25 classes.
    """
    return _viterbi_path(_check_log_probs(log_probs), _check_self_transition(self_transition))


def beat_viterbi_decode(
    log_probs: np.ndarray,
    beats: np.ndarray,
    self_transition: float,
    beat_self_transition: float,
) -> np.ndarray:
    """:func:`viterbi_decode` whose self-transition is ``beat_self_transition`` into a
    frame that holds a beat and ``self_transition`` into every other frame.

    Parameters
    ----------
    log_probs : np.ndarray, shape (frames, classes)
        As for :func:`viterbi_decode`.
    beats : np.ndarray, shape (beats,), int
        Frame indices of the beats, each in ``[0, frames)`` (the data set's ``beat/``
        arrays, :func:`chordrec.audio.features.beat_frames` for audio); may be empty.
    self_transition, beat_self_transition : float in [0, 1]
        Between beats, and at beats. A lower value at beats lets chords change there
        more easily; equal values give :func:`viterbi_decode`, and a
        ``self_transition`` of 1 lets chords change on beats only.

    Returns
    -------
    path : np.ndarray, shape (frames,), int64
    """
    scores = _check_log_probs(log_probs)
    at_beats = _beat_mask(beats, scores.shape[0])
    return _path(
        scores,
        _check_self_transition(self_transition),
        _check_self_transition(beat_self_transition),
        at_beats,
    )


def _beat_mask(beats: np.ndarray, n_frames: int) -> np.ndarray:
    """(frames,) bool, True at the frames ``beats`` names; ValueError naming what is wrong
    with ``beats`` (not 1-D integers, or outside ``[0, n_frames)``)."""
    arr = np.asarray(beats)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"beats must be (beats,) integer frame indices, got {arr.dtype} {arr.shape}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= n_frames):
        raise ValueError(
            f"beats must lie in [0, {n_frames}) (the frames), got {arr.min()}..{arr.max()}"
        )
    mask = np.zeros(n_frames, dtype=bool)
    mask[arr] = True
    return mask


def _viterbi_path(scores: np.ndarray, p: float) -> np.ndarray:
    """:func:`viterbi_decode` of scores and a self-transition already checked."""
    return _path(scores, p, p, np.zeros(scores.shape[0], dtype=bool))


def _path(scores: np.ndarray, p: float, p_beat: float, at_beats: np.ndarray) -> np.ndarray:
    """The Viterbi path of checked ``scores`` with self-transition ``p``, and ``p_beat``
    into the frames where ``at_beats`` (frames,) is True."""
    n_frames, n_classes = scores.shape
    if n_frames == 0:
        return np.zeros(0, dtype=np.int64)
    if n_classes == 1:
        return np.zeros(n_frames, dtype=np.int64)
    between, beat = _log_transition_matrix(n_classes, p), _log_transition_matrix(n_classes, p_beat)
    log_stay = np.where(at_beats, beat[0, 0], between[0, 0])
    log_move = np.where(at_beats, beat[0, 1], between[0, 1])
    return _sticky_viterbi(np.ascontiguousarray(scores), log_stay, log_move)


@first_call_locked  # numba's cache, filled by one process at a time
@numba.njit(cache=True, nogil=True)
def _sticky_viterbi(scores: np.ndarray, log_stay: np.ndarray, log_move: np.ndarray) -> np.ndarray:
    """The Viterbi path of ``scores`` (frames, classes >= 2) float64 under transitions
    into frame ``t`` of ``log_stay[t]`` (i -> i) and ``log_move[t]`` (i -> j != i), both
    (frames,); ties to the lowest index, as ``argmax`` over the full (classes x classes)
    update would break them."""
    n_frames, n_classes = scores.shape
    backptr = np.zeros((n_frames, n_classes), dtype=np.int64)
    value = scores[0].copy()
    moved = np.empty(n_classes)
    for t in range(1, n_frames):
        for i in range(n_classes):
            moved[i] = value[i] + log_move[t]
        # the lowest index of the best moved value, then of the best among the others
        first = 0
        for i in range(1, n_classes):
            if moved[i] > moved[first]:
                first = i
        second = 1 if first == 0 else 0
        for i in range(n_classes):
            if i != first and moved[i] > moved[second]:
                second = i
        for j in range(n_classes):
            other = second if j == first else first
            stay = value[j] + log_stay[t]
            if stay > moved[other] or (stay == moved[other] and j < other):
                backptr[t, j] = j
                value[j] = stay + scores[t, j]
            else:
                backptr[t, j] = other
                value[j] = moved[other] + scores[t, j]
    path = np.empty(n_frames, dtype=np.int64)
    best = 0
    for j in range(1, n_classes):
        if value[j] > value[best]:
            best = j
    path[n_frames - 1] = best
    for t in range(n_frames - 1, 0, -1):
        path[t - 1] = backptr[t, path[t]]
    return path


def decode(
    log_probs: np.ndarray,
    method: str = "argmax",
    self_transition: float = 0.9,
    beats: np.ndarray | None = None,
    beat_self_transition: float | None = None,
) -> np.ndarray:
    """Turn per-frame log scores into one class per frame.

    Parameters
    ----------
    log_probs : np.ndarray, shape (frames, classes)
        Per-frame log posteriors (see :func:`viterbi_decode`).
    method : {"argmax", "viterbi", "beat_viterbi"}
        ``"argmax"``: independent best class per frame (the other arguments are
        ignored). ``"viterbi"``: :func:`viterbi_decode` with ``self_transition``.
        ``"beat_viterbi"``: :func:`beat_viterbi_decode` with ``beats``,
        ``self_transition`` and ``beat_self_transition``, which it requires.
    self_transition : float in [0, 1]
        HMM self-transition probability (between beats for ``"beat_viterbi"``).
    beats : np.ndarray, shape (beats,), int, optional
        Beat frame indices, for ``"beat_viterbi"`` only.
    beat_self_transition : float in [0, 1], optional
        Self-transition into beat frames, for ``"beat_viterbi"`` only.

    Returns
    -------
    np.ndarray, shape (frames,), int64
    """
    if method == "argmax":
        scores = _check_log_probs(log_probs)
        return np.argmax(scores, axis=1).astype(np.int64)
    if method == "viterbi":
        return viterbi_decode(log_probs, self_transition)
    if method == "beat_viterbi":
        if beats is None or beat_self_transition is None:
            raise ValueError("beat_viterbi decoding needs the beats and a beat self-transition")
        return beat_viterbi_decode(log_probs, beats, self_transition, beat_self_transition)
    raise ValueError(f"unknown decoding method {method!r}; choose one of {DECODE_METHODS}")


def tune_self_transition(
    log_probs_per_song: Sequence[np.ndarray],
    labels_per_song: Sequence[np.ndarray],
    candidates: Sequence[float] = DEFAULT_SELF_TRANSITIONS,
) -> tuple[float, float]:
    """Pick the self-transition probability with the best Viterbi frame accuracy.

    Meant for validation songs only; the chosen value is then fixed for test.

    Parameters
    ----------
    log_probs_per_song : sequence of np.ndarray, each shape (frames_s, classes)
        Per-frame log scores of each song.
    labels_per_song : sequence of np.ndarray, each shape (frames_s,)
        Reference classes of each song, same frame count as its scores.
    candidates : sequence of float in [0, 1]
        Values to try, in order.

    Returns
    -------
    (best_self_transition, best_accuracy) : tuple[float, float]
        Accuracy is pooled over all frames of all songs (each frame weighs the
        same), in [0, 1]. Ties go to the first candidate reaching the maximum.
    """
    candidates = [_check_self_transition(p) for p in candidates]
    if not candidates:
        raise ValueError("need at least one candidate self_transition")
    songs, n_total = _checked_songs(log_probs_per_song, labels_per_song)

    best_p, best_acc = candidates[0], -1.0
    for p in candidates:
        correct = sum(int(np.sum(_viterbi_path(s, p) == y)) for s, y in songs)
        acc = correct / n_total
        if acc > best_acc:
            best_p, best_acc = p, acc
    return best_p, best_acc


def _checked_songs(
    log_probs_per_song: Sequence[np.ndarray], labels_per_song: Sequence[np.ndarray]
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """The songs' checked ``(scores, labels)`` and their frame count; ValueError naming
    the song whose arrays are wrong, or when there are none."""
    if len(log_probs_per_song) != len(labels_per_song):
        raise ValueError(
            f"got {len(log_probs_per_song)} score arrays but {len(labels_per_song)} label arrays"
        )
    if len(log_probs_per_song) == 0:
        raise ValueError("need at least one song")
    songs = []
    for k, (scores, labels) in enumerate(zip(log_probs_per_song, labels_per_song, strict=True)):
        scores = _check_log_probs(scores, name=f"log_probs_per_song[{k}]")
        labels = np.asarray(labels)
        if labels.shape != (scores.shape[0],):
            raise ValueError(
                f"labels_per_song[{k}] has shape {labels.shape}, "
                f"expected ({scores.shape[0]},) to match its scores"
            )
        songs.append((scores, labels))
    n_total = sum(labels.size for _, labels in songs)
    if n_total == 0:
        raise ValueError("the songs hold no frames")
    return songs, n_total


def tune_beat_transitions(
    log_probs_per_song: Sequence[np.ndarray],
    labels_per_song: Sequence[np.ndarray],
    beats_per_song: Sequence[np.ndarray],
    between: Sequence[float] = BETWEEN_BEATS_SELF_TRANSITIONS,
    at_beats: Sequence[float] = AT_BEATS_SELF_TRANSITIONS,
) -> tuple[float, float, float]:
    """Pick the self-transitions of :func:`beat_viterbi_decode` with the best frame
    accuracy: each value of ``between`` with each of ``at_beats`` and with itself (plain
    Viterbi), in that order. Meant for validation songs only.

    Parameters are those of :func:`tune_self_transition`, with ``beats_per_song`` each
    song's beat frame indices (beats_s,).

    Returns
    -------
    (self_transition, beat_self_transition, accuracy) : tuple[float, float, float]
        Between beats, at beats, and the pooled frame accuracy in [0, 1]. Ties go to
        the first pair reaching the maximum.
    """
    between = [_check_self_transition(p) for p in between]
    at_beats = [_check_self_transition(p) for p in at_beats]
    if not between:
        raise ValueError("need at least one candidate self_transition between beats")
    songs, n_total = _checked_songs(log_probs_per_song, labels_per_song)
    if len(beats_per_song) != len(songs):
        raise ValueError(f"got {len(beats_per_song)} beat arrays for {len(songs)} songs")
    masks = [
        _beat_mask(beats, scores.shape[0])
        for (scores, _), beats in zip(songs, beats_per_song, strict=True)
    ]
    best = (between[0], between[0], -1.0)
    for p in between:
        for p_beat in (*at_beats, p):
            correct = sum(
                int(np.sum(_path(s, p, p_beat, mask) == y))
                for (s, y), mask in zip(songs, masks, strict=True)
            )
            if correct / n_total > best[2]:
                best = (p, p_beat, correct / n_total)
    return best
