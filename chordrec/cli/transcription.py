"""``chordrec transcribe`` (audio to chord files) and ``chordrec ood`` (a model scored on
the out-of-domain songs)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chordrec.allocator import keep_freed_memory
from chordrec.cli.options import add_tracking_options, configure_tracking, positive_int
from chordrec.constants import CHAMPION, OOD_DIR

if TYPE_CHECKING:
    from chordrec.audio.features import AudioLimits
    from chordrec.transcribe import ChordModel


def _transcribe(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from chordrec.audio.analysis import FeatureWorkers
    from chordrec.transcribe import model_kind

    limits = _audio_limits(args.max_duration, args.max_samples)
    fmt = args.format or _format_from_suffix(args.output)
    several = len(args.inputs) > 1 or any(Path(i).is_dir() for i in args.inputs)
    try:
        network = model_kind(args.model) != "templates"
    except ValueError:  # load_model says why, once the inputs are checked
        network = False
    # The workers start (and warm up) while this process imports torch and loads the
    # model: for a folder, and for one file a network reads (its chroma computed while
    # torch is imported). The templates need no torch: one file is theirs in this process.
    if args.jobs > 1 and (several or network):
        workers = FeatureWorkers(args.jobs if several else 1)
    else:
        workers = nullcontext(1)
    with workers as pool:
        from chordrec.transcribe import plan_jobs, transcribe_files

        keep_freed_memory()  # the model's large tensors reused song after song, not re-faulted

        jobs = plan_jobs(args.inputs, fmt, args.output, args.out_dir, args.plot)
        model = _load_model(args)
        outcome = transcribe_files(
            jobs,
            model,
            fmt,
            force=args.force,
            progress=not args.quiet,
            limits=limits,
            workers=pool,
        )
    for path in outcome.written:
        print(path)
    _print_failures(outcome.failed, len(jobs))
    return 1 if outcome.failed else 0


def _load_model(args: argparse.Namespace) -> ChordModel:
    """The model ``--model`` names, the tracking store (``--store``, ``--tracking-uri``)
    configured only when MLflow is asked (:func:`chordrec.transcribe.load_model`)."""
    from chordrec.io.resolved_models import local_database
    from chordrec.transcribe import load_model

    return load_model(
        args.model,
        args.device,
        connect=lambda: configure_tracking(args),
        database=local_database(args.store, args.tracking_uri),
    )


def _ood(args: argparse.Namespace) -> int:
    from chordrec import ood

    songs = ood.songs_of(args.root, args.part, args.max_songs)
    if args.labs is not None:
        return _ood_labs(args, songs)
    model = _load_model(args)
    scored = ood.score_part(model, args.part, songs)
    headings = {
        "chord_as_n": "chord->N",
        "n_as_chord": "N->chord",
        "wrong_root": "wrong root",
        "wrong_at_change": "at change",
        "wrong_inverted": "inverted",
    }
    errors = tuple(headings)
    print(
        f"{'song':<16} {'majmin':>7} {'root':>7} {'frame':>7}  seconds"
        + "".join(f"  {heading:>10}" for heading in headings.values())
    )
    for name, song in scored.songs.items():
        print(
            f"{name:<16} {song.majmin:7.4f} {song.root:7.4f} {song.frame_acc:7.4f}"
            f"  {song.duration:7.1f}" + "".join(f"  {getattr(song, e):10.4f}" for e in errors)
        )
    prefix = ood.PREFIXES[args.part]
    per_song = scored.songs.values()
    frames = sum(s.frames for s in per_song)
    print(
        f"{'all':<16} "
        + " ".join(f"{scored.metrics[f'{prefix}/{key}']:7.4f}" for key in ood.KEYS)
        + f"  {sum(s.duration for s in per_song):7.1f}"
        + "".join(
            f"  {sum(getattr(s, e) * s.frames for s in per_song) / frames:10.4f}" for e in errors
        )
        + f"  ({len(scored.songs)} songs; {model.source}, {model.decode}"
        + (f" {model.self_transition:g}" if model.decode != "argmax" else "")
        + (f", at beats {model.beat_self_transition:g})" if model.decode == "beat_viterbi" else ")")
    )
    return 0


def _ood_labs(args: argparse.Namespace, songs: Sequence[tuple[Path, Path]]) -> int:
    """``chordrec ood --labs DIR``: score another tool's ``.lab`` files."""
    from chordrec import ood

    weighted, per_song = ood.score_lab_files(args.labs, songs)
    print(f"{'song':<16} {'majmin':>7} {'root':>7}  seconds")
    for name, (majmin, root, duration) in per_song.items():
        print(f"{name:<16} {majmin:7.4f} {root:7.4f}  {duration:7.1f}")
    print(
        f"{'all':<16} {weighted['majmin']:7.4f} {weighted['root']:7.4f}"
        f"  {sum(d for _, _, d in per_song.values()):7.1f}  ({len(per_song)} songs; {args.labs})"
    )
    return 0


def _print_failures(failed: Sequence[tuple[Path, str]], total: int) -> None:
    """The files a transcription could not do: one error line, or a list of them."""
    if total == 1 and failed:
        audio, message = failed[0]
        print(f"chordrec: error: {audio}: {message}", file=sys.stderr)
    elif failed:
        print(f"chordrec: error: {len(failed)} of {total} files failed:", file=sys.stderr)
        for audio, message in failed:
            print(f"  {audio}: {message}", file=sys.stderr)


def _audio_limits(seconds: float | None, samples: float | None) -> AudioLimits:
    """``--max-duration`` and ``--max-samples``, else the default limits; refuses a
    non-positive value naming its option."""
    from chordrec.audio.features import MAX_DURATION_S, MAX_SAMPLES, AudioLimits
    from chordrec.errors import ConfigError

    for option, value, unit in (
        ("--max-duration", seconds, "seconds"),
        ("--max-samples", samples, "samples"),
    ):
        if value is not None and not value > 0:  # NaN too
            raise ConfigError(f"{option} must be a positive number of {unit}, got {value:g}")
    return AudioLimits(
        MAX_DURATION_S if seconds is None else seconds,
        MAX_SAMPLES if samples is None else samples,
    )


def _format_from_suffix(output: Path | None) -> str:
    """The transcription format that ``-o``'s suffix names, else lab."""
    from chordrec.transcribe import FORMATS

    suffix = output.suffix.lstrip(".").lower() if output else ""
    return suffix if suffix in FORMATS else "lab"


def add_transcribe_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec transcribe`` to ``commands``."""
    transcribe = commands.add_parser(
        "transcribe",
        help="turn audio files into chord labels with a trained model",
        description=(
            "Transcribe audio files (WAV, FLAC, MP3, OGG, AIFF...; directories searched "
            "recursively) into chord labels. The model's config (level, sequence length, "
            "decoding) travels in its checkpoint. Results go beside each audio file unless "
            "-o or --out-dir says otherwise; existing files are kept unless --force. In a "
            "batch, failing files are listed at the end (exit status 1) and the others "
            "still finish."
        ),
    )
    transcribe.add_argument("inputs", nargs="+", help="audio files or directories")
    transcribe.add_argument(
        "-m",
        "--model",
        default=CHAMPION,
        help=(
            "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/model, a run "
            "id, a checkpoint .pt file, or 'templates' (training-free template matching) "
            "(default: %(default)s)"
        ),
    )
    transcribe.add_argument(
        "-o", "--output", type=Path, help="result file (a single input file only)"
    )
    transcribe.add_argument(
        "--out-dir", type=Path, help="directory for the results (input subdirectories mirrored)"
    )
    transcribe.add_argument(
        "--format",
        choices=["lab", "jams", "csv"],
        help="output format (default: from the -o suffix, else lab)",
    )
    transcribe.add_argument(
        "--plot", type=Path, help="PNG of chromagram and chords (a single input file only)"
    )
    transcribe.add_argument(
        "--force", action="store_true", help="replace existing outputs (never an input file)"
    )
    transcribe.add_argument(
        "--max-duration",
        type=float,
        metavar="SECONDS",
        help=(
            "refuse longer audio, read from the file header before decoding, so memory "
            "stays bounded (default: 1800 s = 30 min; inf: no limit)"
        ),
    )
    transcribe.add_argument(
        "--max-samples",
        type=float,
        metavar="N",
        help=(
            "refuse audio of more samples (frames x channels at the file's rate), read from "
            "the file header before decoding, so that decoding's memory stays bounded "
            "whatever the sample rate (default: 172800000 = 30 min of 48 kHz stereo; inf: "
            "no limit)"
        ),
    )
    transcribe.add_argument(
        "--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)"
    )
    transcribe.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=len(os.sched_getaffinity(0)),
        help=(
            "worker processes that decode audio and compute chroma while the model runs, "
            "for two files or more, and one for a single file a network reads while torch "
            "loads; 1: none (default: the CPUs available, %(default)s)"
        ),
    )
    add_tracking_options(transcribe)
    transcribe.add_argument("--quiet", action="store_true", help="no progress bar")
    transcribe.set_defaults(func=_transcribe)


def add_ood_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec ood`` to ``commands``."""
    scorer = commands.add_parser(
        "ood",
        help="score a model on the synthesized out-of-domain songs (make data builds them)",
        description=(
            "Transcribe a part of the out-of-domain set as `chordrec transcribe` would and "
            "score it against the songs' labels: majmin and root (mir_eval, weighted by "
            "duration) and frame accuracy, per song and in all. Choose models on the "
            "validation part; the test part is for reporting."
        ),
    )
    scorer.add_argument(
        "-m",
        "--model",
        default=CHAMPION,
        help="as for transcribe: registry, run, .pt file or 'templates' (default: %(default)s)",
    )
    scorer.add_argument("--part", choices=["validation", "test"], default="validation")
    scorer.add_argument(
        "--root", type=Path, default=OOD_DIR, help="the set's directory (default: %(default)s)"
    )
    scorer.add_argument("--max-songs", type=int, help="the first N songs of the part only")
    scorer.add_argument(
        "--labs",
        type=Path,
        metavar="DIR",
        help="score the .lab files in DIR instead of a model: another tool's output, one per "
        "song, named as the song's reference (test-000.lab); majmin and root only",
    )
    scorer.add_argument(
        "--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)"
    )
    add_tracking_options(scorer)
    scorer.set_defaults(func=_ood)
