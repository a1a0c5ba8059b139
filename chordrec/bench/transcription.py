"""Transcription speed benchmark: multiples of real time on this machine.

    python -m chordrec.bench.transcription [--minutes 4] [--repeats 3] [--model SPEC]

Synthesises a stereo 44.1 kHz WAV song of random major/minor triads struck at
120 BPM, then times each stage of ``chordrec transcribe`` separately, the best of
``--repeats`` runs after one warm-up: reading the file, CENS chroma, beat tracking
(beat-level models only) and each model's scoring plus decoding. The models are the
template matcher and, untrained (the speed does not depend on the weights), the
report's Table 4 BiLSTM at frame level (L = 128, Viterbi) and the CRNN of Table 2
at beat level (L = 32); ``--model`` adds any model ``chordrec transcribe`` accepts.
Prints one line per stage and per model end to end: seconds and audio seconds per
second (x real time), plus the load average, since other jobs slow it down.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from chordrec.audio.features import beat_frames, chroma_features, load_audio, write_wav
from chordrec.bench.training import preset_spec
from chordrec.constants import SAMPLE_RATE, STORE_DIR
from chordrec.data.songs import Song
from chordrec.decoding import decode
from chordrec.models import build_model
from chordrec.tracking import configure
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
    """An untrained model preset of conf/model run as a checkpoint config would say."""
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="song length (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (best)")
    parser.add_argument("--model", action="append", default=[], help="extra model spec")
    parser.add_argument("--store", type=Path, default=STORE_DIR, help="tracking store")
    args = parser.parse_args(argv)

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
    if any(model_kind(spec) in ("registry", "run") for spec in args.model):
        configure(args.store)
    models += [load_model(spec) for spec in args.model]
    song = Song("bench", chroma, np.zeros(len(chroma), np.int64), beats)
    features = stages["read + mix down"] + stages["chroma_features"]
    for model in models:

        def run(model: ChordModel = model) -> np.ndarray:
            return decode(model.scores(song), model.decode, model.self_transition)

        took = best_time(run, args.repeats)
        total = features + took + (stages["beat_frames"] if model.level == "beat" else 0.0)
        print(
            f"  model {model.source:<48} {took:7.3f} s  {seconds / took:8.1f}x real time"
            f"   end to end {total:6.2f} s  {seconds / total:6.1f}x"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
