"""Training-free chord recognition by matching chroma frames to triad templates.

Each chroma frame is compared with the 24 binary major/minor triad templates by
cosine similarity; a softmax with a temperature turns the similarities into
per-frame log-probabilities over the 25 classes of :mod:`chordrec.data.chords`, which
:func:`chordrec.decoding.decode` then decodes by argmax or by Viterbi smoothing.

The no-chord class N has no template. It is handled by a rule instead:

* a silent frame (all-zero chroma) is N with certainty (log-probability 0 for N,
  ``-inf`` for every chord);
* otherwise N gets the constant similarity ``no_chord_threshold``, so the argmax
  is N exactly when no triad matches the frame better than the threshold (at
  equality N wins). Under Viterbi this is a soft score like the others, so
  smoothing may override it.

The defaults below (:data:`DEFAULT_NO_CHORD_THRESHOLD`, :data:`DEFAULT_TEMPERATURE`,
:data:`DEFAULT_SELF_TRANSITION`) were tuned on the validation songs only;
``docs/templates.md`` records how and the accuracies they give. Under Viterbi the
decoded path depends on the temperature ``T`` and the self-transition ``p`` only
through the per-change penalty ``T * log(24 p / (1 - p))`` (in nats).
"""

from __future__ import annotations

import numpy as np

from chordrec import decoding
from chordrec.data.chords import N_CLASSES, NO_CHORD

__all__ = [
    "DEFAULT_NO_CHORD_THRESHOLD",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_SELF_TRANSITION",
    "chord_templates",
    "template_scores",
    "template_predict",
]

#: Cosine similarity at or below which a frame is called N; tuned on validation.
DEFAULT_NO_CHORD_THRESHOLD = 0.3
#: Softmax temperature over cosine similarities; tuned with Viterbi on validation.
DEFAULT_TEMPERATURE = 0.15
#: HMM self-transition probability for Viterbi decoding; tuned on validation.
DEFAULT_SELF_TRANSITION = 0.9995


def chord_templates() -> np.ndarray:
    """Binary triad templates of the 25 classes, shape (25, 12), float64.

    Row ``c`` is the template of class ``c`` of :mod:`chordrec.data.chords`, columns
    are the pitch classes C, C#, ..., B. Row ``1 + r`` (major, root ``r``) has ones
    at ``r, r + 4, r + 7`` (mod 12); row ``13 + r`` (minor) at ``r, r + 3, r + 7``.
    Row 0 (N) is all zero: no-chord is decided by a rule in
    :func:`template_scores`, not by a template.
    """
    templates = np.zeros((N_CLASSES, 12))
    for root in range(12):
        templates[1 + root, [root, (root + 4) % 12, (root + 7) % 12]] = 1.0
        templates[13 + root, [root, (root + 3) % 12, (root + 7) % 12]] = 1.0
    return templates


def _check_chroma(chroma: np.ndarray) -> np.ndarray:
    arr = np.asarray(chroma)
    if arr.ndim != 2 or arr.shape[1] != 12:
        raise ValueError(f"chroma must have shape (frames, 12), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"chroma must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("chroma contains NaN or inf")
    return arr


def template_scores(
    chroma: np.ndarray,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    no_chord_threshold: float = DEFAULT_NO_CHORD_THRESHOLD,
) -> np.ndarray:
    """Per-frame log-probabilities of the 25 classes from triad-template matching.

    Parameters
    ----------
    chroma : np.ndarray, shape (frames, 12)
        Chroma frames (pitch classes C..B), at any scale; each frame is
        L2-normalised here. An all-zero frame counts as silent.
    temperature : float > 0
        Softmax temperature over cosine similarities (which lie in [-1, 1] for
        general and in [0, 1] for non-negative chroma). Smaller is peakier.
        Argmax decoding does not depend on it.
    no_chord_threshold : float
        Constant similarity assigned to N on non-silent frames: a frame whose best
        triad similarity does not exceed it is N under argmax. A value below -1
        disables the rule (N then only for silent frames).

    Returns
    -------
    log_probs : np.ndarray, shape (frames, 25), float64
        Natural-log probabilities, each row log-sum-exp 0. Silent rows are
        ``[0, -inf, ..., -inf]``. Decode them with :func:`chordrec.decoding.decode`.
    """
    x = _check_chroma(chroma)
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    no_chord_threshold = float(no_chord_threshold)
    if not np.isfinite(no_chord_threshold):
        raise ValueError(f"no_chord_threshold must be finite, got {no_chord_threshold!r}")

    norms = np.linalg.norm(x, axis=1)
    silent = norms == 0
    unit = x / np.where(silent, 1.0, norms)[:, None]
    templates = chord_templates()[1:]
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    sims = unit @ templates.T  # (frames, 24) cosine similarities

    logits = np.empty((x.shape[0], N_CLASSES))
    logits[:, NO_CHORD] = no_chord_threshold
    logits[:, 1:] = sims
    logits /= temperature
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    log_probs[silent] = -np.inf
    log_probs[silent, NO_CHORD] = 0.0
    return log_probs


def template_predict(
    chroma: np.ndarray,
    decode: str = "argmax",
    self_transition: float = DEFAULT_SELF_TRANSITION,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    no_chord_threshold: float = DEFAULT_NO_CHORD_THRESHOLD,
) -> np.ndarray:
    """Chord class per frame by template matching, shape (frames,), int64 in [0, 24].

    ``chroma``: shape (frames, 12). ``decode``: ``"argmax"`` or ``"viterbi"``
    (see :func:`chordrec.decoding.decode`); ``self_transition`` is used by
    ``"viterbi"`` only. ``temperature`` and ``no_chord_threshold`` as in
    :func:`template_scores`.
    """
    scores = template_scores(chroma, temperature=temperature, no_chord_threshold=no_chord_threshold)
    return decoding.decode(scores, method=decode, self_transition=self_transition)
