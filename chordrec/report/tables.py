"""The report's Table 5, rebuilt from tracked runs only.

One column per experiment preset (a-f), filled from each preset's newest FINISHED
run: example counts (the report's 32-step chunks, and frames or beats), converged,
validation and test frame accuracy, training time, epochs, best epoch and the run
id, next to the report's own numbers and the difference. A cell that cannot be
filled is an error naming the run and the missing metric: never "N/A".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from chordrec.constants import PRESETS
from chordrec.tracking import RunRecord

# The report's Table 5; None where the report has an empty cell or "N/A".
REPORT: dict[str, dict[str, object]] = {
    "a": {
        "train": 834,
        "validation": 323,
        "test": 284,
        "converged": "yes",
        "val": 47.00,
        "test_acc": 50.83,
        "time": "10 min",
    },
    "b": {
        "train": 38637,
        "validation": 13668,
        "test": 13339,
        "converged": "yes",
        "val": 47.52,
        "test_acc": 50.70,
        "time": None,
    },
    "c": {
        "train": None,
        "validation": None,
        "test": None,
        "converged": "yes",
        "val": 40.35,
        "test_acc": 42.35,
        "time": None,
    },
    "d": {
        "train": None,
        "validation": None,
        "test": None,
        "converged": "no",
        "val": 12.75,
        "test_acc": 14.52,
        "time": "3 h",
    },
    "e": {
        "train": None,
        "validation": None,
        "test": None,
        "converged": "yes",
        "val": 33.73,
        "test_acc": 34.62,
        "time": "16 h",
    },
    "f": {
        "train": None,
        "validation": None,
        "test": None,
        "converged": "yes",
        "val": 48.03,
        "test_acc": 57.75,
        "time": "4 h",
    },
}
NOT_REPORTED = "(not reported)"

REQUIRED_METRICS = (
    "fit/converged",
    "val/frame_acc",
    "test/frame_acc",
    "time/train_s",
    "fit/epochs_run",
    "fit/best_epoch",
)
REQUIRED_SIZES = tuple(
    (part, what) for what in ("chunks32", "steps") for part in ("train", "validation", "test")
)
"""Split sizes (params ``sizes.<part>.<what>``) every column needs."""


OPTIONAL_ROWS = {
    "test/frame_acc_viterbi": "test accuracy % (Viterbi)",
    "test/majmin": "test majmin WCSR %",
    "test/root": "test root WCSR %",
    "test/seg": "test segmentation %",
}


class IncompleteTableError(ValueError):
    """A cell of the table cannot be filled from the tracked runs."""


@dataclass(frozen=True)
class Column:
    """One column of Table 5: a preset and the run that fills it."""

    preset: str
    run: RunRecord


def select_runs(runs: Sequence[RunRecord], presets: Sequence[str] = PRESETS) -> list[Column]:
    """The newest FINISHED run of each preset (tag ``preset``). Raises
    :class:`IncompleteTableError` for a preset with no finished run, naming the failed
    or unfinished runs it has."""
    columns, problems = [], []
    for preset in presets:
        mine = sorted(
            (r for r in runs if r.tags.get("preset") == preset), key=lambda r: -r.start_time
        )
        finished = [r for r in mine if r.status == "FINISHED"]
        if finished:
            columns.append(Column(preset, finished[0]))
        elif mine:
            states = ", ".join(f"run {r.run_id} is {r.status}" for r in mine)
            problems.append(f"preset {preset}: no FINISHED run ({states})")
        else:
            problems.append(f"preset {preset}: no run found")
    if problems:
        raise IncompleteTableError("; ".join(problems))
    return columns


def _metric(column: Column, key: str) -> float:
    value = column.run.metrics.get(key)
    if value is None or value != value:  # missing or NaN
        raise IncompleteTableError(
            f"run {column.run.run_id} (preset {column.preset}) has no metric {key!r}"
        )
    return float(value)


def _size(column: Column, part: str, what: str) -> int:
    value = column.run.params.get(f"sizes.{part}.{what}")
    if value is None:
        raise IncompleteTableError(
            f"run {column.run.run_id} (preset {column.preset}) has no param 'sizes.{part}.{what}'"
        )
    return int(value)


def format_duration(seconds: float) -> str:
    """``seconds`` as ``12 s``, ``3.4 min`` or ``2.50 h``."""
    minutes = seconds / 60
    return (
        f"{seconds:.0f} s"
        if seconds < 60
        else f"{minutes:.1f} min"
        if minutes < 120
        else f"{minutes / 60:.2f} h"
    )


def _report(preset: str, key: str) -> object:
    value = REPORT.get(preset, {}).get(key)
    if value is None:
        return NOT_REPORTED
    return f"{value:.2f}" if isinstance(value, float) else value


def _delta(ours: float, theirs: object) -> str:
    return f"{ours - float(theirs):+.2f}" if isinstance(theirs, int | float) else NOT_REPORTED


def build_table(columns: Sequence[Column]) -> pd.DataFrame:
    """Table 5 as a DataFrame: rows are the report's rows plus ours, columns the presets."""
    for column in columns:
        for key in REQUIRED_METRICS:
            _metric(column, key)
        for part, what in REQUIRED_SIZES:
            _size(column, part, what)
    table: dict[str, dict[str, object]] = {}
    for c in columns:
        level = c.run.params.get("data.level", "frame")
        unit = "beats" if level == "beat" else "frames"
        val, test = 100 * _metric(c, "val/frame_acc"), 100 * _metric(c, "test/frame_acc")
        table[c.preset] = {
            "what": f"{c.run.params.get('model_name', '?')}, {level} level, "
            f"L={c.run.params.get('seq_len', '?')}, {c.run.params.get('seq_mode', '?')}",
            "training examples (32-step chunks)": _size(c, "train", "chunks32"),
            "  report": _report(c.preset, "train"),
            "validation examples (32-step chunks)": _size(c, "validation", "chunks32"),
            "  report ": _report(c.preset, "validation"),
            "test examples (32-step chunks)": _size(c, "test", "chunks32"),
            "  report  ": _report(c.preset, "test"),
            "training / validation / test size": f"{_size(c, 'train', 'steps'):,} / "
            f"{_size(c, 'validation', 'steps'):,} / {_size(c, 'test', 'steps'):,} {unit}",
            "converged": "yes" if _metric(c, "fit/converged") else "no",
            "  report   ": _report(c.preset, "converged"),
            "validation accuracy %": f"{val:.2f}",
            "  report    ": _report(c.preset, "val"),
            "  difference (points)": _delta(val, REPORT.get(c.preset, {}).get("val")),
            "test accuracy %": f"{test:.2f}",
            "  report     ": _report(c.preset, "test_acc"),
            "  difference (points) ": _delta(test, REPORT.get(c.preset, {}).get("test_acc")),
            "training time": format_duration(_metric(c, "time/train_s")),
            "  report      ": _report(c.preset, "time"),
            "epochs run": int(_metric(c, "fit/epochs_run")),
            "best epoch": int(_metric(c, "fit/best_epoch")),
            "run id": c.run.run_id,
        }
    for key, label in OPTIONAL_ROWS.items():  # newer metrics: shown when every column has them
        if all(key in c.run.metrics for c in columns):
            for c in columns:
                table[c.preset][label] = f"{100 * c.run.metrics[key]:.2f}"
    return pd.DataFrame(table)


def render(table: pd.DataFrame, fmt: str = "md") -> str:
    """The table as Markdown (``md``), ``csv`` or ``html``."""
    shown = table.copy()
    shown.index = [label.rstrip() for label in shown.index]
    if fmt == "md":
        header = "| | " + " | ".join(shown.columns) + " |"
        rule = "|---" * (len(shown.columns) + 1) + "|"
        rows = [
            f"| {label} | " + " | ".join(str(v) for v in row) + " |"
            for label, row in zip(shown.index, shown.values, strict=True)
        ]
        return "\n".join([header, rule, *rows]) + "\n"
    if fmt == "csv":
        return shown.to_csv()
    if fmt == "html":
        return shown.to_html()
    raise ValueError(f"format must be md, csv or html, got {fmt!r}")


# --------------------------------------------------------------------------- run tables

RUN_COLUMNS = {
    "val/frame_acc_argmax": "val % (argmax)",
    "val/frame_acc_viterbi": "val % (Viterbi)",
    "test/frame_acc_argmax": "test % (argmax)",
    "test/frame_acc_viterbi": "test % (Viterbi)",
    "test/majmin": "test majmin %",
    "test/root": "test root %",
}
OOD_COLUMNS = {
    "ood_val/majmin": "OOD val majmin %",
    "ood_val/root": "OOD val root %",
    "ood_test/majmin": "OOD test majmin %",
    "ood_test/root": "OOD test root %",
}
"""Out-of-domain scores (:mod:`chordrec.ood`): shown when some run has them, ``-`` for a
run without (one logged before the out-of-domain set, or not scored on the test part)."""
BOOKKEEPING = ("study", "sweep", "table")  # tag ``kind`` of parent and table runs
# Settings that differ between runs without making them different experiments.
NOT_A_FACTOR = (
    "run_name",
    "resume",
    "tracking.",
    "paths.",
    "sizes.",
    "trainer.num_threads",
    "trainer.progress",
    "optuna.",
)


def run_factors(runs: Sequence[RunRecord]) -> dict[str, dict[str, str]]:
    """What sets ``runs`` apart: for each run id, the settings whose values differ between
    the runs. When every run comes from a Hydra sweep, these are the command-line overrides
    (tag ``sweep_overrides``, e.g. ``data.augment=none``); otherwise the MLflow params (the
    flattened config). Bookkeeping keys (:data:`NOT_A_FACTOR`: a run's name, an Optuna
    trial's number...) are left out of both. A missing key counts as a value ("-")."""
    if all("sweep_overrides" in r.tags for r in runs):
        given = {
            r.run_id: dict(o.partition("=")[::2] for o in r.tags["sweep_overrides"].split())
            for r in runs
        }
    else:
        given = {r.run_id: dict(r.params) for r in runs}
    settings = {
        run_id: {k: v for k, v in s.items() if not k.lstrip("+~").startswith(NOT_A_FACTOR)}
        for run_id, s in given.items()
    }
    keys = sorted({k for s in settings.values() for k in s})
    varying = [k for k in keys if len({s.get(k, "-") for s in settings.values()}) > 1]
    return {run_id: {k: s.get(k, "-") for k in varying} for run_id, s in settings.items()}


def build_run_table(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per FINISHED run of a sweep (oldest first): the settings that vary between
    the runs (:func:`run_factors`), accuracies in %, the out-of-domain scores some run
    has (:data:`OOD_COLUMNS`), epochs (best) and training time, indexed by run id.

    When the runs differ in ``seed`` only (replicates), mean and sample standard deviation
    rows follow. Raises :class:`IncompleteTableError` for no finished run or a run
    lacking a metric, naming it."""
    finished = sorted(
        (r for r in runs if r.status == "FINISHED" and r.tags.get("kind") not in BOOKKEEPING),
        key=lambda r: r.start_time,
    )
    if not finished:
        raise IncompleteTableError("no FINISHED run to tabulate")
    factors = run_factors(finished)
    ood = {k: v for k, v in OOD_COLUMNS.items() if any(k in r.metrics for r in finished)}
    rows: dict[str, dict[str, object]] = {}
    values: dict[str, list[float]] = {label: [] for label in [*RUN_COLUMNS.values(), *ood.values()]}
    for r in finished:
        column = Column(r.tags.get("preset", "?"), r)
        row: dict[str, object] = dict(factors[r.run_id])
        for key, label in RUN_COLUMNS.items():
            value = 100 * _metric(column, key)
            values[label].append(value)
            row[label] = f"{value:.2f}"
        for key, label in ood.items():
            found = r.metrics.get(key)
            if found is not None and found == found:
                values[label].append(100 * found)
            row[label] = "-" if found is None or found != found else f"{100 * found:.2f}"
        row["epochs (best)"] = (
            f"{int(_metric(column, 'fit/epochs_run'))} ({int(_metric(column, 'fit/best_epoch'))})"
        )
        row["training time"] = format_duration(_metric(column, "time/train_s"))
        rows[r.run_id] = row
    if len(finished) > 1 and list(factors[finished[0].run_id]) == ["seed"]:
        for name, stat in (("mean", pd.Series.mean), ("std", pd.Series.std)):
            rows[name] = {"seed": "-", "epochs (best)": "", "training time": ""}
            rows[name].update(
                {k: f"{stat(pd.Series(v)):.2f}" if v else "-" for k, v in values.items()}
            )
    return pd.DataFrame(rows).T.fillna("")
