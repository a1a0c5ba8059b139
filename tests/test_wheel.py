"""``pip install`` is the install: a wheel built from this checkout, installed into a
fresh virtual environment without the ``[dev]`` extra, works from an empty directory
outside the repository. It trains one epoch on two songs into a store in that
directory, prints ``chordrec table --runs`` and transcribes a generated WAV with the
templates.

The environment gets torch from :data:`TORCH_SPEC` (the Makefile's CPU build on this
machine) and everything else from the wheel's own dependencies; pip's cache makes a
second install faster. The data set is reached through ``$CHORDREC_DATA`` (the
installed package has no repository to find it in).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
import wave
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CONF, DATA, OOD, REPO

pytestmark = pytest.mark.integration

TORCH_SPEC = "torch==2.13.0"
"""The torch the environment gets (the Makefile's TORCH_SPEC): a CPU build here."""

PACKAGE_SOURCES = ("pyproject.toml", "README.md", "chordrec", "hydra_plugins")
"""What the wheel is built from (pyproject.toml's packages and readme)."""

INSTALL_TIMEOUT_S = 600
"""The longest the fresh environment's ``pip install`` may take."""


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a process in the installed environment: no ``PYTHONPATH`` (it
    would import this checkout instead of the wheel), no outside tracking server, one
    OpenMP thread."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def _run(
    command: Sequence[str], cwd: Path, timeout: float, **env: str
) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd`` (:func:`_clean_env` plus ``env``); print its wall time."""
    started = time.monotonic()
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(**env),
    )
    shown = " ".join(Path(str(c)).name if os.sep in str(c) else str(c) for c in command)
    print(f"{time.monotonic() - started:6.1f} s  {shown[:120]}")
    return done


def _tail(done: subprocess.CompletedProcess, chars: int = 3000) -> str:
    return f"exit {done.returncode}\n{(done.stdout + done.stderr)[-chars:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout. pip builds it in an isolated environment (setuptools
    from the index or pip's cache); where that cannot be had, with this environment's
    setuptools. The test is skipped only if neither can build it."""
    out = tmp_path_factory.mktemp("wheel")
    # a copy of what the wheel is made of: setuptools builds in the source tree, and a
    # build/ left in the checkout could carry files the checkout no longer has
    source = tmp_path_factory.mktemp("source")
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", out]
    isolated = _run(build, source, 600)
    if isolated.returncode != 0:
        try:
            import setuptools  # noqa: F401
        except ImportError:
            pytest.skip(
                "cannot build a wheel: no setuptools here, and pip could not fetch one "
                f"for an isolated build (no network and no cache?): {_tail(isolated, 500)}"
            )
        local = _run([*build, "--no-build-isolation"], source, 600)
        assert local.returncode == 0, _tail(local)
    (built,) = out.glob("chordrec-*.whl")
    return built


def test_the_wheel_carries_every_config_and_preset(wheel: Path) -> None:
    source = sorted(str(p.relative_to(CONF.parent.parent)) for p in CONF.rglob("*.yaml"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert source and all(name in names for name in source), sorted(set(source) - names)
    assert "chordrec/conf/train.yaml" in names
    assert "chordrec/conf/experiment/best.yaml" in names  # the presets, no link
    assert "chordrec/data/rwc_pop.sha256" in names
    assert any(name.startswith("hydra_plugins/chordrec_optuna/") for name in names)


def _write_triad_wav(path: Path, seconds: float = 6.0, rate: int = 22050) -> None:
    """A C major triad (C4, E4, G4, each with two overtones), 16-bit mono."""
    t = np.arange(int(seconds * rate)) / rate
    signal = np.zeros_like(t)
    for midi in (60, 64, 67):
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        for k, gain in ((1, 1.0), (2, 0.4), (3, 0.2)):
            signal += gain * np.sin(2 * math.pi * k * f0 * t)
    pcm = (0.3 * signal / np.abs(signal).max() * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


def test_a_wheel_in_a_fresh_venv_trains_tables_and_transcribes(wheel: Path, tmp_path: Path) -> None:
    if not (DATA / "SHA256SUMS").exists():
        pytest.skip(f"{DATA} is missing: run `make data`")
    venv = tmp_path / "venv"
    started = time.monotonic()
    made = _run([sys.executable, "-m", "venv", venv], tmp_path, 300)
    assert made.returncode == 0, _tail(made)
    python = venv / "bin" / "python"
    installed = _run(
        [python, "-m", "pip", "install", "-q", "--no-compile", TORCH_SPEC, wheel],
        tmp_path,
        INSTALL_TIMEOUT_S,
    )
    install_s = time.monotonic() - started
    assert installed.returncode == 0, _tail(installed)
    print(f"fresh venv + pip install {TORCH_SPEC} {wheel.name}: {install_s:.0f} s")
    listed = _run([python, "-m", "pip", "list", "--format=freeze"], tmp_path, 120).stdout
    assert not re.search(r"^(pytest|ruff|selenium)==", listed, re.M), "a [dev] tool is installed"

    work = tmp_path / "work"  # empty, outside the repository
    work.mkdir()
    data_home = DATA.resolve().parent  # $CHORDREC_DATA: holds rwc-pop/ and ood-synth/
    checked = _run([python, "-c", "import chordrec, sys; print(chordrec.__file__)"], work, 120)
    assert checked.stdout.strip().startswith(str(venv)), _tail(checked)  # not this checkout

    ood = [] if (OOD / "manifest.json").exists() else ["ood.part=null"]
    trained = _run(
        [
            python,
            "-m",
            "chordrec.train",
            "split.max_songs=2",
            "trainer.max_epochs=1",
            "trainer.num_threads=1",
            "trainer.progress=false",
            "tracking.system_metrics=false",
            *ood,
        ],
        work,
        900,
        CHORDREC_DATA=str(data_home),
    )
    assert trained.returncode == 0, _tail(trained)
    run_id = re.search(r"MLflow run id: (\w+)", trained.stdout + trained.stderr)
    assert run_id, _tail(trained)
    assert (work / "mlruns" / "mlflow.db").exists()  # the store defaults to the working dir
    assert not (work / "data").exists()  # the data came through $CHORDREC_DATA

    table = _run([venv / "bin" / "chordrec", "table", "--runs"], work, 300)
    assert table.returncode == 0, _tail(table)
    print(table.stdout)
    assert run_id.group(1)[:8] in table.stdout, _tail(table)

    song = work / "triad.wav"
    _write_triad_wav(song)
    transcribed = _run(
        [venv / "bin" / "chordrec", "transcribe", "--model", "templates", song], work, 300
    )
    assert transcribed.returncode == 0, _tail(transcribed)
    labels = (work / "triad.lab").read_text().split()
    assert "C:maj" in labels, labels
