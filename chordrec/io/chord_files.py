"""Chord files, read and written in one place: MIREX ``.lab``, JAMS and CSV.

Segments are ``intervals`` (segments, 2) in seconds, float64, with one Harte label
(``N``, ``C:maj``, ``A:min``...) per segment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

import chordrec


def read_lab(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Read a MIREX chord annotation (``.lab``): one ``start end label`` per line.

    Fields are separated by whitespace (spaces or tabs); times are in seconds. Blank
    lines and lines starting with ``#`` are skipped. The label is the rest of the
    line after the two times.

    Returns
    -------
    intervals : np.ndarray, shape (n, 2), float64
    labels : list[str], length n

    Raises
    ------
    ValueError
        For a malformed line (too few fields, a time that is not a finite number, an
        end before its start), as ``"<path>:<line number>: <problem>: '<line>'"``;
        or when the file holds no intervals.
    """
    intervals: list[tuple[float, float]] = []
    labels: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split(None, 2)

            def fail(problem: str, number: int = number, line: str = line) -> ValueError:
                return ValueError(f"{os.fspath(path)}:{number}: {problem}: {line!r}")

            if len(fields) < 3:
                raise fail(f"expected 'start end label', got {len(fields)} field(s)")
            try:
                start, end = float(fields[0]), float(fields[1])
            except ValueError:
                raise fail("start and end must be numbers (seconds)") from None
            if not (np.isfinite(start) and np.isfinite(end)):
                raise fail("start and end must be finite")
            if end < start:
                raise fail(f"end {end} is before start {start}")
            intervals.append((start, end))
            labels.append(fields[2])
    if not intervals:
        raise ValueError(f"{os.fspath(path)}: no intervals found")
    return np.asarray(intervals, dtype=np.float64), labels


def format_lab(intervals: np.ndarray, labels: Sequence[str]) -> str:
    """MIREX chord lab: one ``start end label`` line per segment, seconds, tab-separated."""
    return "".join(
        f"{s:.6f}\t{e:.6f}\t{lab}\n" for (s, e), lab in zip(intervals, labels, strict=True)
    )


def format_csv(intervals: np.ndarray, labels: Sequence[str]) -> str:
    """CSV with a header ``start,end,chord``, seconds."""
    rows = [f"{s:.6f},{e:.6f},{lab}\n" for (s, e), lab in zip(intervals, labels, strict=True)]
    return "start,end,chord\n" + "".join(rows)


def format_jams(
    intervals: np.ndarray, labels: Sequence[str], duration: float, title: str, source: str
) -> str:
    """A JAMS document (JSON) holding one ``chord`` annotation of the segments."""
    data = [
        {"time": float(s), "duration": float(e - s), "value": lab, "confidence": None}
        for (s, e), lab in zip(intervals, labels, strict=True)
    ]
    document = {
        "file_metadata": {
            "title": title,
            "artist": "",
            "release": "",
            "duration": float(duration),
            "identifiers": {},
            "jams_version": "0.3.4",
        },
        "annotations": [
            {
                "annotation_metadata": {
                    "curator": {"name": "", "email": ""},
                    "annotator": {},
                    "version": "",
                    "corpus": "",
                    "annotation_tools": f"chordrec {chordrec.__version__}",
                    "annotation_rules": "",
                    "validation": "",
                    "data_source": f"automatic transcription, model {source}",
                },
                "namespace": "chord",
                "data": data,
                "sandbox": {},
                "time": 0.0,
                "duration": float(duration),
            }
        ],
        "sandbox": {},
    }
    return json.dumps(document, indent=2) + "\n"
