"""Addresses in the MLflow UI: where the UI is, and its page comparing chosen runs.

Pure functions of strings: nothing here talks to MLflow or a server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote, urlsplit, urlunsplit

from chordrec.errors import ConfigError

DEFAULT_UI_URL = "http://127.0.0.1:5000"
"""Where ``chordrec ui`` serves the UI with its default ``--host`` and ``--port``."""

COMPARE_ROUTE = "#/compare-runs"
"""The UI's compare-runs page (MLflow 3's hash router: ``Routes.compareRuns``)."""

TRAINING_VIEW = "workflowType=machine_learning"
"""The query that opens MLflow 3's UI on its model-training pages. MLflow 3.17's UI takes
its mode from this parameter (or the mode last chosen in that browser), not from the
experiment's ``mlflow.experimentKind`` tag, and defaults to the GenAI overview; every
link chordrec prints carries it."""

CHART_METRIC = "val/acc"
"""The metric a comparison's chart view sorts the runs by."""


def ui_base_url(tracking_uri: str | None, ui_url: str | None = None) -> str:
    """The MLflow UI's address, without a trailing slash: ``ui_url`` if given; else the
    tracking server when ``tracking_uri`` is http(s) (user info, query and fragment left
    out); else :data:`DEFAULT_UI_URL`, where ``chordrec ui`` serves a local store.
    Raises :class:`~chordrec.errors.ConfigError` if ``ui_url`` is not an http(s) URL."""
    if ui_url is not None:
        if not _is_http(ui_url):
            raise ConfigError(f"--ui-url must be an http:// or https:// URL, got {ui_url!r}")
        return _site(ui_url)
    if tracking_uri and _is_http(tracking_uri):
        return _site(tracking_uri)
    return DEFAULT_UI_URL


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The runs of experiment ``experiment_id`` in the UI at ``base_url``."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """Run ``run_id``'s page in the UI at ``base_url``."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def compare_url(base_url: str, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> str:
    """The UI page at ``base_url`` that compares exactly ``run_ids`` in charts.

    For runs of one experiment: its runs page in chart mode, filtered to ``run_ids``
    and sorted by :data:`CHART_METRIC` (a sort by a metric also lists nested runs flat,
    so a sweep's runs are charted without their parent), with the metric charts in
    sections (``train``, ``val``, ``test``...). For runs of several experiments, the
    compare-runs page (:func:`compare_table_url`)."""
    experiments = list(dict.fromkeys(str(e) for e in experiment_ids))
    if len(experiments) != 1:
        return compare_table_url(base_url, run_ids, experiments)
    ids = ", ".join(f"'{run_id}'" for run_id in dict.fromkeys(run_ids))
    query = "&".join(
        [
            "compareRunsMode=CHART",
            f"searchFilter={quote(f'attributes.run_id IN ({ids})', safe='')}",
            f"orderByKey={quote(f'metrics.`{CHART_METRIC}`', safe='')}",
            "orderByAsc=false",
            TRAINING_VIEW,
        ]
    )
    return f"{base_url.rstrip('/')}/#/experiments/{experiments[0]}/runs?{query}"


def compare_table_url(base_url: str, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> str:
    """The UI's compare-runs page at ``base_url`` for ``run_ids`` (in that order) of the
    experiments ``experiment_ids`` (repeats dropped): params, metrics and tags in tables,
    and parallel-coordinates, scatter, box and contour plots. Each list is written as the
    UI writes it (``JSON.stringify``) and then percent-encoded, so that no character of
    it ends the URL in a terminal or a browser (the page decodes the query first)."""
    query = f"runs={_json_param(run_ids)}&experiments={_json_param(experiment_ids)}"
    return f"{base_url.rstrip('/')}/{COMPARE_ROUTE}?{query}&{TRAINING_VIEW}"


def _json_param(values: Sequence[str]) -> str:
    """``values`` (repeats dropped, order kept) as a compact JSON list, percent-encoded."""
    unique = list(dict.fromkeys(str(v) for v in values))
    return quote(json.dumps(unique, separators=(",", ":")), safe="")


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _site(url: str) -> str:
    """``url``'s scheme, host, port and path, without user info, query, fragment or a
    trailing slash."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
