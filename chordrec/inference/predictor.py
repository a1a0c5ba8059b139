"""How a model turns songs into chord classes: the one path from chroma to labels.

An :class:`InferenceRecipe` holds every setting between a model's weights and its frame
labels: the level it reads (frames or beats), its sequence mode, the evaluation chunk
length and overlap, the decoding method and Viterbi's self-transition as tuned on
validation, and whether it averages the 12 key transpositions. :func:`build_predictor`
turns a run's config into a :class:`Predictor`, and every caller runs models through
one: training's per-epoch validation, a run's final evaluation and ``chordrec
transcribe``. A run writes its recipe into its best checkpoint once it is scored, so a
transcription decodes a new song the way the run's own evaluation decoded its songs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from chordrec.data.chords import N_CLASSES, transpose_labels
from chordrec.data.sequences import LEVELS, MODES, SongSteps, song_chunks, song_steps, song_windows
from chordrec.data.songs import Song
from chordrec.decoding import DECODE_METHODS, decode
from chordrec.models.templates import template_scores


@dataclass(frozen=True)
class InferenceRecipe:
    """``level`` 'frame' | 'beat'; ``seq_mode`` 'window' | 'sequence'; ``seq_len`` steps per
    evaluation chunk (or window); ``overlap``: half-overlapping chunks, averaged
    (sequence mode); ``decode`` 'argmax' | 'viterbi' | 'beat_viterbi';
    ``self_transition``: Viterbi's self-transition probability in (0, 1) (between beats
    for 'beat_viterbi'), None until tuned; ``beat_self_transition``: 'beat_viterbi''s
    into beat frames, None until tuned (:func:`chordrec.decoding.beat_viterbi_decode`);
    ``template_weight``: the
    weight ``w >= 0`` of the triad templates in a product of experts with the network
    (:func:`with_templates`; 0: the network alone); ``transpose_average``: run the
    network on the 12 transpositions of each song and average its posteriors
    (:class:`TranspositionAverage`)."""

    level: str
    seq_mode: str
    seq_len: int
    overlap: bool
    decode: str
    self_transition: float | None = None
    template_weight: float = 0.0
    beat_self_transition: float | None = None
    transpose_average: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if self.seq_mode not in MODES:
            raise ValueError(f"sequence mode must be one of {MODES}, got {self.seq_mode!r}")
        if self.decode not in DECODE_METHODS:
            raise ValueError(f"decoding must be one of {DECODE_METHODS}, got {self.decode!r}")
        if self.seq_len < 1:
            raise ValueError(f"evaluation chunk length must be >= 1, got {self.seq_len}")
        if self.self_transition is not None and not 0.0 < self.self_transition < 1.0:
            raise ValueError(f"self-transition must lie in (0, 1), got {self.self_transition}")
        beat = self.beat_self_transition
        if beat is not None and not 0.0 < beat < 1.0:
            raise ValueError(f"beat self-transition must lie in (0, 1), got {beat}")
        if not (np.isfinite(self.template_weight) and self.template_weight >= 0):
            raise ValueError(f"template_weight must be >= 0, got {self.template_weight}")

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], self_transition: float | None = None
    ) -> InferenceRecipe:
        """The recipe a run's resolved config sets: evaluation chunks of
        ``trainer.eval_seq_len`` steps, else ``seq_len``."""
        trainer = config.get("trainer") or {}
        return cls(
            level=str(config["data"]["level"]),
            seq_mode=str(config["seq_mode"]),
            seq_len=int(trainer.get("eval_seq_len") or config["seq_len"]),
            overlap=bool(trainer.get("eval_overlap", False)),
            decode=str(config.get("decode", "argmax")),
            self_transition=self_transition,
            template_weight=float(config.get("template_weight") or 0.0),
            transpose_average=bool(config.get("transpose_average", False)),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceRecipe:
        """The recipe :meth:`to_dict` wrote (ValueError on unknown or bad fields)."""
        return cls(
            level=str(data["level"]),
            seq_mode=str(data["seq_mode"]),
            seq_len=int(data["seq_len"]),
            overlap=bool(data["overlap"]),
            decode=str(data["decode"]),
            self_transition=None
            if data.get("self_transition") is None
            else float(data["self_transition"]),
            template_weight=float(data.get("template_weight") or 0.0),
            beat_self_transition=None
            if data.get("beat_self_transition") is None
            else float(data["beat_self_transition"]),
            transpose_average=bool(data.get("transpose_average", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data, storable in a weights-only checkpoint."""
        return asdict(self)


@dataclass(frozen=True)
class Predictor:
    """``model`` run as ``recipe`` says on ``device`` (``amp``: float16 on CUDA), in
    batches of ``batch_size`` chunks."""

    model: nn.Module
    recipe: InferenceRecipe
    device: torch.device
    amp: bool = False
    batch_size: int = 1024

    @property
    def network(self) -> nn.Module:
        """``model``, or with ``recipe.transpose_average`` the model averaged over the
        12 transpositions."""
        return TranspositionAverage(self.model) if self.recipe.transpose_average else self.model

    def step_log_probs(self, steps: SongSteps) -> np.ndarray:
        """Log posteriors of every step of one song: (steps, classes) float32."""
        r = self.recipe
        return predict_log_probs(
            self.network,
            steps,
            r.seq_len,
            r.seq_mode,
            self.device,
            self.batch_size,
            r.overlap,
            self.amp,
        )

    def frame_log_probs(self, song: Song) -> np.ndarray:
        """Log posteriors of every frame of ``song`` (its ``chroma`` and, at beat level,
        ``beats``): (frames, classes) float32."""
        steps = song_steps(song, self.recipe.level)
        frame_lp = steps.to_frames(self.step_log_probs(steps))
        return with_templates(frame_lp, song.chroma, self.recipe.template_weight)

    def evaluate(self, songs: Sequence[SongSteps]) -> Evaluation:
        """Loss, argmax frame accuracy and frame log posteriors of ``songs``."""
        r = self.recipe
        return evaluate(
            self.network,
            songs,
            r.seq_len,
            r.seq_mode,
            self.device,
            self.batch_size,
            overlap=r.overlap,
            amp=self.amp,
            template_weight=r.template_weight,
        )

    def classes(self, frame_log_probs: np.ndarray, beats: np.ndarray | None = None) -> np.ndarray:
        """Decode (frames, classes) log posteriors into (frames,) int64 classes with the
        recipe's method and tuned self-transitions (``beats``, the song's beat frames,
        for 'beat_viterbi')."""
        r = self.recipe
        if r.decode == "argmax":
            return decode(frame_log_probs, "argmax")
        if r.self_transition is None or (
            r.decode == "beat_viterbi" and r.beat_self_transition is None
        ):
            raise ValueError(f"{r.decode} decoding needs the recipe's tuned self-transitions")
        return decode(frame_log_probs, r.decode, r.self_transition, beats, r.beat_self_transition)


def build_predictor(
    model: nn.Module,
    config: Mapping[str, Any],
    device: torch.device,
    amp: bool = False,
    batch_size: int = 1024,
    self_transition: float | None = None,
) -> Predictor:
    """The predictor a run's resolved ``config`` sets for ``model`` (see
    :meth:`InferenceRecipe.from_config`)."""
    return Predictor(
        model, InferenceRecipe.from_config(config, self_transition), device, amp, batch_size
    )


class TranspositionAverage(nn.Module):
    """``model`` run on all 12 transpositions of its chroma input, each output's classes
    moved back down by the same interval, and the 12 posteriors averaged: a prediction
    that favours no key. Its "logits" are the log of the mean posteriors. Input (batch,
    time, 12); outputs as ``model``'s: (batch, time, 25) from :meth:`step_logits`,
    (batch, 25) from :meth:`last_step_logits`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # row k: the class that chord class c becomes when the input moves up k semitones
        self.moved = transpose_labels(np.arange(N_CLASSES)[None, :], np.arange(12)[:, None])

    def step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Log mean posteriors of every input step: (batch, time, 25)."""
        return self._averaged(x, self.model.step_logits)

    def last_step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Log mean posteriors of the last input step: (batch, 25)."""
        return self._averaged(x, self.model.last_step_logits)

    def _averaged(
        self, x: torch.Tensor, logits_of: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        if x.shape[-1] != 12:
            raise ValueError(f"transposition averaging needs 12 chroma bins, got {x.shape[-1]}")
        moved = torch.as_tensor(self.moved, device=x.device)
        total = sum(  # one key at a time: the memory of one batch, not twelve
            torch.softmax(logits_of(torch.roll(x, k, dims=-1)).float(), -1)[..., moved[k]]
            for k in range(12)
        )
        assert isinstance(total, torch.Tensor)
        return torch.log(torch.clamp(total / 12, min=torch.finfo(torch.float32).tiny))


@torch.no_grad()
def predict_log_probs(
    model: nn.Module,
    steps: SongSteps,
    seq_len: int,
    mode: str,
    device: torch.device,
    batch_size: int = 1024,
    overlap: bool = False,
    amp: bool = False,
) -> np.ndarray:
    """Log class posteriors for every step of one song: (steps, classes) float32.

    ``window`` mode predicts step t from the ``seq_len`` steps ending at t (the
    model's last output); ``sequence`` mode predicts all steps of consecutive chunks.
    With ``overlap`` (sequence mode), chunks start every ``seq_len // 2`` steps, so every
    step lies in two chunks, and its posterior is their average weighted by a triangle
    that peaks mid-chunk: no step is predicted from one side of its context only.
    ``amp``: run in float16 on CUDA (:func:`uses_mixed_precision`).
    """
    model.eval()
    if mode == "window":
        inputs = song_windows(steps.features, seq_len)
    elif overlap:
        return _overlapped_log_probs(model, steps.features, seq_len, device, batch_size, amp)
    else:
        inputs, _ = song_chunks(steps.features, steps.labels, seq_len)
    logits = _batched_logits(model, inputs, mode, device, batch_size, amp)
    return torch.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1]).numpy()[: steps.n_steps]


def _batched_logits(
    model: nn.Module,
    inputs: np.ndarray,
    mode: str,
    device: torch.device,
    batch_size: int,
    amp: bool,
) -> torch.Tensor:
    """The model's float32 CPU logits for ``inputs`` (examples, seq_len, features), run in
    batches: (examples, classes) in window mode, (examples, seq_len, classes) otherwise."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        x = torch.from_numpy(np.array(inputs[start : start + batch_size], dtype=np.float32))
        with torch.autocast("cuda", dtype=torch.float16, enabled=uses_mixed_precision(device, amp)):
            x = x.to(device)
            logits = model.last_step_logits(x) if mode == "window" else model.step_logits(x)
        outputs.append(logits.float().cpu())
    return torch.cat(outputs)


def _overlapped_log_probs(
    model: nn.Module,
    features: np.ndarray,
    seq_len: int,
    device: torch.device,
    batch_size: int,
    amp: bool,
) -> np.ndarray:
    if seq_len < 2:
        raise ValueError(f"overlapped chunks need seq_len >= 2, got {seq_len}")
    hop, n = seq_len // 2, len(features)
    # hop zero steps before the song, seq_len after: step i sits at hop + i and lies in
    # the two chunks starting at the multiples of hop in (hop + i - seq_len, hop + i].
    padded = np.concatenate(
        [
            np.zeros((hop, features.shape[1]), np.float32),
            features,
            np.zeros((seq_len, features.shape[1]), np.float32),
        ]
    )
    starts = np.arange(0, hop + n, hop)
    inputs = np.lib.stride_tricks.sliding_window_view(padded, seq_len, axis=0)[starts]
    probs = torch.softmax(
        _batched_logits(model, inputs.transpose(0, 2, 1), "sequence", device, batch_size, amp),
        -1,
    ).numpy()
    position = np.arange(seq_len)
    weight = np.minimum(position + 1, seq_len - position).astype(np.float32)
    total = np.zeros((len(padded), probs.shape[-1]), np.float32)
    weights = np.zeros(len(padded), np.float32)
    for start, chunk in zip(starts, probs, strict=True):
        total[start : start + seq_len] += weight[:, None] * chunk
        weights[start : start + seq_len] += weight
    mean = total[hop : hop + n] / weights[hop : hop + n, None]
    return np.log(np.maximum(mean, np.finfo(np.float32).tiny))


@dataclass
class Evaluation:
    """Step-level loss and frame-level accuracy over songs, and each song's
    frame-level log posteriors (frames, classes)."""

    loss: float
    frame_accuracy: float
    n_frames: int
    log_probs: list[np.ndarray]


def evaluate(
    model: nn.Module,
    songs: Sequence[SongSteps],
    seq_len: int,
    mode: str,
    device: torch.device,
    batch_size: int = 1024,
    overlap: bool = False,
    amp: bool = False,
    template_weight: float = 0.0,
) -> Evaluation:
    """Score every frame of ``songs`` with argmax: beat-level predictions are spread over
    their frames; ``overlap`` and ``amp`` as in :func:`predict_log_probs`. The loss is the
    network's own (per step); frame posteriors and accuracy include the templates when
    ``template_weight`` > 0 (:func:`with_templates`)."""
    loss_sum, n_steps, correct, n_frames, frame_log_probs = 0.0, 0, 0, 0, []
    for steps in songs:
        log_probs = predict_log_probs(model, steps, seq_len, mode, device, batch_size, overlap, amp)
        loss_sum += float(-log_probs[np.arange(steps.n_steps), steps.labels].sum())
        n_steps += steps.n_steps
        frame_lp = with_templates(steps.to_frames(log_probs), steps.song.chroma, template_weight)
        predicted = frame_lp.argmax(axis=1)
        correct += int((predicted == steps.song.labels).sum())
        n_frames += steps.song.n_frames
        frame_log_probs.append(frame_lp)
    return Evaluation(loss_sum / n_steps, correct / n_frames, n_frames, frame_log_probs)


def with_templates(frame_log_probs: np.ndarray, chroma: np.ndarray, weight: float) -> np.ndarray:
    """A product of experts: the network's frame log posteriors plus ``weight`` times
    the triad templates' (:func:`~chordrec.models.templates.template_scores` of the
    song's ``chroma``), renormalised per frame. ``frame_log_probs`` (frames, 25),
    ``chroma`` (frames, 12); returns (frames, 25) float32, ``frame_log_probs`` itself
    when ``weight`` is 0. Silent frames (all-zero chroma) become N with certainty."""
    if weight == 0:
        return frame_log_probs
    combined = frame_log_probs + weight * template_scores(chroma)
    peak = combined.max(axis=1, keepdims=True)  # N is finite on every frame
    normaliser = peak + np.log(np.exp(combined - peak).sum(axis=1, keepdims=True))
    return (combined - normaliser).astype(np.float32)


def uses_mixed_precision(device: torch.device, amp: bool) -> bool:
    """Whether training and evaluation run in float16 autocast: only on CUDA, and only
    when ``amp`` (``trainer.amp``) asks for it."""
    return amp and device.type == "cuda"
