"""Runs side by side in the terminal: what ``chordrec compare`` prints.

One column per run, headed by its short id and name; rows: its status, the settings
that differ between the runs (:func:`~chordrec.report.tables.run_factors`), then the
headline metrics in %, epochs (best epoch) and training time. A value a run lacks is
"-". Built from :class:`~chordrec.tracking.RunRecord` values only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chordrec.errors import ConfigError
from chordrec.report.tables import format_duration, run_factors
from chordrec.tracking import RunRecord

HEADLINE_METRICS = (
    "val/frame_acc",
    "test/frame_acc",
    "test/frame_acc_argmax",
    "test/frame_acc_viterbi",
    "test/majmin",
    "test/root",
)
"""Metrics (fractions) shown in %, one row each, labelled ``<metric> %``."""

MISSING = "-"
"""The cell of a value a run lacks."""

SHORT_ID = 8
"""Characters of a run id in a column's heading."""

MAX_CELL = 40
"""Longest cell or heading shown; longer ones are cut, ending in '...'."""


@dataclass(frozen=True)
class RunComparison:
    """Runs side by side: one column per run, one row per setting or metric."""

    run_ids: tuple[str, ...]
    """The runs, one per column, in the order they were given."""
    headings: tuple[tuple[str, str], ...]
    """Each column's heading: short run id and run name."""
    rows: dict[str, tuple[str, ...]]
    """Row label → one cell per run, in display order."""
    settings: tuple[str, ...]
    """The labels of the rows that are settings differing between the runs."""

    def text(self) -> str:
        """The comparison as plain text in aligned columns, ending in a newline."""
        lines = [
            ("", *(short for short, _ in self.headings)),
            ("", *(name for _, name in self.headings)),
            *((label, *cells) for label, cells in self.rows.items()),
        ]
        lines = [tuple(_cut(cell) for cell in line) for line in lines]
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        return "".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            + "\n"
            for line in lines
        )


def distinct_run_ids(run_ids: Sequence[str]) -> list[str]:
    """``run_ids`` with repeats dropped (order kept); raises
    :class:`~chordrec.errors.ConfigError` unless at least two remain."""
    unique = list(dict.fromkeys(run_ids))
    if len(unique) < 2:
        given = ", ".join(unique) or "none"
        raise ConfigError(f"compare needs at least 2 different run ids, got {given}")
    return unique


def compare_runs(records: Sequence[RunRecord]) -> RunComparison:
    """``records`` side by side (in their order): status, the settings that differ
    between them (:func:`~chordrec.report.tables.run_factors`: sweep overrides, or the
    config's params without bookkeeping keys), :data:`HEADLINE_METRICS` in %, epochs run
    (best epoch) and training time; a missing or NaN metric is :data:`MISSING`. Raises
    :class:`~chordrec.errors.ConfigError` for fewer than two different runs."""
    run_ids = distinct_run_ids([r.run_id for r in records])
    by_id = {r.run_id: r for r in records}
    runs = [by_id[run_id] for run_id in run_ids]
    factors = run_factors(runs)
    settings = tuple(factors[run_ids[0]])
    rows: dict[str, tuple[str, ...]] = {"status": tuple(r.status for r in runs)}
    for key in settings:
        rows[key] = tuple(factors[r.run_id][key] for r in runs)
    for key in HEADLINE_METRICS:
        rows[f"{key} %"] = tuple(_percent(_value(r, key)) for r in runs)
    rows["epochs (best)"] = tuple(_epochs(r) for r in runs)
    rows["training time"] = tuple(_train_time(r) for r in runs)
    headings = tuple((r.run_id[:SHORT_ID], r.run_name or MISSING) for r in runs)
    return RunComparison(tuple(run_ids), headings, rows, settings)


def _value(run: RunRecord, key: str) -> float | None:
    """Metric ``key`` of ``run``; None when missing or NaN."""
    value = run.metrics.get(key)
    return None if value is None or value != value else float(value)


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.2f}"


def _count(value: float | None) -> str:
    return MISSING if value is None else str(int(value))


def _epochs(run: RunRecord) -> str:
    """``epochs run (best epoch)``, each "-" when missing; "-" when both are."""
    epochs, best = _value(run, "fit/epochs_run"), _value(run, "fit/best_epoch")
    if epochs is None and best is None:
        return MISSING
    return f"{_count(epochs)} ({_count(best)})"


def _train_time(run: RunRecord) -> str:
    seconds = _value(run, "time/train_s")
    return MISSING if seconds is None else format_duration(seconds)


def _cut(cell: str) -> str:
    """``cell`` on one line and at most :data:`MAX_CELL` characters."""
    cell = " ".join(str(cell).split())
    return cell if len(cell) <= MAX_CELL else cell[: MAX_CELL - 3] + "..."
