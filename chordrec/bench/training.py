"""Training throughput benchmark: frames per second on this machine.

    python -m chordrec.bench.training [--songs 60] [--seconds 60] [--seq-len 128] [--model rnn_table4]

Trains the model preset (default: the report's Table 4 BiLSTM 16) on the training
songs at frame level, in window mode (one example per frame: the L frames ending
at it) and in sequence mode (L-frame chunks, every frame predicted), with the
training loop chordrec uses, for a fixed wall-time budget after one warm-up
batch; prints target frames trained per second for each mode.
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

from chordrec.constants import DATA_DIR
from chordrec.data.sequences import BatchedExamples, song_steps
from chordrec.data.songs import load_songs, song_names
from chordrec.fit import TrainerSettings, resolve_device, seed_everything, train_epoch
from chordrec.models import build_model
from chordrec.train import compose_config


def preset_spec(name: str) -> dict[str, Any]:
    """The model config of preset ``name`` (``conf/model/<name>.yaml``) as training
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="data set root")
    parser.add_argument("--songs", type=int, default=60, help="training songs to load (default 60)")
    parser.add_argument("--seconds", type=float, default=60.0, help="timed budget per mode")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="rnn_table4", help="a preset in conf/model/")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    spec = preset_spec(args.model)
    songs = [
        song_steps(s, "frame") for s in load_songs(args.data, song_names(args.data)[: args.songs])
    ]
    results = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, device {device}",
        "model": args.model,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
    }
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
