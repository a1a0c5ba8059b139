"""The ``chordrec`` command: data, training, tracking UI and result tables.

Training itself is the Hydra entry point ``python -m chordrec.train`` (``chordrec
train`` forwards to it); everything else is an argparse subcommand here.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from chordrec import __version__

DEFAULT_DATA_DIR = Path("data/rwc-pop")


def _data_fetch(args: argparse.Namespace) -> int:
    from chordrec.fetch import default_source, fetch_dataset

    source = args.source or default_source()
    dest = fetch_dataset(source, args.dest, force=args.force, progress=not args.quiet)
    print(f"RWC-Pop data set ready and verified in {dest}")
    return 0


def _data_verify(args: argparse.Namespace) -> int:
    from chordrec.fetch import verify_dataset

    verify_dataset(args.root)
    print(f"{args.root}: all files match the pinned checksums")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from chordrec.tracking import server_command

    command = server_command(args.store, args.host, args.port, ui_only=True)
    print(
        f"MLflow UI over {Path(args.store).resolve()} at http://{args.host}:{args.port} (Ctrl-C stops it)"
    )
    return subprocess.call(command)


def _train(overrides: Sequence[str]) -> int:
    return subprocess.call([sys.executable, "-m", "chordrec.train", *overrides])


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
    ui.add_argument(
        "--store", type=Path, default=Path("mlruns"), help="store directory (default: %(default)s)"
    )
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
