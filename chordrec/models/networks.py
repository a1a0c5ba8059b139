"""One configurable CRNN: conv blocks, then an RNN, then a linear head.

Input (batch, time, features), e.g. chroma (batch, L, 12). The conv blocks see it
as an image (batch, 1, features, time), as the report does (a dummy channel); their
output (batch, channels, features', time') is flattened to (batch, time',
channels * features') for the RNN (the report's presets squeeze features' to 1).
With no conv blocks the model is a plain RNN; with no RNN, conv features feed the
head directly. The output is (batch, time', classes): time' = time when no block
pools the time axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from chordrec.models.templates import (
    DEFAULT_NO_CHORD_THRESHOLD,
    DEFAULT_TEMPERATURE,
    template_scores,
)
from chordrec.targets import allowed_class


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


class ConvBlock(nn.Module):
    """Conv2d over (features, time) → optional batch norm → ReLU → max-pool → dropout
    (computed as max-pool → ReLU, which is the same function).

    ``kernel`` and ``pool`` are ints or (features, time) pairs; ``padding`` 'valid'
    (no padding, the report's Tables 2-3), 'same' (Table 1) or an int/pair.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel: int | Sequence[int] = 3,
        padding: str | int | Sequence[int] = "valid",
        pool: int | Sequence[int] = 1,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.kernel, self.pool = _pair(kernel), _pair(pool)
        if padding == "same":
            self.padding = (self.kernel[0] // 2, self.kernel[1] // 2)
        elif padding == "valid":
            self.padding = (0, 0)
        else:
            self.padding = _pair(padding)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, self.kernel, padding=self.padding)
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        # Max-pooling before the ReLU gives the same values and gradients as after it
        # (both are monotone; ties keep the window's first maximum), on 1/pool of the data.
        if self.pool != (1, 1):
            layers.append(nn.MaxPool2d(self.pool))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)

    def output_size(self, features: int, time: int) -> tuple[int, int]:
        """(features', time') of the block's output for a (features, time) input."""
        sizes = []
        for n, k, p, pool in zip(
            (features, time), self.kernel, self.padding, self.pool, strict=True
        ):
            sizes.append((n + 2 * p - k + 1) // pool)
        return sizes[0], sizes[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x``."""
        return self.layers(x)


class CRNN(nn.Module):
    """Conv blocks → RNN (LSTM/GRU) → dropout → linear head.

    Parameters
    ----------
    in_features : feature bins per step (12 for chroma).
    n_classes : output classes (25 chords).
    conv_blocks : list of :class:`ConvBlock` keyword dicts (``channels``, ``kernel``,
        ``padding``, ``pool``, ``batch_norm``, ``dropout``); empty for an RNN only.
    rnn : ``{type: lstm|gru, hidden_size, num_layers, bidirectional, dropout}`` (dropout
        between stacked layers, as torch does) or None for no RNN.
    head_dropout : dropout on the RNN outputs before the linear head.
    channels_last : run the conv blocks on channels-last tensors: oneDNN's convolutions
        and max-pooling take a half to two thirds of the time on the CPU
        (docs/performance.md "Speed"); the values differ from the default layout's in float rounding, so a
        preset's results change within noise when it is switched.
    """

    def __init__(
        self,
        in_features: int = 12,
        n_classes: int = 25,
        conv_blocks: Sequence[Mapping[str, Any]] = (),
        rnn: Mapping[str, Any] | None = None,
        head_dropout: float = 0.0,
        channels_last: bool = False,
    ):
        super().__init__()
        self.in_features = in_features
        self.channels_last = channels_last
        blocks, channels = [], 1
        for spec in conv_blocks:
            blocks.append(ConvBlock(channels, **dict(spec)))
            channels = int(spec["channels"])
        self.conv = nn.ModuleList(blocks)
        self.min_input_length = self._min_input_length()
        features = in_features
        for block in self.conv:
            features, _ = block.output_size(features, self.min_input_length)
        if features < 1:
            raise ValueError(f"conv blocks reduce the {in_features} feature bins to nothing")
        size = channels * features if self.conv else in_features
        self.rnn: nn.RNNBase | None = None
        if rnn is not None:
            kind = str(rnn.get("type", "lstm")).lower()
            if kind not in ("lstm", "gru"):
                raise ValueError(f"rnn.type must be 'lstm' or 'gru', got {kind!r}")
            num_layers = int(rnn.get("num_layers", 1))
            bidirectional = bool(rnn.get("bidirectional", True))
            cls = nn.LSTM if kind == "lstm" else nn.GRU
            self.rnn = cls(
                size,
                int(rnn["hidden_size"]),
                num_layers=num_layers,
                bidirectional=bidirectional,
                dropout=float(rnn.get("dropout", 0.0)) if num_layers > 1 else 0.0,
                batch_first=True,
            )
            size = int(rnn["hidden_size"]) * (2 if bidirectional else 1)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(size, n_classes)

    def _min_input_length(self) -> int:
        length = 1
        while True:
            time, features = length, self.in_features
            for block in self.conv:
                features, time = block.output_size(features, time)
            if time >= 1:
                return length
            length += 1

    def output_length(self, time: int) -> int:
        """Output steps time' for an input of ``time`` steps."""
        features = self.in_features
        for block in self.conv:
            features, time = block.output_size(features, time)
        return time

    def stage_shapes(self, batch: int, time: int) -> list[tuple[int, ...]]:
        """Tensor shapes at each stage for an input (batch, time, features): the conv
        input (b, 1, f, t), each block's output, the RNN input (b, t', size), the RNN
        output and the head output (b, t', classes). For checking the report's tables."""
        x = torch.zeros(batch, time, self.in_features)
        shapes: list[tuple[int, ...]] = []
        with torch.no_grad():
            h = x.transpose(1, 2).unsqueeze(1)
            if self.conv:
                shapes.append(tuple(h.shape))
                for block in self.conv:
                    h = block(h)
                    shapes.append(tuple(h.shape))
            seq = self._to_sequence(h) if self.conv else x
            shapes.append(tuple(seq.shape))
            if self.rnn is not None:
                seq, _ = self.rnn(seq)
                shapes.append(tuple(seq.shape))
            shapes.append(tuple(self.head(seq).shape))
        return shapes

    @staticmethod
    def _to_sequence(h: torch.Tensor) -> torch.Tensor:
        b, c, f, t = h.shape
        return h.reshape(b, c * f, t).transpose(1, 2)

    def _rnn_input(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, features) → the conv blocks' output as a sequence (batch, time',
        size), or ``x`` itself without conv blocks."""
        if x.shape[1] < self.min_input_length:
            raise ValueError(
                f"input of {x.shape[1]} steps is shorter than this model's minimum "
                f"{self.min_input_length} (raise seq_len)"
            )
        if not self.conv:
            return x
        h = x.transpose(1, 2).unsqueeze(1)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        for block in self.conv:
            h = block(h)
        if self.channels_last:
            h = ChannelsLastGradient.apply(h)
        return self._to_sequence(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, features) → logits (batch, time', classes)."""
        x = self._rnn_input(x)
        if self.rnn is not None:
            x, _ = self.rnn(x)
        return self.head(self.dropout(x))

    def last_step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the last output step only: (batch, time, features) → (batch,
        classes), what window mode (many-to-one) trains on and predicts; equal to
        ``forward(x)[:, -1]`` up to float rounding, with less work. The head runs on
        that step alone. A one-layer bidirectional RNN runs its forward direction over
        the sequence and its reverse direction as one cell step on the last step: at the
        last step the reverse direction has seen that step only, from a zero state."""
        seq = self._rnn_input(x)
        rnn = self.rnn
        if rnn is None:
            last = seq[:, -1]
        elif rnn.num_layers == 1 and rnn.bidirectional and rnn.bias:
            last = self._last_bidirectional(seq)
        else:
            last = rnn(seq)[0][:, -1]
        return self.head(self.dropout(last))

    def _last_bidirectional(self, seq: torch.Tensor) -> torch.Tensor:
        """The one-layer bidirectional RNN's output at the last step: (batch, 2 * hidden)."""
        rnn = self.rnn
        assert rnn is not None
        forward = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
        reverse = [
            rnn.weight_ih_l0_reverse,
            rnn.weight_hh_l0_reverse,
            rnn.bias_ih_l0_reverse,
            rnn.bias_hh_l0_reverse,
        ]
        h0 = seq.new_zeros(1, seq.shape[0], rnn.hidden_size)
        arguments = (True, 1, 0.0, self.training, False, True)  # bias, layers, dropout, ...
        if isinstance(rnn, nn.LSTM):
            if seq.shape[1] == 1:  # one step: from the zero state as well
                ahead = zero_state_lstm_step(seq[:, 0], *forward)
            else:
                ahead = torch.lstm(seq, (h0, h0), forward, *arguments)[1][0]
            back = zero_state_lstm_step(seq[:, -1], *reverse)
        else:
            if seq.shape[1] == 1:
                ahead = torch.gru_cell(seq[:, 0], h0[0], *forward)
            else:
                ahead = torch.gru(seq, h0, forward, *arguments)[1][0]
            back = torch.gru_cell(seq[:, -1], h0[0], *reverse)
        return torch.cat([ahead, back], dim=-1)

    def step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for every input step: (batch, time, classes). When the conv blocks pool
        time, output step j covers input steps mapped to it by nearest-neighbour
        upsampling (input step i takes output step floor(i * time' / time))."""
        logits = self.forward(x)
        time, out_time = x.shape[1], logits.shape[1]
        if out_time == time:
            return logits
        index = torch.arange(time, device=x.device) * out_time // time
        return logits[:, index]


class ChannelsLastGradient(torch.autograd.Function):
    """The identity, whose backward hands the gradient on as a channels-last tensor with
    the canonical strides of its sizes (batch, channels, features, time).

    The gradient that comes back through the conv blocks' sequence view
    (:meth:`CRNN._to_sequence`) has a stride in its size-1 features dimension that is
    not channels-last's own; torch's CPU max-pool backward then copies the whole conv
    output's gradient twice to change its layout (docs/performance.md "Speed"). Only the memory
    layout changes here, so values and gradients are the same to the bit.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        """Pass ``h`` through unchanged."""
        return h.view_as(h)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        """The gradient, made channels-last."""
        return torch.empty_like(grad, memory_format=torch.channels_last).copy_(grad)


def zero_state_lstm_step(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
) -> torch.Tensor:
    """An LSTM cell's output h (batch, hidden) for input x (batch, features) from the zero
    state (h = c = 0): ``torch.lstm_cell``'s value and gradients to the bit, without its
    zero products. ``w_hh`` multiplies the zero state only, so it gets no gradient."""
    del w_hh
    gates = nn.functional.linear(x, w_ih, b_ih) + b_hh
    in_gate, _, cell_gate, out_gate = gates.chunk(4, 1)  # the forget gate scales c = 0
    cell = torch.sigmoid(in_gate) * torch.tanh(cell_gate)
    return torch.sigmoid(out_gate) * torch.tanh(cell)


class ChromaTemplates(nn.Module):
    """The training-free anchor: binary major/minor triad templates matched against each
    step's chroma (:func:`chordrec.models.templates.template_scores`), with a no-chord rule.

    Input (batch, time, 12) → logits (batch, time, 25). It has no parameters, so a
    run with it skips training and goes straight to evaluation (argmax or Viterbi).
    """

    in_features = 12
    min_input_length = 1

    def __init__(
        self,
        temperature: float = DEFAULT_TEMPERATURE,
        no_chord_threshold: float = DEFAULT_NO_CHORD_THRESHOLD,
    ):
        super().__init__()
        self.temperature, self.no_chord_threshold = temperature, no_chord_threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, 12) → (batch, time, 25); impossible classes get logit -30."""
        chroma = x.detach().float().cpu().numpy().reshape(-1, x.shape[-1])
        scores = template_scores(
            chroma, temperature=self.temperature, no_chord_threshold=self.no_chord_threshold
        )
        logits = torch.from_numpy(scores).float().clamp(min=-30.0)
        return logits.reshape(x.shape[0], x.shape[1], -1).to(x.device)

    def step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every step of ``x``."""
        return self.forward(x)

    def last_step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, 12) → the last step's logits (batch, 25)."""
        return self.forward(x[:, -1:])[:, -1]


def build_model(spec: Mapping[str, Any], source: str = "the model config") -> nn.Module:
    """Build a model from its config (``_target_`` plus keyword arguments), as Hydra's
    ``instantiate`` would, but only for chordrec's own model classes
    (:func:`chordrec.targets.allowed_class`): a config read from a checkpoint can never
    name arbitrary code. Raises ConfigError naming the target and ``source`` for another."""
    spec = dict(spec)
    return allowed_class("model", spec.pop("_target_", "chordrec.models.CRNN"), source)(**spec)


def describe_model(spec: Mapping[str, Any]) -> str:
    """A model config in a few words, e.g. ``BiGRU 2×128 after conv 16 at 1/2 rate`` or
    ``chroma templates (T=0.15)``: for run descriptions."""
    spec = dict(spec)
    target = spec.get("_target_", "chordrec.models.CRNN")
    if target == "chordrec.models.ChromaTemplates":
        return f"chroma templates (T={spec.get('temperature')}, no training)"
    rnn = dict(spec.get("rnn") or {})
    words = []
    if rnn:
        kind = str(rnn.get("type", "lstm")).upper()
        layers, hidden = int(rnn.get("num_layers", 1)), rnn.get("hidden_size")
        size = f"{layers}×{hidden}" if layers > 1 else f"{hidden}"
        words.append(f"{'Bi' if rnn.get('bidirectional') else ''}{kind} {size}")
    blocks = list(spec.get("conv_blocks") or [])
    if blocks:
        channels = ", ".join(str(b.get("channels")) for b in blocks)
        words.append(f"{'after ' if rnn else ''}conv {channels}")
        rate = 1
        for block in blocks:
            rate *= _pair(block.get("pool", 1))[1]
        if rate > 1:
            words.append(f"at 1/{rate} rate")
    if spec.get("head_dropout"):
        words.append(f"(dropout {spec['head_dropout']})")
    return " ".join(words) or "linear head"
