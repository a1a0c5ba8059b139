"""Start-up stays light: what ``python -m chordrec.train --help`` and ``chordrec transcribe
--model templates`` import holds neither torch nor MLflow. The times themselves are a
benchmark's (``make bench-startup``, docs/performance.md), not a test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chordrec.audio.features import write_wav
from chordrec.constants import SAMPLE_RATE

HEAVY = ("torch", "mlflow", "pandas", "optuna", "ray")


def heavy_imports(code: str) -> list[str]:
    """The :data:`HEAVY` libraries a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_training_entry_point_and_the_hydra_plugins_import_no_torch_or_mlflow() -> None:
    """Hydra imports every plugin module when it scans for plugins, ``--help`` included."""
    code = (
        "import chordrec.train, chordrec.sweeps\n"
        "import hydra_plugins.chordrec_optuna.optuna_sweeper\n"
        "import hydra_plugins.chordrec_ray.ray_launcher"
    )
    assert heavy_imports(code) == []


@pytest.mark.slow  # compiles librosa's numba functions into the test session's empty cache
def test_transcribing_with_the_templates_imports_no_torch_or_mlflow(tmp_path: Path) -> None:
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    audio = tmp_path / "c.wav"
    write_wav(audio, (0.1 * tone).astype(np.float32))
    out = tmp_path / "c.lab"
    code = (
        "from chordrec.cli import main\n"
        f"assert main(['transcribe', {str(audio)!r}, '-m', 'templates', '-o', {str(out)!r},"
        " '--quiet']) == 0"
    )
    assert heavy_imports(code) == []
    assert "C:maj" in out.read_text()
