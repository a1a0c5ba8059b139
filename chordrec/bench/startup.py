"""Start-up benchmark: how long short commands take, start-up included.

    python -m chordrec.bench.startup [--repeats 5] [--seconds 60] [--audio FILE]
                                     [--registry/--no-registry]

Each command runs as a fresh process; the table gives the median of ``--repeats`` runs
(and their range), after one untimed run that warms the page cache and numba's on-disk
cache, beside the target of docs/performance.md's "Start-up" section:

* ``chordrec --help``;
* ``python -m chordrec.train --help`` (Hydra composes the config, the plugins load);
* ``chordrec transcribe`` of one ``--seconds`` song (a stereo 44.1 kHz WAV of struck
  triads, :func:`~chordrec.bench.transcription.synthetic_song`, or ``--audio``) with
  ``--model templates``;
* the same with the champion's architecture and decoding (``experiment=best_synth``, untrained:
  the speed does not depend on the weights) as a ``.pt`` checkpoint;
* with ``--registry``, the same champion registered in a temporary store under the alias
  ``champion`` and named the command's default way (``models:/chordrec@champion``),
  twice: as found again (what the name stood for is kept, :mod:`chordrec.io.resolved_models`:
  no MLflow), and with nothing kept (each run imports MLflow to ask the store).

The commands keep their models in a temporary cache directory (``$XDG_CACHE_HOME``), not
the user's.

The load average before and after is printed too: other jobs slow every row down.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chordrec.audio.features import write_wav
from chordrec.bench.transcription import champion_checkpoint, synthetic_song
from chordrec.constants import SAMPLE_RATE
from chordrec.io.resolved_models import SETTLED_S, cache_dir


@dataclass(frozen=True)
class Row:
    """One timed command: what the table calls it, its arguments after ``python`` and
    the target in seconds (None: none)."""

    name: str
    arguments: list[str]
    target: float | None = None
    before: Callable[[], None] | None = None  # run before each run of the command


def wall_times(row: Row, repeats: int) -> list[float]:
    """Wall times of ``repeats`` runs of ``row`` as fresh processes, after one untimed
    run (``$MLFLOW_TRACKING_URI`` unset: ``--store`` names the store); raises
    RuntimeError when a run fails."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    times = []
    for i in range(repeats + 1):
        if row.before is not None:
            row.before()
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *row.arguments], capture_output=True, text=True, env=env
        )
        took = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"{row.name} failed:\n{done.stderr[-2000:]}")
        if i:
            times.append(took)
    return times


def registered_champion(store: Path, checkpoint: Path) -> None:
    """Make ``store`` hold one run with ``checkpoint`` as ``checkpoints/best.pt`` and its
    network as the logged model, registered as ``chordrec`` with the alias
    ``champion``, as ``chordrec register <run> --alias champion`` leaves it."""
    from chordrec import tracking
    from chordrec.io.checkpoints import load_checkpoint
    from chordrec.models import build_model

    saved = load_checkpoint(checkpoint)
    network = build_model(saved["config"]["model"])
    network.load_state_dict(saved["model"])
    seq_len = int(saved["inference"]["seq_len"])
    tracking.configure(store)
    with tracking.RunTracker(store_dir=store, system_metrics=False) as tracker:
        tracker.log_epoch(1, {"val/frame_acc": 0.0}, {"best": checkpoint})
        tracker.log_model(network.eval(), np.zeros((2, seq_len, 12), np.float32))
        run_id = tracker.run_id
    tracking.register_run_model(run_id, alias="champion")


def rows(work: Path, audio: Path, seconds: float, registry: bool) -> list[Row]:
    """The commands to time, their files made in ``work``."""
    champion = champion_checkpoint(work / "best.pt")  # the name a run uploads
    song = f"{seconds:g}-s song"

    def transcribe(model: list[str]) -> list[str]:
        out = work / "out.lab"
        return [
            "-m",
            "chordrec",
            "transcribe",
            str(audio),
            "-o",
            str(out),
            "--force",
            "--quiet",
        ] + model

    table = [
        Row("chordrec --help", ["-m", "chordrec", "--help"], 2.0),
        Row("python -m chordrec.train --help", ["-m", "chordrec.train", "--help"], 2.0),
        Row(f"chordrec transcribe, {song}, templates", transcribe(["-m", "templates"]), 2.0),
        Row(
            f"chordrec transcribe, {song}, champion .pt",
            transcribe(["-m", str(champion)]),
            3.0,
        ),
    ]
    if registry:
        store = work / "store"
        registered_champion(store, champion)
        settle = time.time() - 2 * SETTLED_S  # a store changed just now is not kept
        os.utime(store / "mlflow.db", (settle, settle))
        table += [
            Row(
                f"chordrec transcribe, {song}, champion (registry)",
                transcribe(["--store", str(store)]),
                3.0,
            ),
            Row(
                f"chordrec transcribe, {song}, champion (registry, asked)",
                transcribe(["--store", str(store)]),
                before=lambda: shutil.rmtree(cache_dir()),
            ),
        ]
    return table


def main(argv: list[str] | None = None) -> None:
    """Time each command's start-up from the command line and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (median)")
    parser.add_argument("--seconds", type=float, default=60.0, help="song length (default 60)")
    parser.add_argument(
        "--audio", type=Path, help="transcribe this file instead of a synthetic song"
    )
    parser.add_argument(
        "--registry",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also time the champion from a temporary registry (default: no)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chordrec-startup-") as tmp:
        work = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # its commands' and this one's
        audio = args.audio
        if audio is None:
            audio = work / "song.wav"
            write_wav(audio, synthetic_song(args.seconds), SAMPLE_RATE)
        table = rows(work, audio, args.seconds, args.registry)
        print(
            f"start-up, {os.cpu_count()} CPUs, median of {args.repeats} fresh processes "
            f"(min-max); load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        print(f"  {'command':<52} {'median':>8} {'min-max':>13}  target")
        for row in table:
            times = wall_times(row, args.repeats)
            target = f"< {row.target:g} s" if row.target is not None else "-"
            spread = f"{min(times):.2f}-{max(times):.2f}"
            print(
                f"  {row.name:<52} {statistics.median(times):6.2f} s {spread:>13}  {target}",
                flush=True,
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
