"""``chordrec sweep show SWEEP``: what a sweep found, in the terminal.

Prints the summary that a sweep's parent run holds as ``summary.md``
(:mod:`chordrec.sweep_report`), rebuilt from MLflow now (so a sweep still running shows
its runs so far), then the MLflow UI's addresses of the parent run and of the compare
view of its five best runs. SWEEP is a sweep id (the runs' ``sweep_id`` tag, printed
when a multirun starts) or the id of a parent run (a sweep's or a study's).
"""

from __future__ import annotations

import argparse

from chordrec.cli.options import add_tracking_options, add_ui_url_option


def _show(args: argparse.Namespace) -> int:
    from chordrec import sweep_report, tracking

    uri = tracking.configure(args.store, args.tracking_uri)
    report = sweep_report.build_report(sweep_report.find_sweep(args.sweep, args.experiment))
    print(report.markdown)
    base_url = tracking.ui_base_url(uri, args.ui_url)
    for what, url in sweep_report.links(report, base_url).items():
        print(f"MLflow UI, {what}: {url}")
    return 0


def add_sweep_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``chordrec sweep show`` to ``commands``."""
    sweep = commands.add_parser("sweep", help="what a sweep found: its summary and UI links")
    actions = sweep.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print a sweep's summary and links to its parent run and best runs in the UI",
        description=(
            "Print what a sweep found, from MLflow now: its best run (objective val/frame_acc "
            "and test/frame_acc), how many runs finished, failed or were pruned, the "
            "factors ranked by their effect (an Optuna study's fANOVA importance, else the "
            "spread of each factor's level means) with each level's mean ± std, whether "
            "the winner's lead exceeds the seed-to-seed spread, and every run. Then the "
            "MLflow UI's page of its parent run and the compare view of its five best runs."
        ),
    )
    show.add_argument(
        "sweep", metavar="SWEEP", help="a sweep id (tag sweep_id) or a parent run's id"
    )
    add_ui_url_option(show)
    add_tracking_options(show, experiment=True)
    show.set_defaults(func=_show)
