"""How a trained model turns one song into chord classes, exactly as its run was scored.

An :class:`InferenceRecipe` holds every setting between a model's weights and its frame
labels: the level it reads (frames or beats), its sequence mode, the evaluation chunk
length and overlap, the decoding method and Viterbi's self-transition as tuned on
validation. A run writes its recipe into its best checkpoint once it is scored, so
transcription decodes a new song the way the run's own evaluation decoded its songs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chordrec.data.sequences import LEVELS, MODES
from chordrec.decoding import DECODE_METHODS


@dataclass(frozen=True)
class InferenceRecipe:
    """``level`` 'frame' | 'beat'; ``seq_mode`` 'window' | 'sequence'; ``seq_len`` steps per
    evaluation chunk (or window); ``overlap``: half-overlapping chunks, averaged
    (sequence mode); ``decode`` 'argmax' | 'viterbi'; ``self_transition``: Viterbi's
    self-transition probability in (0, 1), None until tuned."""

    level: str
    seq_mode: str
    seq_len: int
    overlap: bool
    decode: str
    self_transition: float | None = None

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
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data, storable in a weights-only checkpoint."""
        return asdict(self)
