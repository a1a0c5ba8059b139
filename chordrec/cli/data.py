"""``chordrec data``: fetch and verify the RWC-Pop data set; synthesize the
out-of-domain songs and the synthetic training songs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chordrec.constants import (
    DATA_DIR,
    OOD_DIR,
    OOD_SONGS_PER_PART,
    SYNTH_TRAIN_DIR,
    SYNTH_TRAIN_SONGS,
)


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
    from chordrec.synth_train import ensure_train_set

    try:
        dest = ensure_ood_set(
            args.dest,
            seed=args.seed,
            songs_per_part=args.songs_per_part,
            soundfonts=args.soundfont,
            force=args.force,
        )
        train = None
        if args.train_songs:
            train = ensure_train_set(
                args.train_dest,
                seed=args.seed,
                songs=args.train_songs,
                soundfonts=args.soundfont,
                force=args.force,
            )
    except SynthesisUnavailable as exc:
        if not args.optional:
            raise
        print(
            f"chordrec: skipped: {exc} (until then, runs skip out-of-domain scoring; "
            "data=rwc_pop+synth and data=synth need the training songs)",
            file=sys.stderr,
        )
        return 0
    print(f"out-of-domain set ready in {dest} (songs per part: {args.songs_per_part})")
    if train is not None:
        print(f"synthetic training set ready in {train} (songs: {args.train_songs})")
    return 0


def add_data_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec data`` (``fetch``, ``verify``, ``synth``) to ``commands``."""
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
        help=(
            "synthesize the out-of-domain evaluation songs and the synthetic training songs "
            "with exact chord labels (fluidsynth)"
        ),
        description=(
            "Draw songs from the seed, write their MIDI and .lab files and render them with "
            "fluidsynth into DEST/validation and DEST/test, with DEST/manifest.json; then "
            "the training songs into TRAIN_DEST: drawn apart from those, their chord "
            "instruments from programs the out-of-domain songs never use, stored as "
            "RWC-Pop's chroma/, chord/ and beat/ (computed from the rendered audio as "
            "chordrec transcribe computes them; the audio is not kept). A set already "
            "there whose manifest matches the settings and every file's sha256 is kept; "
            "one that does not match is rebuilt with --force (in a temporary directory, "
            "moved into place at the end). DEST and TRAIN_DEST may be missing, empty or "
            "such a set; any other folder is left alone. Needs the fluidsynth program and, "
            "unless --soundfont or $CHORDREC_SOUNDFONTS names others, the Debian packages "
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
        default=OOD_SONGS_PER_PART,
        help="songs in each part, validation and test (default: %(default)s)",
    )
    synth.add_argument(
        "--train-dest",
        type=Path,
        default=SYNTH_TRAIN_DIR,
        help="the training songs' directory (default: %(default)s)",
    )
    synth.add_argument(
        "--train-songs",
        type=int,
        default=SYNTH_TRAIN_SONGS,
        help="synthetic training songs, 30-90 s each; 0 builds none (default: %(default)s)",
    )
    synth.add_argument(
        "--force",
        action="store_true",
        help=(
            "rebuild a set in DEST or TRAIN_DEST that does not match these settings "
            "(never another folder)"
        ),
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
