"""The ``chordrec`` command: data, training, tracking UI and result tables.

Training itself is the Hydra entry point ``python -m chordrec.train`` (``chordrec
train`` forwards to it); everything else is an argparse subcommand here. Each command
is one small function: parse, call the module that does the work, print.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chordrec import __version__
from chordrec.allocator import keep_freed_memory
from chordrec.constants import (
    CHAMPION,
    DATA_DIR,
    EXPERIMENT,
    OOD_DIR,
    PRESETS,
    REGISTERED_MODEL,
    STORE_DIR,
)
from chordrec.sweep_command import add_sweep_parser

if TYPE_CHECKING:
    from chordrec.audio.features import AudioLimits

# ------------------------------------------------------------------------ commands


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


def _data_synth(args: argparse.Namespace) -> int:
    from chordrec.data.synthetic import SynthesisUnavailable, ensure_ood_set

    try:
        dest = ensure_ood_set(
            args.dest,
            seed=args.seed,
            songs_per_part=args.songs_per_part,
            soundfonts=args.soundfont,
            force=args.force,
        )
    except SynthesisUnavailable as exc:
        if not args.optional:
            raise
        print(
            f"chordrec: skipped: {exc} (until then, runs skip out-of-domain scoring)",
            file=sys.stderr,
        )
        return 0
    print(f"out-of-domain set ready in {dest} (songs per part: {args.songs_per_part})")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from chordrec import tracking

    command = tracking.ui_command(args.store, args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    tracking.configure(args.store, tracking.store_uri(args.store))  # the store it serves
    experiment = tracking.find_experiment_id(args.experiment)
    print(f"MLflow UI over {Path(args.store).resolve()} at {base} (Ctrl-C stops it)")
    if experiment is not None:
        print(
            f"training runs of experiment {args.experiment}: {tracking.experiment_url(base, experiment)}"
        )
    return _serve(command)


def _server(args: argparse.Namespace) -> int:
    from chordrec import tracking
    from chordrec.postgres import LocalPostgres

    _check_server_access(args)
    _check_server_extra(args)
    database = None
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # stop what started
    try:
        auth = None if args.auth is None else tracking.prepare_auth(args.auth)
        if args.postgres_dir is not None:
            cluster = LocalPostgres(args.postgres_dir, args.postgres_port)
            cluster.open()  # refuses a cluster that runs already, and leaves it running
            database = cluster  # started here: stopped with this server
            backend = database.url()
        else:
            backend = (
                args.backend_store_uri
                or os.environ.get("MLFLOW_BACKEND_STORE_URI")
                or tracking.store_uri(args.store)
            )
        if not backend.startswith("sqlite:"):
            tracking.check_database(backend)  # one line now, not minutes of retries
        command, env = tracking.tracking_server_command(
            backend, args.artifacts_dir, args.host, args.port, args.workers, auth
        )
        url = f"http://{args.host}:{args.port}"
        signing_in = (
            ""
            if auth is None
            else f"; every request needs a user and password (admin's: {auth.password_file}; "
            "clients set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
        )
        print(
            f"MLflow tracking server on {url} over {tracking.redact(backend)}, artifacts in "
            f"{Path(args.artifacts_dir).resolve()} (served through it); runs reach it with "
            f"tracking.uri={url}{signing_in}; Ctrl-C stops it",
            flush=True,
        )
        return _serve(command, env)
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if database is not None:
            database.stop()


def _check_server_access(args: argparse.Namespace) -> None:
    """Refuse, before anything starts, a server that others reach without signing in
    and a database password on the command line (which ``ps`` shows every user)."""
    from chordrec import tracking
    from chordrec.errors import ConfigError

    if args.auth is None and not _loopback(args.host):
        raise ConfigError(
            f"--host {args.host}: every machine that reaches it could read, change and "
            "delete runs and models, and replace the model chordrec transcribe loads "
            f"(models:/{REGISTERED_MODEL}@{CHAMPION}); add --auth DIR (MLflow's basic-auth "
            "app: every request needs a user and password, the admin's generated into "
            "DIR/admin-password)"
        )
    if args.backend_store_uri is not None and tracking.holds_password(args.backend_store_uri):
        raise ConfigError(
            f"--backend-store-uri holds a password ({tracking.redact(args.backend_store_uri)}): "
            "every user of this machine sees command lines (ps); give the URL in "
            "MLFLOW_BACKEND_STORE_URI instead, or the password in PGPASSWORD or ~/.pgpass"
        )


def _check_server_extra(args: argparse.Namespace) -> None:
    """Name the ``[server]`` extra, before anything starts, when this server needs a
    part of it that is not installed: psycopg for PostgreSQL, Flask-WTF for ``--auth``."""
    from chordrec.extras import require_extra

    backend = args.backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI") or ""
    if args.postgres_dir is not None or backend.startswith(("postgresql", "postgres:")):
        require_extra("server", "chordrec server on PostgreSQL", ("psycopg",))
    if args.auth is not None:
        require_extra("server", "chordrec server --auth", ("flask_wtf",))


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may stand for any interface


def _serve(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a server until it exits; Ctrl-C or SIGTERM stops it with us (no orphan)."""
    server = subprocess.Popen(command, env={**os.environ, **(env or {})})
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return server.wait()
    except KeyboardInterrupt:
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


FORWARDED = {"train": "chordrec.train", "evaluate": "chordrec.evaluate"}
"""Commands whose every argument belongs to another entry point (``--help`` included)."""


def _forward(command: str, arguments: Sequence[str]) -> int:
    return subprocess.call([sys.executable, "-m", FORWARDED[command], *arguments])


def _configure_tracking(args: argparse.Namespace) -> str:
    """Point MLflow at ``--tracking-uri``, else $MLFLOW_TRACKING_URI, else ``--store``."""
    from chordrec import tracking

    return tracking.configure(args.store, args.tracking_uri)


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
        from chordrec.transcribe import load_model, plan_jobs, transcribe_files

        keep_freed_memory()  # the model's large tensors reused song after song, not re-faulted

        jobs = plan_jobs(args.inputs, fmt, args.output, args.out_dir, args.plot)
        if model_kind(args.model) in ("registry", "run"):
            _configure_tracking(args)
        model = load_model(args.model, args.device)
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


def _ood(args: argparse.Namespace) -> int:
    from chordrec import ood
    from chordrec.transcribe import load_model, model_kind

    songs = ood.songs_of(args.root, args.part, args.max_songs)
    if model_kind(args.model) in ("registry", "run"):
        _configure_tracking(args)
    model = load_model(args.model, args.device)
    scored = ood.score_part(model, args.part, songs)
    errors = ("chord_as_n", "n_as_chord", "wrong_root")
    print(
        f"{'song':<16} {'majmin':>7} {'root':>7} {'frame':>7}  seconds"
        "  chord->N  N->chord  wrong root"
    )
    for name, song in scored.songs.items():
        print(
            f"{name:<16} {song.majmin:7.4f} {song.root:7.4f} {song.frame_acc:7.4f}"
            f"  {song.duration:7.1f}" + "".join(f"  {getattr(song, e):8.4f}" for e in errors)
        )
    prefix = ood.PREFIXES[args.part]
    per_song = scored.songs.values()
    frames = sum(s.frames for s in per_song)
    print(
        f"{'all':<16} "
        + " ".join(f"{scored.metrics[f'{prefix}/{key}']:7.4f}" for key in ood.KEYS)
        + f"  {sum(s.duration for s in per_song):7.1f}"
        + "".join(
            f"  {sum(getattr(s, e) * s.frames for s in per_song) / frames:8.4f}" for e in errors
        )
        + f"  ({len(scored.songs)} songs; {model.source}, {model.decode}"
        + (f" {model.self_transition:g})" if model.decode == "viterbi" else ")")
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


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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


def _register(args: argparse.Namespace) -> int:
    from chordrec import tracking

    _configure_tracking(args)
    version = tracking.register_run_model(args.run_id, args.name, args.alias)
    alias = f", alias {args.alias!r}" if args.alias else ""
    print(
        f"registered run {args.run_id} as {args.name} version {version}{alias}: "
        f"models:/{args.name}/{version}"
    )
    return 0


def _table(args: argparse.Namespace) -> int:
    from chordrec import study
    from chordrec.report.tables import IncompleteTableError

    try:
        table = study.publish_table(
            experiment=args.experiment,
            study_id=args.study,
            per_run=args.runs,
            fmt=args.format,
            out=args.out,
            store=args.store,
            tracking_uri=args.tracking_uri,
        )
    except IncompleteTableError as exc:
        print(f"chordrec table: incomplete table: {exc}", file=sys.stderr)
        return 1
    print(table.text, end="")
    print(table.note, file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from chordrec import tracking
    from chordrec.report.comparison import compare_runs, distinct_run_ids

    run_ids = distinct_run_ids(args.run_ids)
    base_url = tracking.ui_base_url(_configure_tracking(args), args.ui_url)
    records = tracking.runs_by_id(run_ids)
    print(compare_runs(records).text(), end="")
    experiments = [r.experiment_id for r in records]
    print(f"\nMLflow UI, charts: {tracking.compare_url(base_url, run_ids, experiments)}")
    print(f"MLflow UI, tables: {tracking.compare_table_url(base_url, run_ids, experiments)}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from chordrec import study

    started = study.start_study(
        args.presets.split(","),
        args.study_id,
        experiment=args.experiment,
        store=args.store,
        tracking_uri=args.tracking_uri,
    )
    print(started.headline, flush=True)
    outcome = study.run_study(started, args.jobs, args.overrides)
    for line in outcome.problems:
        print(line, file=sys.stderr)
    print(outcome.table, end="")
    return 0 if outcome.succeeded else 1


# ------------------------------------------------------------------------ parser


def _study_id(text: str) -> str:
    """argparse type of a study id (:func:`chordrec.tracking.check_study_id`)."""
    from chordrec import tracking

    try:
        return tracking.check_study_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tracking_uri(text: str) -> str:
    """argparse type of ``--tracking-uri``: any URI without a password
    (:func:`chordrec.tracking.refuse_password`)."""
    from chordrec import tracking
    from chordrec.errors import ConfigError

    try:
        tracking.refuse_password("--tracking-uri", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_tracking_options(
    parser: argparse.ArgumentParser, *, tracking_uri: bool = True, experiment: bool = False
) -> None:
    """Where a subcommand finds MLflow: ``--store`` (the local tracking store), unless
    ``tracking_uri`` is false ``--tracking-uri`` (any MLflow store or server, which takes
    precedence), and with ``experiment`` the ``--experiment`` to read and write."""
    if experiment:
        parser.add_argument(
            "--experiment", default=EXPERIMENT, help="MLflow experiment (default: %(default)s)"
        )
    parser.add_argument(
        "--store",
        type=Path,
        default=STORE_DIR,
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
            type=_tracking_uri,
            help=(
                "any MLflow tracking URI, without a password (default: $MLFLOW_TRACKING_URI, "
                "else the store)"
            ),
        )


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser(
        "data", help="fetch or verify the RWC-Pop data set; synthesize the out-of-domain songs"
    )
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help="download (or copy) the data set and verify every file's checksum",
        description=(
            "Put chroma/, chord/, beat/ and labs/ in DEST, each file verified against the "
            "checksums pinned in chordrec. Files go to a temporary directory first and move "
            "into DEST only when all have verified. DEST may be missing, empty or a copy "
            "of the data set (its SHA256SUMS as pinned); any other folder is left alone."
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
        "--dest", type=Path, default=DATA_DIR, help="target directory (default: %(default)s)"
    )
    fetch.add_argument(
        "--force",
        action="store_true",
        help="replace a copy of the data set in DEST that fails verification (never another folder)",
    )
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_data_fetch)
    verify = actions.add_parser("verify", help="check a local copy against the pinned checksums")
    verify.add_argument(
        "--root", type=Path, default=DATA_DIR, help="data directory (default: %(default)s)"
    )
    verify.set_defaults(func=_data_verify)
    synth = actions.add_parser(
        "synth",
        help="synthesize the out-of-domain evaluation songs with exact chord labels (fluidsynth)",
        description=(
            "Draw songs from the seed, write their MIDI and .lab files and render them with "
            "fluidsynth into DEST/validation and DEST/test, with DEST/manifest.json. A set "
            "already there whose manifest matches the settings and every file's sha256 is "
            "kept; one that does not match is rebuilt with --force (in a temporary "
            "directory, moved into place at the end). DEST may be missing, empty or such a "
            "set; any other folder is left alone. Needs the fluidsynth program and, unless "
            "--soundfont or $CHORDREC_SOUNDFONTS names others, the Debian packages "
            "fluid-soundfont-gm, timgm6mb-soundfont and musescore-general-soundfont-small."
        ),
    )
    synth.add_argument(
        "--dest", type=Path, default=OOD_DIR, help="target directory (default: %(default)s)"
    )
    synth.add_argument("--seed", type=int, default=0, help="the set's seed (default: %(default)s)")
    synth.add_argument(
        "--songs-per-part",
        type=int,
        default=16,
        help="songs in each part, validation and test (default: %(default)s)",
    )
    synth.add_argument(
        "--force",
        action="store_true",
        help="rebuild a set in DEST that does not match these settings (never another folder)",
    )
    synth.add_argument(
        "--soundfont",
        action="append",
        type=Path,
        metavar="PATH",
        help=(
            "a soundfont (.sf2, .sf3) to draw each song's from; repeat for more (default: "
            "$CHORDREC_SOUNDFONTS, paths separated by ':', else the three Debian ones)"
        ),
    )
    synth.add_argument(
        "--optional",
        action="store_true",
        help=(
            "where fluidsynth or a default soundfont is not installed, say so in one line "
            "and exit 0 instead of failing (make data)"
        ),
    )
    synth.set_defaults(func=_data_synth)


def _add_ui_parser(commands: argparse._SubParsersAction) -> None:
    ui = commands.add_parser("ui", help="open the MLflow UI over the tracking store")
    _add_tracking_options(ui, tracking_uri=False, experiment=True)
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default: %(default)s, this machine only)",
    )
    ui.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    ui.set_defaults(func=_ui)


def _add_server_parser(commands: argparse._SubParsersAction) -> None:
    server = commands.add_parser(
        "server",
        help="run a shared MLflow tracking server (PostgreSQL, artifacts served by it)",
        description=(
            "Run the MLflow tracking server a lab shares: runs and models in PostgreSQL "
            "(--postgres-dir DIR sets up and runs a local cluster in DIR, on 127.0.0.1 with "
            "a generated password stored 0600; or --backend-store-uri names any SQLAlchemy "
            "store; default: the local SQLite store), artifacts stored in --artifacts-dir "
            "and served through the server, so clients need no shared file system. Runs "
            "reach it with tracking.uri=http://HOST:PORT; its UI is at the same address. "
            "A server other machines reach (--host other than 127.0.0.1) needs --auth. "
            "Ctrl-C stops the server and the PostgreSQL it started."
        ),
    )
    _add_tracking_options(server, tracking_uri=False)
    source = server.add_mutually_exclusive_group()
    source.add_argument(
        "--postgres-dir",
        type=Path,
        metavar="DIR",
        help=(
            "a local PostgreSQL cluster in DIR: a new or empty directory the first time "
            "(chordrec changes no other directory's mode or owner), one server at a time"
        ),
    )
    source.add_argument(
        "--backend-store-uri",
        metavar="URI",
        help=(
            "any SQLAlchemy store without a password, e.g. postgresql://user@host:5432/mlflow "
            "with the password in PGPASSWORD or ~/.pgpass (a URL with its password goes in "
            "MLFLOW_BACKEND_STORE_URI, which is read when neither option is given)"
        ),
    )
    server.add_argument(
        "--postgres-port",
        type=int,
        default=5432,
        help="port of the local cluster (default: %(default)s)",
    )
    server.add_argument(
        "--artifacts-dir",
        type=Path,
        default=Path("mlartifacts"),
        help="where the server keeps artifacts (default: %(default)s)",
    )
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help=(
            "interface to bind (default: %(default)s, this machine only); any other, e.g. "
            "0.0.0.0 for a lab, needs --auth"
        ),
    )
    server.add_argument(
        "--auth",
        type=Path,
        metavar="DIR",
        help=(
            "MLflow's basic-auth app: every request needs a user and password; the users "
            "and the admin password (generated the first time, DIR/admin-password, mode "
            "0600) are kept in DIR (a new or empty directory the first time); clients set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        ),
    )
    server.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    server.add_argument("--workers", type=int, default=2, help="web workers (default: %(default)s)")
    server.set_defaults(func=_server)


def _add_forwarded_parsers(commands: argparse._SubParsersAction) -> None:
    """Listed for --help only: :func:`main` forwards these commands before parsing."""
    summaries = {
        "train": "train one model (Hydra overrides; same as python -m chordrec.train)",
        "evaluate": "re-score a run's best weights as a new run (RUN_ID [key=value ...])",
    }
    for command, module in FORWARDED.items():
        forwarded = commands.add_parser(
            command,
            help=summaries[command],
            description=f"Forwards every argument to `python -m {module}`; try `chordrec {command} --help`.",
            add_help=False,
        )
        forwarded.add_argument("arguments", nargs=argparse.REMAINDER)


def _add_transcribe_parser(commands: argparse._SubParsersAction) -> None:
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
        type=_positive_int,
        default=len(os.sched_getaffinity(0)),
        help=(
            "worker processes that decode audio and compute chroma while the model runs, "
            "for two files or more, and one for a single file a network reads while torch "
            "loads; 1: none (default: the CPUs available, %(default)s)"
        ),
    )
    _add_tracking_options(transcribe)
    transcribe.add_argument("--quiet", action="store_true", help="no progress bar")
    transcribe.set_defaults(func=_transcribe)


def _add_ood_parser(commands: argparse._SubParsersAction) -> None:
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
        "--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)"
    )
    _add_tracking_options(scorer)
    scorer.set_defaults(func=_ood)


def _add_table_parser(commands: argparse._SubParsersAction) -> None:
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


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="print runs side by side and the MLflow UI's compare view of them",
        description=(
            "Print two or more runs side by side, one column per run (short id and name): "
            "status, the settings that differ between them (sweep overrides, or config "
            "params), validation and test accuracy in % (argmax and Viterbi), test majmin "
            "and root WCSR, epochs (best epoch) and training time; '-' where a run lacks a "
            "value. Then two links into the MLflow UI: its chart view of exactly these runs "
            "(metric charts in sections, sorted by val/acc) and its compare-runs tables; on "
            "the tracking server when the tracking URI is http(s), else where `chordrec ui` "
            "serves the store (start it first), unless --ui-url names the UI."
        ),
    )
    compare.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="MLflow run ids (2 or more)")
    compare.add_argument(
        "--ui-url",
        metavar="URL",
        help=(
            "the MLflow UI's address for the printed link (default: the tracking server, "
            "else http://127.0.0.1:5000, where `chordrec ui` serves)"
        ),
    )
    _add_tracking_options(compare)
    compare.set_defaults(func=_compare)


def _add_study_parser(commands: argparse._SubParsersAction) -> None:
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
        "--presets",
        default=",".join(PRESETS),
        help="experiment presets, comma-separated (default: %(default)s)",
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


def _add_register_parser(commands: argparse._SubParsersAction) -> None:
    register = commands.add_parser(
        "register",
        help="put a run's model in the MLflow model registry",
        description=(
            "Register the model that a training run logged as a new version of a "
            "registered model, optionally pointing an alias at it (`chordrec transcribe` "
            f"uses {CHAMPION} by default)."
        ),
    )
    register.add_argument("run_id", help="MLflow run id of a training run")
    register.add_argument(
        "--name", default=REGISTERED_MODEL, help="registered model (default: %(default)s)"
    )
    register.add_argument("--alias", help="alias to point at the new version, e.g. champion")
    _add_tracking_options(register)
    register.set_defaults(func=_register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chordrec",
        description=(
            "Chord-recognition experiments on RWC-Pop chroma, tracked in MLflow.\n\n"
            "Typical session:\n"
            f"  chordrec data fetch                      # data set into {DATA_DIR}, verified\n"
            "  chordrec train model=crnn2 data.level=beat seq_len=32\n"
            "  chordrec ui                              # browse runs at http://127.0.0.1:5000"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chordrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data_parser(commands)
    _add_ui_parser(commands)
    _add_server_parser(commands)
    _add_forwarded_parsers(commands)
    _add_transcribe_parser(commands)
    _add_ood_parser(commands)
    _add_table_parser(commands)
    _add_compare_parser(commands)
    _add_study_parser(commands)
    _add_register_parser(commands)
    add_sweep_parser(commands, _add_tracking_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: this process's arguments, as the ``chordrec``
    program and ``python -m chordrec`` do: the process then ends, so its objects are
    frozen out of the garbage collector's last pass, which would take 0.3 s after torch)."""
    if argv is None:
        try:
            return main(sys.argv[1:])
        finally:
            gc.freeze()
    argv = list(argv)
    if argv[:1] and argv[0] in FORWARDED:
        return _forward(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
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
