"""Tests of chordrec.models: the report's Tables 1-4 built from the YAML presets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from chordrec.errors import ConfigError
from chordrec.models import CRNN, ConvBlock, build_model, networks
from chordrec.models.networks import zero_state_lstm_step

PRESETS_DIR = Path(__file__).resolve().parents[1] / "chordrec" / "conf" / "model"
PRESETS = ("crnn1", "crnn2", "crnn_tagging", "rnn_baseline", "rnn_table4")


def preset(name: str) -> CRNN:
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(PRESETS_DIR / f"{name}.yaml"))
    assert isinstance(model, CRNN)
    return model


def test_the_report_presets_exist():
    assert set(PRESETS) <= {p.stem for p in PRESETS_DIR.glob("*.yaml")}


def test_table2_crnn2_shapes():
    model = preset("crnn2")
    shapes = model.stage_shapes(32, 128)
    assert shapes == [
        (32, 1, 12, 128),  # conv input (b, c, f, t)
        (32, 64, 5, 63),  # conv 64 3x3 valid, maxpool 2x2 (the report prints 5x62)
        (32, 128, 1, 20),  # conv 128 3x3 valid, maxpool 3x3: the CNN output
        (32, 20, 128),  # RNN input (b, t, c)
        (32, 20, 128),  # bidirectional LSTM(64)
        (32, 20, 25),  # FC 128 -> 25
    ]
    assert shapes[2][1:] == (128, 1, 20)  # exactly the report's 128x1x20
    assert model.rnn.input_size == 128 and model.rnn.hidden_size == 64
    assert model.rnn.bidirectional and model.rnn.num_layers == 1
    assert (model.head.in_features, model.head.out_features) == (128, 25)
    assert model.output_length(128) == 20


def test_table3_crnn1_shapes():
    model = preset("crnn1")
    assert model.stage_shapes(32, 128) == [
        (32, 1, 12, 128),
        (32, 64, 1, 17),  # conv 64 5x5 valid -> 8x124, maxpool 7x7 -> 1x17
        (32, 17, 64),
        (32, 17, 128),
        (32, 17, 25),
    ]
    assert isinstance(model.rnn, nn.LSTM) and model.rnn.bidirectional
    assert (model.head.in_features, model.head.out_features) == (128, 25)


def test_table1_tagging_crnn_shapes():
    model = preset("crnn_tagging")
    batch = 1
    assert model.stage_shapes(batch, 1440) == [
        (batch, 1, 96, 1440),
        (batch, 64, 48, 720),
        (batch, 128, 16, 240),
        (batch, 128, 4, 60),
        (batch, 128, 1, 15),
        (batch, 15, 128),
        (batch, 15, 32),  # GRU(32) -> GRU(32)
        (batch, 15, 50),  # FC 50 tags
    ]
    assert isinstance(model.rnn, nn.GRU)
    assert model.rnn.num_layers == 2 and model.rnn.hidden_size == 32
    assert not model.rnn.bidirectional


@pytest.mark.parametrize(
    ("name", "hidden", "head_dropout"), [("rnn_table4", 16, 0.25), ("rnn_baseline", 64, 0.0)]
)
def test_rnn_only_presets(name, hidden, head_dropout):
    model = preset(name)
    assert len(model.conv) == 0
    assert isinstance(model.rnn, nn.LSTM)
    assert model.rnn.input_size == 12 and model.rnn.hidden_size == hidden
    assert model.rnn.bidirectional and model.rnn.num_layers == 1
    assert (model.head.in_features, model.head.out_features) == (2 * hidden, 25)
    assert model.dropout.p == head_dropout
    assert model.stage_shapes(32, 128) == [(32, 128, 12), (32, 128, 2 * hidden), (32, 128, 25)]
    assert model.min_input_length == 1


@pytest.mark.parametrize(("name", "minimum"), [("crnn2", 12), ("crnn1", 11), ("crnn_tagging", 96)])
def test_min_input_length(name, minimum):
    model = preset(name)
    assert model.min_input_length == minimum
    assert model.output_length(minimum) == 1
    assert model.output_length(minimum - 1) < 1
    model.eval()
    features = model.in_features
    with torch.no_grad():
        assert model(torch.zeros(1, minimum, features)).shape[1] == 1
    with pytest.raises(ValueError, match=f"shorter than this model's minimum {minimum}"):
        model(torch.zeros(1, minimum - 1, features))


@pytest.mark.parametrize(
    ("name", "time"),
    [("crnn2", 40), ("crnn2", 128), ("crnn1", 30), ("bigru_halfrate", 256), ("bigru_halfrate", 31)],
)
def test_step_logits_map_input_steps_to_pooled_outputs(name, time):
    model = preset(name).eval()
    x = torch.randn(3, time, 12)
    with torch.no_grad():
        logits = model(x)
        steps = model.step_logits(x)
    out_time = model.output_length(time)
    assert logits.shape == (3, out_time, 25)
    assert steps.shape == (3, time, 25)
    index = [i * out_time // time for i in range(time)]  # floor(i * T' / T)
    assert index[0] == 0 and index[-1] == out_time - 1
    assert torch.equal(steps, logits[:, index])


@pytest.mark.parametrize("name", ["rnn_table4", "rnn_baseline"])
def test_step_logits_without_pooling_equal_forward(name):
    model = preset(name).eval()
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        assert torch.equal(model.step_logits(x), model(x))


def test_build_model_rejects_unknown_target(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    with pytest.raises(ConfigError, match="model _target_ 'os.system' in the model config is not"):
        build_model({"_target_": "os.system", "command": "echo pwned"})
    with pytest.raises(ConfigError, match="model _target_ 'torch.nn.Linear' in a.pt is not"):
        build_model(OmegaConf.create({"_target_": "torch.nn.Linear", "in_features": 1}), "a.pt")
    assert calls == []


def test_build_model_defaults_to_crnn():
    model = build_model({"rnn": {"type": "gru", "hidden_size": 4}})
    assert isinstance(model, CRNN) and isinstance(model.rnn, nn.GRU)


def test_build_model_accepts_a_plain_container():
    spec = OmegaConf.to_container(OmegaConf.load(PRESETS_DIR / "crnn2.yaml"))
    assert build_model(spec).stage_shapes(2, 128)[2] == (2, 128, 1, 20)


TRAINABLE = sorted({*PRESETS, *(p.stem for p in PRESETS_DIR.glob("*.yaml"))} - {"templates"})


@pytest.mark.parametrize("name", TRAINABLE)
def test_forward_backward(name):
    model = preset(name).train()
    features = model.in_features
    time = max(model.min_input_length, 16)
    n_classes = model.head.out_features
    x = torch.randn(2, time, features)
    y = torch.randint(0, n_classes, (2, time))
    logits = model.step_logits(x)
    assert logits.shape == (2, time, n_classes)
    loss = nn.functional.cross_entropy(logits.reshape(-1, n_classes), y.reshape(-1))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


# --------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({"kernel": 3, "pool": 2}, (12, 40)),
        ({"kernel": (5, 3), "pool": (7, 1)}, (12, 33)),
        ({"kernel": 3, "padding": "same", "pool": 3}, (16, 31)),
        ({"kernel": 3, "padding": 1, "pool": (1, 2)}, (12, 9)),
        ({"kernel": [3, 1], "padding": [0, 2], "batch_norm": True, "dropout": 0.1}, (12, 7)),
    ],
)
def test_conv_block_output_size_matches_torch(kwargs, size):
    block = ConvBlock(1, 4, **kwargs).eval()
    with torch.no_grad():
        out = block(torch.zeros(2, 1, *size))
    assert tuple(out.shape[2:]) == block.output_size(*size)


def test_crnn_rejects_bad_configurations():
    with pytest.raises(ValueError, match="rnn.type"):
        CRNN(rnn={"type": "transformer", "hidden_size": 4})
    with pytest.raises(ValueError, match="feature bins"):
        CRNN(conv_blocks=[{"channels": 2, "kernel": 13}])


def test_conv_without_rnn_feeds_the_head():
    model = CRNN(conv_blocks=[{"channels": 3, "kernel": 3, "pool": 2}], rnn=None)
    # features (12 - 2) // 2 = 5, so the head sees 3 * 5 = 15 values per step
    assert model.head.in_features == 15
    assert model.stage_shapes(2, 20)[-2:] == [(2, 9, 15), (2, 9, 25)]


def test_template_preset_scores_chroma_without_parameters():
    model = build_model(OmegaConf.load(PRESETS_DIR / "templates.yaml"))
    assert not list(model.parameters())
    c_major = torch.zeros(1, 3, 12)
    c_major[..., [0, 4, 7]] = 1.0
    logits = model.step_logits(c_major)
    assert logits.shape == (1, 3, 25)
    assert (logits.argmax(-1) == 1).all()  # class 1 = C:maj


@pytest.mark.parametrize(
    "spec",
    [
        {"rnn": {"type": "lstm", "hidden_size": 8, "bidirectional": True}},
        {"rnn": {"type": "gru", "hidden_size": 8, "bidirectional": True}, "head_dropout": 0.3},
        {"rnn": {"type": "lstm", "hidden_size": 8, "bidirectional": False}},
        {"rnn": {"type": "gru", "hidden_size": 8, "num_layers": 2, "bidirectional": True}},
        {
            "conv_blocks": [{"channels": 4, "kernel": 3, "padding": 1, "pool": [1, 2]}],
            "rnn": {"type": "lstm", "hidden_size": 8, "bidirectional": True},
        },
        {"rnn": None},
    ],
)
@pytest.mark.parametrize("length", ["nine steps", "shortest"])
def test_last_step_logits_equal_forward_at_the_last_step_with_the_same_gradients(spec, length):
    """Window mode's shortcut (the head on the last step; a one-layer bidirectional RNN's
    reverse direction as one cell step, and its forward direction too for one step)
    gives forward's values and gradients: on nine steps, and on the shortest input the
    model takes, which its RNN sees as one step (1 input step; 2 for the conv blocks,
    which pool time by 2)."""
    torch.manual_seed(0)
    model = CRNN(**spec)
    steps = 9 if length == "nine steps" else model.min_input_length
    if length == "shortest":
        assert model.output_length(steps) == 1
    x = torch.randn(5, steps, 12)
    y = torch.randint(0, 25, (5,))
    # in training, head dropout draws a mask over all steps or over the last one: the
    # same distribution, other draws; without dropout both modes must agree
    for training in (False, True) if not spec.get("head_dropout") else (False,):
        model.train(training)
        outputs, grads = [], []
        for logits_of in (lambda m: m(x)[:, -1], lambda m: m.last_step_logits(x)):
            model.zero_grad(set_to_none=True)
            logits = logits_of(model)
            nn.functional.cross_entropy(logits, y).backward()
            outputs.append(logits.detach())
            # a weight that multiplies a zero state only gets no gradient in the shortcut
            grads.append(
                {
                    name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                    for name, p in model.named_parameters()
                }
            )
        assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
        for name, full in grads[0].items():
            assert torch.allclose(full, grads[1][name], atol=1e-6), name


def test_zero_state_lstm_step_equals_torch_cell_to_the_bit():
    """The zero-state LSTM step gives ``torch.lstm_cell``'s values and gradients exactly
    (window mode trains on it, so the runs stay the same to the digit)."""
    torch.manual_seed(0)
    x = torch.randn(33, 12, requires_grad=True)
    rnn = nn.LSTM(12, 16)
    weights = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    h0 = torch.zeros(33, 16)
    y = torch.randn(33, 16)
    results = []
    for step in (
        lambda: torch.lstm_cell(x, (h0, h0), *weights)[0],
        lambda: zero_state_lstm_step(x, *weights),
    ):
        for tensor in [x, *weights]:
            tensor.grad = None
        h = step()
        (h * y).sum().backward()
        results.append([h.detach(), x.grad.clone()] + [w.grad for w in weights])
    torch_cell, shortcut = results
    assert torch.equal(torch_cell[0], shortcut[0])
    assert torch.equal(torch_cell[1], shortcut[1])  # d/dx
    assert torch.equal(torch_cell[2], shortcut[2])  # d/dw_ih
    assert not torch_cell[3].any() and shortcut[3] is None  # w_hh meets the zero state only
    assert torch.equal(torch_cell[4], shortcut[4])  # d/db_ih
    assert torch.equal(torch_cell[5], shortcut[5])  # d/db_hh


@pytest.mark.parametrize("preset", ["crnn1", "crnn2"])
def test_channels_last_gradient_changes_the_layout_only(preset, monkeypatch):
    """The channels-last conv blocks hand the max-pool a gradient in canonical
    channels-last strides; the loss and every parameter's gradient equal those without
    the layout change to the bit, silent (all-zero) frames and their tied maxima included."""
    spec = OmegaConf.to_container(OmegaConf.load(PRESETS_DIR / f"{preset}.yaml"))
    assert spec["channels_last"]
    x = torch.rand(6, 128, 12)
    x[:2, 40:90] = 0.0  # silence: equal conv outputs, ties in every pooling window there
    y = torch.randint(0, 25, (6, 128))
    pooled_grads = []

    def gradients() -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(spec)
        model.conv[-1].layers[-2].register_full_backward_hook(
            lambda module, grad_in, grad_out: pooled_grads.append(grad_out[0])
        )
        loss = nn.functional.cross_entropy(model.step_logits(x).reshape(-1, 25), y.reshape(-1))
        loss.backward()
        return [loss.detach()] + [p.grad for p in model.parameters()]

    relaid = gradients()
    monkeypatch.setattr(networks.ChannelsLastGradient, "apply", lambda h: h)
    as_before = gradients()
    assert all(torch.equal(a, b) for a, b in zip(relaid, as_before, strict=True))
    canonical = torch.empty_like(pooled_grads[0], memory_format=torch.channels_last).stride()
    assert pooled_grads[0].stride() == canonical
    assert pooled_grads[1].stride() != canonical  # what the fix is for
