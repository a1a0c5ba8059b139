"""Transcription speed benchmark: multiples of real time on this machine.

    python -m chordrec.bench.transcription [--minutes 4] [--repeats 3] [--model SPEC]
                                           [--files 50] [--stages/--no-stages]

First, end to end: ``chordrec transcribe`` as a command (start-up, model loading and
writing included) on one file of ``--minutes`` and on a folder of ``--files`` such
files (``--out-dir``, worker processes as the command's default), for the template
matcher, the champion's architecture and decoding (``experiment=best_synth``, untrained, as a
``.pt`` checkpoint) and any ``--model``; printed beside essentia's HPCP chord detection,
quoted from docs/performance.md (:data:`ESSENTIA_X_REAL_TIME`, measured with
``../shared/peers/essentia_chords.py``; essentia is not a dependency). The folder's files
are the song rotated by a different offset each, so no two are alike.

Then, stage by stage, it synthesises a stereo 44.1 kHz WAV song of random major/minor triads struck at
120 BPM, then times each stage of ``chordrec transcribe`` separately, the best of
``--repeats`` runs after one warm-up: reading the file, CENS chroma, beat tracking
(beat-level models only) and each model's scoring plus decoding. The models are the
template matcher and, untrained (the speed does not depend on the weights), the
report's Table 4 BiLSTM at frame level (L = 128, Viterbi), the CRNN of Table 2
at beat level (L = 32) and the champion's preset, as it is and with
``transpose_average=true``; ``--model`` adds any model ``chordrec transcribe`` accepts.
Prints one line per stage and per model end to end: seconds and audio seconds per
second (x real time), plus the load average, since other jobs slow it down.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from chordrec.audio.features import beat_frames, chroma_features, load_audio, write_wav
from chordrec.bench.training import preset_spec
from chordrec.constants import SAMPLE_RATE, STORE_DIR
from chordrec.data.songs import Song
from chordrec.inference.predictor import InferenceRecipe
from chordrec.io.checkpoints import load_checkpoint, save_checkpoint
from chordrec.models import build_model
from chordrec.tracking import configure
from chordrec.train import compose_config
from chordrec.transcribe import (
    ChordModel,
    load_model,
    model_kind,
    network_model,
    template_model,
)


def synthetic_song(seconds: float, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Stereo audio (samples, 2) float32: random triads with bass, a chord every 2 s,
    struck every 0.5 s, the right channel a quieter copy plus noise."""
    rng = np.random.default_rng(seed)
    n_chord = 2 * sr
    t = np.arange(n_chord) / sr
    envelope = np.exp(-4.0 * (t % 0.5))
    chords = []
    for _ in range(int(np.ceil(seconds / 2))):
        root, third = int(rng.integers(12)), int(rng.choice([3, 4]))
        notes = [36 + root, 60 + root, 60 + root + third, 60 + root + 7]
        freqs = [440.0 * 2 ** ((m - 69) / 12) * h for m in notes for h in range(1, 7)]
        weights = [1.0 / h for _ in notes for h in range(1, 7)]
        tone = sum(w * np.sin(2 * np.pi * f * t) for f, w in zip(freqs, weights, strict=True))
        chords.append(0.05 * tone * envelope)
    left = np.concatenate(chords)[: int(seconds * sr)]
    right = 0.7 * left + 0.003 * rng.standard_normal(len(left))
    return np.stack([left, right], axis=1).astype(np.float32)


def best_time(call: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls of ``call``, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def preset_model(name: str, level: str, seq_len: int, method: str) -> ChordModel:
    """An untrained model preset of chordrec/conf/model run as a checkpoint config would say."""
    spec = preset_spec(name)
    config = {
        "model": spec,
        "data": {"level": level},
        "seq_len": seq_len,
        "seq_mode": "sequence",
        "decode": method,
    }
    checkpoint = {"model": build_model(spec).state_dict(), "config": config}
    return network_model(checkpoint, f"{name} ({level}, L={seq_len}, {method}, untrained)")


ESSENTIA_X_REAL_TIME = (350, 456)
"""essentia's HPCP + ChordsDetection (``../shared/peers/essentia_chords.py``), multiples
of real time on this machine's kind, as docs/performance.md quotes them."""


def champion_checkpoint(
    path: Path, preset: str = "best_synth", overrides: Sequence[str] = ()
) -> Path:
    """Write an untrained checkpoint of experiment ``preset`` changed by ``overrides``
    (model, config, recipe with the self-transitions the champion's runs tuned) to
    ``path``: what a trained run's ``best.pt`` holds, for speed only."""
    settings = [f"experiment={preset}", *overrides]
    config = OmegaConf.to_container(compose_config(settings), resolve=True)
    assert isinstance(config, dict)
    recipe = InferenceRecipe.from_config(config, self_transition=0.99999)
    if recipe.decode == "beat_viterbi":
        recipe = replace(recipe, beat_self_transition=0.99)
    state = {"model": build_model(config["model"]).state_dict(), "config": config}
    return save_checkpoint({**state, "inference": recipe.to_dict()}, path)


def song_folder(song: np.ndarray, folder: Path, files: int) -> float:
    """Write ``files`` WAV files of ``song`` (samples, channels), each rotated by another
    offset, into ``folder``; returns the seconds of audio written."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        write_wav(folder / f"song{i:03d}.wav", np.roll(song, -i * len(song) // files, axis=0))
    return files * len(song) / SAMPLE_RATE


def command_time(arguments: list[str]) -> float:
    """Wall time of ``chordrec <arguments>`` as a fresh process; raises when it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "chordrec", *arguments], capture_output=True, text=True
    )
    took = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"chordrec {' '.join(arguments)} failed:\n{done.stderr[-2000:]}")
    return took


def end_to_end(minutes: float, files: int, models: list[str], store: Path) -> None:
    """Print ``chordrec transcribe``'s multiples of real time, start-up included, on one
    file and on a folder of ``files``, per model, beside essentia's quoted figure."""
    low, high = ESSENTIA_X_REAL_TIME
    print(
        f"end to end, `chordrec transcribe` as a command, {os.cpu_count()} CPUs "
        f"(essentia's HPCP chord detection, quoted from docs/performance.md: {low}-{high}x real time):"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        song = synthetic_song(60.0 * minutes)
        write_wav(work / "one.wav", song)
        audio = song_folder(song, work / "folder", files)
        single = 60.0 * minutes
        for spec in models:
            store_option = (
                ["--store", str(store)] if model_kind(spec) in ("registry", "run") else []
            )
            one = command_time(
                [
                    "transcribe",
                    str(work / "one.wav"),
                    "-o",
                    str(work / "one.lab"),
                    "-m",
                    spec,
                    "--force",
                    "--quiet",
                    *store_option,
                ]
            )
            many = command_time(
                [
                    "transcribe",
                    str(work / "folder"),
                    "--out-dir",
                    str(work / "out"),
                    "-m",
                    spec,
                    "--force",
                    "--quiet",
                    *store_option,
                ]
            )
            print(
                f"  {spec:<40} one {minutes:g}-min file: {one:6.2f} s {single / one:6.1f}x   "
                f"{files} files ({audio / 60:.0f} min): {many:6.1f} s {audio / many:6.1f}x",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    """Time each stage of a transcription from the command line and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="song length (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (best)")
    parser.add_argument("--model", action="append", default=[], help="extra model spec")
    parser.add_argument("--store", type=Path, default=STORE_DIR, help="tracking store")
    parser.add_argument("--files", type=int, default=50, help="files in the folder (default 50)")
    parser.add_argument(
        "--stages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each stage in this process (default: yes)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        champion = champion_checkpoint(Path(tmp) / "best_synth.pt")
        end_to_end(args.minutes, args.files, ["templates", str(champion), *args.model], args.store)
    if not args.stages:
        return

    seconds = 60.0 * args.minutes
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "song.wav"
        write_wav(path, synthetic_song(seconds), SAMPLE_RATE)
        size = path.stat().st_size / 1e6
        print(f"audio: {seconds:.0f} s, stereo, 44.1 kHz WAV ({size:.0f} MB)")
        y = load_audio(path)
        stages = {"read + mix down": best_time(lambda: load_audio(path), args.repeats)}
    chroma = chroma_features(y, SAMPLE_RATE)
    beats = beat_frames(y, SAMPLE_RATE, len(chroma))
    stages["chroma_features"] = best_time(lambda: chroma_features(y, SAMPLE_RATE), args.repeats)
    stages["beat_frames"] = best_time(
        lambda: beat_frames(y, SAMPLE_RATE, len(chroma)), args.repeats
    )
    for stage, took in stages.items():
        print(f"  {stage:<54} {took:7.3f} s  {seconds / took:8.1f}x real time")

    models = [
        template_model(),
        preset_model("rnn_table4", "frame", 128, "viterbi"),
        preset_model("crnn2", "beat", 32, "argmax"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for overrides in ([], ["transpose_average=true"]):
            path = champion_checkpoint(Path(tmp) / "champion.pt", overrides=overrides)
            name = " ".join(["best_synth", *overrides, "(untrained)"])
            models.append(network_model(load_checkpoint(path), name))
    if any(model_kind(spec) in ("registry", "run") for spec in args.model):
        configure(args.store)
    models += [load_model(spec) for spec in args.model]
    song = Song("bench", chroma, np.zeros(len(chroma), np.int64), beats)
    features = stages["read + mix down"] + stages["chroma_features"]
    for model in models:

        def run(model: ChordModel = model) -> np.ndarray:
            return model.classes(model.scores(song), song.beats)

        took = best_time(run, args.repeats)
        total = features + took + (stages["beat_frames"] if model.needs_beats else 0.0)
        print(
            f"  model {model.source:<48} {took:7.3f} s  {seconds / took:8.1f}x real time"
            f"   end to end {total:6.2f} s  {seconds / total:6.1f}x"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
