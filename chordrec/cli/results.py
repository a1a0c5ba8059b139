"""``chordrec table``, ``compare``, ``study`` and ``register``: result tables, runs side
by side, the report's study, and the model registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chordrec.cli.options import (
    add_tracking_options,
    add_ui_url_option,
    configure_tracking,
    study_id_arg,
)
from chordrec.constants import CHAMPION, PRESETS, REGISTERED_MODEL


def _register(args: argparse.Namespace) -> int:
    from chordrec import tracking

    configure_tracking(args)
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
    base_url = tracking.ui_base_url(configure_tracking(args), args.ui_url)
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


def add_table_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec table`` to ``commands``."""
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
    table.add_argument("--study", type=study_id_arg, help="only the runs of this study id")
    table.add_argument(
        "--runs", action="store_true", help="one row per run (a sweep or seeds), not Table 5"
    )
    table.add_argument("--format", choices=("md", "csv", "html"), default="md")
    table.add_argument("--out", type=Path, help="also write the table to this file")
    add_tracking_options(table, experiment=True)
    table.set_defaults(func=_table)


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec compare`` to ``commands``."""
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
    add_ui_url_option(compare)
    add_tracking_options(compare)
    compare.set_defaults(func=_compare)


def add_study_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec study`` to ``commands``."""
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
        type=study_id_arg,
        help="the study's id: letters, digits, '.', '_', '-' (default: study-<date>-<time>)",
    )
    study.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="parallel runs (default: %(default)s, one torch thread each)",
    )
    add_tracking_options(study, experiment=True)
    study.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    study.set_defaults(func=_study)


def add_register_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec register`` to ``commands``."""
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
    add_tracking_options(register)
    register.set_defaults(func=_register)
