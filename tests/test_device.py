"""Device-dependent behaviour: mixed precision follows ``trainer.amp``, checkpoints map
onto the device that reads them. Runs on CPU-only and CUDA machines; the CUDA checks
run where a GPU is present (``make gpu-check`` runs this file there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chordrec.data.sequences import song_steps
from chordrec.data.songs import Song
from chordrec.inference.predictor import evaluate, uses_mixed_precision
from chordrec.io.checkpoints import load_checkpoint, save_checkpoint
from chordrec.models import build_model

pytestmark = pytest.mark.device

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SPEC = {
    "_target_": "chordrec.models.CRNN",
    "in_features": 12,
    "n_classes": 25,
    "conv_blocks": [],
    "rnn": {"type": "gru", "hidden_size": 16, "num_layers": 1},
    "head_dropout": 0.0,
}


def _song() -> Song:
    rng = np.random.default_rng(0)
    chroma = rng.random((300, 12)).astype(np.float32)
    return Song("x", chroma, rng.integers(0, 25, 300), None)


@pytest.mark.parametrize(
    ("device", "amp", "expected"),
    [("cuda", True, True), ("cuda", False, False), ("cpu", True, False), ("cpu", False, False)],
)
def test_mixed_precision_only_on_cuda_and_only_when_asked(device, amp, expected) -> None:
    assert uses_mixed_precision(torch.device(device), amp) is expected


def test_a_checkpoint_maps_onto_the_device_that_reads_it(tmp_path: Path) -> None:
    """Read onto another device than it was saved from ('meta' stands in for a GPU
    on a CPU-only machine, and the reverse holds on a GPU machine)."""
    path = save_checkpoint({"model": build_model(SPEC).state_dict(), "epoch": 1}, tmp_path / "a.pt")
    state = load_checkpoint(path, "meta")
    assert {t.device.type for t in state["model"].values()} == {"meta"}
    assert {t.device.type for t in load_checkpoint(path)["model"].values()} == {"cpu"}


@needs_cuda
def test_a_gpu_checkpoint_loads_on_the_cpu(tmp_path: Path) -> None:
    network = build_model(SPEC).to(CUDA)
    path = save_checkpoint({"model": network.state_dict()}, tmp_path / "gpu.pt")
    state = load_checkpoint(path, "cpu")
    assert {t.device.type for t in state["model"].values()} == {"cpu"}
    build_model(SPEC).load_state_dict(state["model"])


@needs_cuda
def test_evaluation_without_amp_is_float32_on_cuda() -> None:
    """trainer.amp=false: CUDA evaluation gives the CPU's float32 posteriors (to
    float32 rounding), not float16's."""
    torch.manual_seed(0)
    network = build_model(SPEC).eval()
    steps = [song_steps(_song(), "frame")]
    cpu = evaluate(network, steps, 64, "sequence", torch.device("cpu"))
    # cuDNN runs float32 convolutions in TF32 on Ampere and newer by default (1.2e-4
    # from the CPU's on an H200): the float32 path proper is compared with it off
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gpu = evaluate(network.to(CUDA), steps, 64, "sequence", CUDA, amp=False)
    half = evaluate(network, steps, 64, "sequence", CUDA, amp=True)
    np.testing.assert_allclose(gpu.log_probs[0], cpu.log_probs[0], atol=1e-5)
    assert np.abs(half.log_probs[0] - cpu.log_probs[0]).max() > 1e-5
