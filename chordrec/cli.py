"""The ``chordrec`` command: data, training, tracking UI and result tables.

Training itself is the Hydra entry point ``python -m chordrec.train`` (``chordrec
train`` forwards to it); everything else is an argparse subcommand here.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from chordrec import __version__

DEFAULT_DATA_DIR = Path("data/rwc-pop")


def _data_fetch(args: argparse.Namespace) -> int:
    from chordrec.data.fetch import default_source, fetch_dataset

    source = args.source or default_source()
    dest = fetch_dataset(source, args.dest, force=args.force, progress=not args.quiet)
    print(f"RWC-Pop data set ready and verified in {dest}")
    return 0


def _data_verify(args: argparse.Namespace) -> int:
    from chordrec.data.fetch import verify_dataset

    verify_dataset(args.root)
    print(f"{args.root}: all files match the pinned checksums")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from chordrec.tracking import server_command

    command = server_command(args.store, args.host, args.port, ui_only=True)
    print(
        f"MLflow UI over {Path(args.store).resolve()} at http://{args.host}:{args.port} (Ctrl-C stops it)"
    )
    server = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return server.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the server with us, not orphan it
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _train(overrides: Sequence[str]) -> int:
    return subprocess.call([sys.executable, "-m", "chordrec.train", *overrides])


def _configure_store(args: argparse.Namespace) -> str:
    """Point MLflow at ``--tracking-uri``, else $MLFLOW_TRACKING_URI, else ``--store``."""
    from chordrec.tracking import configure

    return configure(args.store, args.tracking_uri)


def _transcribe(args: argparse.Namespace) -> int:
    from chordrec.audio.features import MAX_DURATION_S
    from chordrec.errors import ConfigError
    from chordrec.transcribe import FORMATS, load_model, model_kind, plan_jobs, transcribe_files

    max_duration = MAX_DURATION_S if args.max_duration is None else args.max_duration
    if not max_duration > 0:  # NaN too
        raise ConfigError(
            f"--max-duration must be a positive number of seconds, got {max_duration:g}"
        )
    fmt = args.format
    if fmt is None:
        suffix = args.output.suffix.lstrip(".").lower() if args.output else ""
        fmt = suffix if suffix in FORMATS else "lab"
    jobs = plan_jobs(args.inputs, fmt, args.output, args.out_dir, args.plot)
    if model_kind(args.model) in ("registry", "run"):
        _configure_store(args)
    model = load_model(args.model, args.device)
    outcome = transcribe_files(
        jobs, model, fmt, force=args.force, progress=not args.quiet, max_duration=max_duration
    )
    for path in outcome.written:
        print(path)
    if len(jobs) == 1 and outcome.failed:
        audio, message = outcome.failed[0]
        print(f"chordrec: error: {audio}: {message}", file=sys.stderr)
    elif outcome.failed:
        print(
            f"chordrec: error: {len(outcome.failed)} of {len(jobs)} files failed:",
            file=sys.stderr,
        )
        for audio, message in outcome.failed:
            print(f"  {audio}: {message}", file=sys.stderr)
    return 1 if outcome.failed else 0


def _register(args: argparse.Namespace) -> int:
    from chordrec.tracking import register_run_model

    _configure_store(args)
    version = register_run_model(args.run_id, args.name, args.alias)
    alias = f", alias {args.alias!r}" if args.alias else ""
    print(
        f"registered run {args.run_id} as {args.name} version {version}{alias}: "
        f"models:/{args.name}/{version}"
    )
    return 0


def _table_text(runs, presets, fmt: str) -> str:
    from chordrec.report.tables import build_table, render, select_runs

    return render(build_table(select_runs(runs, presets)), fmt)


def _table(args: argparse.Namespace) -> int:
    from chordrec.report.tables import PRESETS, IncompleteTableError
    from chordrec.tracking import create_run_with_text, find_runs, log_text_to_run

    _configure_store(args)
    runs = find_runs(args.experiment, args.study)
    try:
        if args.runs:
            from chordrec.report.tables import build_run_table, render

            text = render(build_run_table(runs), args.format)
        else:
            text = _table_text(runs, PRESETS, args.format)
    except IncompleteTableError as exc:
        print(f"chordrec table: incomplete table: {exc}", file=sys.stderr)
        return 1
    artifact = f"{'runs' if args.runs else 'table5'}.{args.format}"
    parents = [r for r in runs if r.tags.get("kind") == "study"]
    if parents:
        log_text_to_run(parents[0].run_id, text, artifact)
        where = f"study run {parents[0].run_id}"
    else:
        name = f"{'runs' if args.runs else 'table5'} {args.study or args.experiment}"
        where = "run " + create_run_with_text(
            args.experiment, name, text, artifact, {"kind": "table"}
        )
    if args.out:
        from chordrec.io.atomic_write import write_atomic

        write_atomic(args.out, lambda tmp: tmp.write_text(text), force=True)
    print(text, end="")
    print(f"(logged as {artifact} in {where})", file=sys.stderr)
    return 0


def _study_id(text: str) -> str:
    """argparse type of a study id (:func:`chordrec.tracking.check_study_id`)."""
    from chordrec.tracking import check_study_id

    try:
        return check_study_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _study(args: argparse.Namespace) -> int:
    from chordrec.report.tables import IncompleteTableError
    from chordrec.tracking import end_parent_run, find_runs, log_text_to_run, start_parent_run

    store = args.store.resolve()
    uri = _configure_store(args)
    study_id = args.study_id or time.strftime("study-%Y%m%d-%H%M%S")
    presets = args.experiments.split(",")
    parent = start_parent_run(
        args.experiment, study_id, {"study": study_id, "kind": "study"}, store
    )
    print(f"study {study_id}: presets {', '.join(presets)}; parent MLflow run {parent}", flush=True)
    overrides = [
        "-m",
        f"experiment={','.join(presets)}",
        f"tracking.experiment={args.experiment}",
        f"tracking.store_dir={store}",
        f"+tracking.tags.study={study_id}",
        f"tracking.parent_run_id={parent}",
        f"hydra.sweep.dir=multirun/{study_id}",
    ]
    if args.jobs > 1:
        overrides += [
            "hydra/launcher=parallel",
            f"hydra.launcher.n_jobs={args.jobs}",
            "trainer.num_threads=1",  # one torch thread per job
            "trainer.progress=false",  # per-epoch log lines, not interleaved progress bars
        ]
    started = time.monotonic()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    code = subprocess.call(
        [sys.executable, "-m", "chordrec.train", *overrides, *args.overrides], env=env
    )
    wall = time.monotonic() - started
    runs = [r for r in find_runs(args.experiment, study_id) if r.tags.get("kind") != "study"]
    failed = [r for r in runs if r.status != "FINISHED"]
    for r in failed:
        print(
            f"study {study_id}: run {r.run_id} (preset {r.tags.get('preset')}) ended {r.status}: "
            f"{r.tags.get('error', 'no error recorded')}",
            file=sys.stderr,
        )
    try:
        text = _table_text(runs, presets, "md")
    except IncompleteTableError as exc:
        print(f"study {study_id}: incomplete table: {exc}", file=sys.stderr)
        end_parent_run(parent, succeeded=False)
        return 1
    text += f"\nStudy {study_id}: wall time {wall / 60:.1f} min.\n"
    log_text_to_run(parent, text, "table5.md")
    end_parent_run(parent, succeeded=not failed and code == 0)
    print(text, end="")
    return 0 if not failed and code == 0 else 1


def _add_tracking_options(
    parser: argparse.ArgumentParser, *, tracking_uri: bool = True, experiment: bool = False
) -> None:
    """Where a subcommand finds MLflow: ``--store`` (the local tracking store), unless
    ``tracking_uri`` is false ``--tracking-uri`` (any MLflow store or server, which takes
    precedence), and with ``experiment`` the ``--experiment`` to read and write."""
    if experiment:
        parser.add_argument(
            "--experiment", default="chordrec", help="MLflow experiment (default: %(default)s)"
        )
    parser.add_argument(
        "--store",
        type=Path,
        default=Path("mlruns"),
        help=(
            "local tracking store directory, unless --tracking-uri or $MLFLOW_TRACKING_URI "
            "names another store (default: %(default)s)"
            if tracking_uri
            else "local tracking store directory (default: %(default)s)"
        ),
    )
    if tracking_uri:
        parser.add_argument(
            "--tracking-uri",
            help="any MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the store)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chordrec",
        description=(
            "Chord-recognition experiments on RWC-Pop chroma, tracked in MLflow.\n\n"
            "Typical session:\n"
            "  chordrec data fetch                      # data set into data/rwc-pop, verified\n"
            "  chordrec train model=crnn2 data.level=beat seq_len=32\n"
            "  chordrec ui                              # browse runs at http://127.0.0.1:5000"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chordrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser("data", help="fetch or verify the RWC-Pop data set")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_commands.add_parser(
        "fetch",
        help="download (or copy) the data set and verify every file's checksum",
        description=(
            "Put chroma/, chord/, beat/ and labs/ in DEST, each file verified against the "
            "checksums pinned in chordrec. Files go to a temporary directory first and move "
            "into DEST only when all have verified."
        ),
    )
    fetch.add_argument(
        "--source",
        help=(
            "'github' (the upstream repositories at pinned commits), a local directory, a "
            "file:// URL or an http(s):// mirror with the data set's layout "
            "(default: $CHORDREC_DATA_SOURCE, else github)"
        ),
    )
    fetch.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="target directory (default: %(default)s)",
    )
    fetch.add_argument(
        "--force", action="store_true", help="replace an existing copy that fails verification"
    )
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_data_fetch)
    verify = data_commands.add_parser(
        "verify", help="check a local copy against the pinned checksums"
    )
    verify.add_argument(
        "--root", type=Path, default=DEFAULT_DATA_DIR, help="data directory (default: %(default)s)"
    )
    verify.set_defaults(func=_data_verify)

    ui = commands.add_parser("ui", help="open the MLflow UI over the tracking store")
    _add_tracking_options(ui, tracking_uri=False)
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default: %(default)s, this machine only)",
    )
    ui.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    ui.set_defaults(func=_ui)

    train = commands.add_parser(
        "train",
        help="train one model (Hydra overrides; same as python -m chordrec.train)",
        description="Forwards every argument to `python -m chordrec.train`; try `chordrec train --help`.",
        add_help=False,
    )
    train.add_argument("overrides", nargs=argparse.REMAINDER)

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
        default="models:/chordrec@champion",
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
        "--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)"
    )
    _add_tracking_options(transcribe)
    transcribe.add_argument("--quiet", action="store_true", help="no progress bar")
    transcribe.set_defaults(func=_transcribe)

    table = commands.add_parser(
        "table",
        help="rebuild the report's Table 5 from MLflow (no N/A: exits 1 if a cell is missing)",
        description=(
            "Print Table 5 (one column per preset a-f: example counts, converged, validation and "
            "test accuracy, training time, epochs, best epoch, run id, the report's numbers and "
            "the difference) from the newest FINISHED run of each preset, and log it as an "
            "artifact. Exits 1, naming the run and the metric, if any cell cannot be filled. "
            "With --runs: one row per FINISHED run instead (a sweep's results: the settings "
            "that vary between the runs, argmax and Viterbi accuracy, majmin and root WCSR, "
            "epochs, training time), with mean and std rows when the runs differ in seed only."
        ),
    )
    table.add_argument("--study", type=_study_id, help="only the runs of this study id")
    table.add_argument(
        "--runs", action="store_true", help="one row per run (a sweep or seeds), not Table 5"
    )
    table.add_argument("--format", choices=("md", "csv", "html"), default="md")
    table.add_argument("--out", type=Path, help="also write the table to this file")
    _add_tracking_options(table, experiment=True)
    table.set_defaults(func=_table)

    study = commands.add_parser(
        "study",
        help="run the report's experiments a-f as one study, then print Table 5",
        description=(
            "Runs the presets as one Hydra multirun into one MLflow experiment, nested under a "
            "parent run tagged study=<id>, then builds and logs Table 5. A failed member run is "
            "reported (exit 1); the others still finish. Extra arguments are Hydra overrides "
            "for every member, e.g. split.max_songs=2 trainer.max_epochs=1."
        ),
    )
    study.add_argument(
        "--experiments", default="a,b,c,d,e,f", help="presets (default: %(default)s)"
    )
    study.add_argument(
        "--study-id",
        type=_study_id,
        help="the study's id: letters, digits, '.', '_', '-' (default: study-<date>-<time>)",
    )
    study.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="parallel runs (default: %(default)s, one torch thread each)",
    )
    _add_tracking_options(study, experiment=True)
    study.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    study.set_defaults(func=_study)

    register = commands.add_parser(
        "register",
        help="put a run's model in the MLflow model registry",
        description=(
            "Register the model that a training run logged as a new version of a "
            "registered model, optionally pointing an alias at it (`chordrec transcribe` "
            "uses models:/chordrec@champion by default)."
        ),
    )
    register.add_argument("run_id", help="MLflow run id of a training run")
    register.add_argument(
        "--name", default="chordrec", help="registered model (default: %(default)s)"
    )
    register.add_argument("--alias", help="alias to point at the new version, e.g. champion")
    _add_tracking_options(register)
    register.set_defaults(func=_register)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # everything after `train` belongs to Hydra, --help included
        return _train(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"chordrec: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
