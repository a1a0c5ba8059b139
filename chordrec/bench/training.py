"""Training throughput benchmark: window mode against the course's own loop, then
frames per second per mode.

    python -m chordrec.bench.training [--songs 60] [--seconds 60] [--seq-len 128] [--model rnn_table4]
                                      [--course-seconds 30]

First, side by side (one torch thread each, after a warm-up, in alternating rounds):
chordrec's window mode (many-to-one) against :mod:`chordrec.bench.course_baseline`, a
faithful re-implementation of the course's loop, for the same model (BiLSTM 64, FC
128→25), settings (L, batch 32, Adam 1e-4) and batch order, chordrec's side built from
``experiment=c`` (its model and optimizer config, e.g. the fused Adam step), on the first 10 training
songs at L = 16 and the first 3 at L = 128 (where the course's up-front windows still fit
in memory); prints examples per second, the ratio, and the memory each holds for the
examples. Then trains the model preset (default: the report's Table 4 BiLSTM 16) on
the training songs at frame level in window mode and in sequence mode, for a fixed
wall-time budget after one warm-up batch, and prints target frames per second.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from chordrec.bench.course_baseline import (
    CourseBiLSTM,
    course_loader,
    course_train,
    course_windows,
)
from chordrec.constants import DATA_DIR
from chordrec.data.sequences import BatchedExamples, song_steps
from chordrec.data.songs import load_songs, song_names
from chordrec.fit import (
    TrainerSettings,
    build_optimizer,
    resolve_device,
    seed_everything,
    train_epoch,
)
from chordrec.models import build_model
from chordrec.train import compose_config


def preset_spec(name: str) -> dict[str, Any]:
    """The model config of preset ``name`` (``chordrec/conf/model/<name>.yaml``) as training
    composes it, as plain dicts and lists (what :func:`build_model` takes)."""
    spec = OmegaConf.to_container(compose_config([f"model={name}"]).model, resolve=True)
    assert isinstance(spec, dict)
    return spec


def throughput(
    examples: BatchedExamples,
    model_spec: dict,
    seconds: float,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Frames trained per second for ``seconds`` of training on ``examples``."""
    seed_everything(0)
    model = build_model(model_spec).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    settings = TrainerSettings(batch_size=batch_size, progress=False)
    steps_per_example = 1 if examples.mode == "window" else examples.seq_len
    order = torch.randperm(len(examples)).tolist()
    train_epoch(model, examples, order[:batch_size], optimizer, scaler, settings, device)  # warm-up
    frames, batches, start, cursor = 0, 0, time.perf_counter(), batch_size
    while time.perf_counter() - start < seconds:
        if cursor >= len(order):
            cursor = 0
        chunk = order[cursor : cursor + 10 * batch_size]
        cursor += len(chunk)
        train_epoch(model, examples, chunk, optimizer, scaler, settings, device)
        frames += len(chunk) * steps_per_example
        batches += -(-len(chunk) // batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"frames_per_s": frames / elapsed, "batches": batches, "seconds": elapsed}


def examples_bytes(examples: BatchedExamples) -> int:
    """Bytes that ``examples`` holds (its stream, labels and indices): no per-window copy."""
    arrays = [examples.stream, examples.targets, getattr(examples, "labels", None)]
    return sum(a.nbytes for a in arrays if a is not None)


def against_course(
    songs: list, seq_len: int, seconds: float, rounds: int = 3, batch_size: int = 32
) -> dict[str, float]:
    """Window mode against the course's loop on ``songs`` at ``seq_len``: the same
    model, settings and example order, ``rounds`` alternating rounds of ``seconds /
    rounds`` each after a warm-up; examples per second of each, their ratio and the
    memory each holds for the examples."""
    seed_everything(0)
    windows, labels = course_windows(songs, seq_len)
    ours = BatchedExamples(songs, seq_len, "window")
    order = torch.randperm(len(ours)).tolist()
    course_model = CourseBiLSTM()
    course_optimizer = torch.optim.Adam(course_model.parameters(), lr=1e-4)
    loader = course_loader(windows, labels, order, batch_size)
    preset = compose_config(["experiment=c"])  # the course's model and optimizer, in window mode
    model = build_model(OmegaConf.to_container(preset.model, resolve=True))
    optimizer = build_optimizer(
        OmegaConf.to_container(preset.optimizer, resolve=True), model.parameters()
    )
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    settings = TrainerSettings(batch_size=batch_size, progress=False)
    device = torch.device("cpu")

    def ours_train(budget: float) -> tuple[int, float]:
        done, cursor, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < budget:
            chunk = order[cursor : cursor + 10 * batch_size] or order[: 10 * batch_size]
            cursor = (cursor + len(chunk)) % len(order)
            train_epoch(model, ours, chunk, optimizer, scaler, settings, device)
            done += len(chunk)
        return done, time.perf_counter() - start

    course_train(course_model, loader, course_optimizer, 1.0)  # warm-up
    ours_train(1.0)
    totals = {"course": [0, 0.0], "chordrec": [0, 0.0]}
    for _ in range(rounds):
        for name, run in (
            ("course", lambda b: course_train(course_model, loader, course_optimizer, b)),
            ("chordrec", ours_train),
        ):
            done, took = run(seconds / rounds)
            totals[name][0] += done
            totals[name][1] += took
    course_rate = totals["course"][0] / totals["course"][1]
    ours_rate = totals["chordrec"][0] / totals["chordrec"][1]
    return {
        "songs": len(songs),
        "examples": len(ours),
        "seq_len": seq_len,
        "course_examples_per_s": course_rate,
        "chordrec_examples_per_s": ours_rate,
        "ratio": ours_rate / course_rate,
        "course_bytes": windows.nbytes,
        "chordrec_bytes": examples_bytes(ours),
    }


def main() -> None:
    """Run this benchmark with the command line's options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="data set root")
    parser.add_argument("--songs", type=int, default=60, help="training songs to load (default 60)")
    parser.add_argument("--seconds", type=float, default=60.0, help="timed budget per mode")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="rnn_table4", help="a preset in chordrec/conf/model/")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--course-seconds",
        type=float,
        default=30.0,
        help="timed budget per side and L of the comparison with the course's loop (0: skip)",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    spec = preset_spec(args.model)
    songs = [
        song_steps(s, "frame") for s in load_songs(args.data, song_names(args.data)[: args.songs])
    ]
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, device {device}",
        "model": args.model,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
    }
    if args.course_seconds > 0:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        print("window mode (BiLSTM 64, batch 32, one torch thread) against the course's loop:")
        for n_songs, seq_len in ((10, 16), (3, 128)):
            side = against_course(songs[:n_songs], seq_len, args.course_seconds)
            results[f"course_L{seq_len}"] = side
            print(
                f"  L={seq_len:3d}, {side['songs']} songs: course {side['course_examples_per_s']:,.0f} "
                f"examples/s, chordrec {side['chordrec_examples_per_s']:,.0f} examples/s: "
                f"ratio {side['ratio']:.2f}; examples held: course "
                f"{side['course_bytes'] / 2**20:,.0f} MiB, chordrec "
                f"{side['chordrec_bytes'] / 2**20:,.1f} MiB",
                flush=True,
            )
        torch.set_num_threads(threads)
    for mode in ("window", "sequence"):
        examples = BatchedExamples(songs, args.seq_len, mode)
        results[mode] = throughput(examples, spec, args.seconds, args.batch_size, device)
        print(
            f"{mode:8s} L={args.seq_len}: {results[mode]['frames_per_s']:,.0f} frames/s "
            f"({results[mode]['batches']} batches in {results[mode]['seconds']:.1f} s)",
            flush=True,
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
