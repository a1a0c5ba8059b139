"""Options and argparse types that several ``chordrec`` commands share: where MLflow is
(``--store``, ``--tracking-uri``, ``--experiment``), a study id, a positive count."""

from __future__ import annotations

import argparse
from pathlib import Path

from chordrec.constants import EXPERIMENT, STORE_DIR


def configure_tracking(args: argparse.Namespace) -> str:
    """Point MLflow at ``--tracking-uri``, else $MLFLOW_TRACKING_URI, else ``--store``."""
    from chordrec import tracking

    return tracking.configure(args.store, args.tracking_uri)


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def study_id_arg(text: str) -> str:
    """The argparse type of a study id (:func:`chordrec.tracking.check_study_id`)."""
    from chordrec import tracking

    try:
        return tracking.check_study_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tracking_uri_arg(text: str) -> str:
    """The argparse type of ``--tracking-uri``: any URI without a password
    (:func:`chordrec.tracking.refuse_password`)."""
    from chordrec import tracking
    from chordrec.errors import ConfigError

    try:
        tracking.refuse_password("--tracking-uri", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_tracking_options(
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
            type=tracking_uri_arg,
            help=(
                "any MLflow tracking URI, without a password (default: $MLFLOW_TRACKING_URI, "
                "else the store)"
            ),
        )


def add_ui_url_option(parser: argparse.ArgumentParser) -> None:
    """``--ui-url``: the MLflow UI's address for the links a command prints."""
    parser.add_argument(
        "--ui-url",
        metavar="URL",
        help=(
            "the MLflow UI's address for the printed links (default: the tracking server, "
            "else http://127.0.0.1:5000, where `chordrec ui` serves)"
        ),
    )
