"""Tests of chordrec.models.templates on small synthetic chroma."""

from __future__ import annotations

import numpy as np
import pytest

from chordrec.data.chords import transpose_chroma, transpose_labels
from chordrec.models.templates import chord_templates, template_predict, template_scores

C, E, G, A = 0, 4, 7, 9


def _frame(*pitch_classes: int, weights: tuple[float, ...] | None = None) -> np.ndarray:
    row = np.zeros(12)
    row[list(pitch_classes)] = 1.0 if weights is None else weights
    return row / np.linalg.norm(row)


def test_chord_templates_layout():
    t = chord_templates()
    assert t.shape == (25, 12)
    assert not t[0].any()  # N is a rule, not a template
    np.testing.assert_array_equal(t[1:].sum(axis=1), 3)
    np.testing.assert_array_equal(np.flatnonzero(t[1]), [C, E, G])  # C:maj
    np.testing.assert_array_equal(np.flatnonzero(t[22]), [C, E, A])  # A:min = 13 + 9
    np.testing.assert_array_equal(np.flatnonzero(t[8]), [2, 7, 11])  # G:maj = 1 + 7


def test_triads_and_silence():
    chroma = np.stack([_frame(C, E, G), _frame(A, C, E), np.zeros(12)])
    scores = template_scores(chroma)
    assert scores.shape == (3, 25)
    np.testing.assert_array_equal(scores.argmax(axis=1), [1, 22, 0])
    np.testing.assert_array_equal(template_predict(chroma), [1, 22, 0])
    # rows are log-probabilities; a silent frame is N with certainty
    np.testing.assert_allclose(np.logaddexp.reduce(scores, axis=1), 0.0, atol=1e-12)
    assert scores[2, 0] == 0.0 and np.isneginf(scores[2, 1:]).all()


def test_weighted_triad_and_scale_invariance():
    # a louder root and a quiet fifth is still C major; scaling does not matter
    frame = _frame(C, E, G, weights=(1.0, 0.6, 0.3)) * 7.0
    assert template_predict(frame[None]) == [1]


def test_no_chord_threshold():
    flat = np.full((1, 12), 0.5)  # cosine 0.5 with every triad
    assert template_predict(flat, no_chord_threshold=0.6)[0] == 0
    assert template_predict(flat, no_chord_threshold=0.4)[0] != 0
    # a value below -1 disables the rule: only silence is N
    assert template_predict(np.full((1, 12), 0.01), no_chord_threshold=-1.5)[0] != 0


def test_temperature_sharpens_but_keeps_argmax():
    chroma = np.stack([_frame(C, E, G), _frame(A, C, E, weights=(1.0, 0.8, 0.5))])
    hot = template_scores(chroma, temperature=1.0)
    cold = template_scores(chroma, temperature=0.01)
    np.testing.assert_array_equal(hot.argmax(1), cold.argmax(1))
    assert (cold.max(axis=1) > hot.max(axis=1)).all()


def test_transposing_chroma_transposes_chords():
    rng = np.random.default_rng(0)
    chroma = rng.random((40, 12))
    base = template_predict(chroma)
    for k in (1, 5, 11):
        np.testing.assert_array_equal(
            template_predict(transpose_chroma(chroma, k)), transpose_labels(base, k)
        )


def test_viterbi_removes_a_one_frame_blip():
    chroma = np.stack([_frame(C, E, G)] * 20 + [_frame(2, 7, 11)] + [_frame(C, E, G)] * 20)
    chroma += 0.05  # not perfectly clean
    argmax = template_predict(chroma, "argmax")
    assert argmax[20] == 8 and (np.delete(argmax, 20) == 1).all()
    np.testing.assert_array_equal(template_predict(chroma, "viterbi"), np.ones(41))


@pytest.mark.parametrize(
    "chroma, kwargs, message",
    [
        (np.zeros((4, 11)), {}, "shape"),
        (np.zeros(12), {}, "shape"),
        (np.array([[np.nan] * 12]), {}, "NaN"),
        (np.ones((2, 12)), {"temperature": 0.0}, "temperature"),
        (np.ones((2, 12)), {"no_chord_threshold": np.inf}, "no_chord_threshold"),
    ],
)
def test_template_scores_validates(chroma, kwargs, message):
    with pytest.raises(ValueError, match=message):
        template_scores(chroma, **kwargs)


def test_template_predict_rejects_unknown_decoder():
    with pytest.raises(ValueError, match="unknown decoding method"):
        template_predict(np.ones((2, 12)), decode="greedy")
