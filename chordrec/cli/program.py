"""The ``chordrec`` program: its parser and :func:`main`.

Training itself is the Hydra entry point ``python -m chordrec.train`` (``chordrec
train`` forwards to it, as ``chordrec evaluate`` to ``python -m chordrec.evaluate``);
every other command is an argparse subcommand whose parser sits next to its handler in
this package. Each handler is one small function: parse, call the module that does the
work, print.
"""

from __future__ import annotations

import argparse
import gc
import logging
import subprocess
import sys
from collections.abc import Sequence

from chordrec import __version__
from chordrec.cli import data, results, servers, sweep, transcription
from chordrec.constants import DATA_DIR

FORWARDED = {"train": "chordrec.train", "evaluate": "chordrec.evaluate"}
"""Commands whose every argument belongs to another entry point (``--help`` included)."""


def _forward(command: str, arguments: Sequence[str]) -> int:
    return subprocess.call([sys.executable, "-m", FORWARDED[command], *arguments])


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


def build_parser() -> argparse.ArgumentParser:
    """The ``chordrec`` program's parser, every subcommand on it."""
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
    data.add_data_parser(commands)
    servers.add_ui_parser(commands)
    servers.add_server_parser(commands)
    _add_forwarded_parsers(commands)
    transcription.add_transcribe_parser(commands)
    transcription.add_ood_parser(commands)
    results.add_table_parser(commands)
    results.add_compare_parser(commands)
    results.add_study_parser(commands)
    results.add_register_parser(commands)
    sweep.add_sweep_parser(commands)
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
