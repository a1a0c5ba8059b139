"""The per-user file of models resolved from a local tracking store: what a registry or
run name (``models:/chordrec@champion``) stood for the last time MLflow was asked.

Finding a registered model means importing MLflow and opening its store, which is most
of a short ``chordrec transcribe``'s start-up. For a local SQLite store the answer can
be kept: an entry holds the run id, the run's tuned Viterbi self-transition and a copy
of its best checkpoint, and stays valid exactly as long as the store's database file
is unchanged (its inode, size and modification time, and those of its write-ahead log
where there is one). Any write to the store (an alias moved, a run logged) changes
them, so the next lookup misses and MLflow is asked again. A database modified in the
last :data:`SETTLED_S` seconds is not trusted (file times are coarse): nothing is kept.
Server stores are never kept.

Entries live in ``$XDG_CACHE_HOME/chordrec/models`` (``~/.cache/...`` by default), a
directory only its user can write, one JSON file and one checkpoint per (database,
name), each written atomically; the JSON names the checkpoint's SHA-256, so a torn or
altered copy is a miss, never a wrong model. Deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from chordrec.constants import chosen_tracking_uri
from chordrec.file_locks import private_directory
from chordrec.io.atomic_write import write_atomic

SETTLED_S = 2.0
"""A database whose last change is younger than this (seconds) is not kept."""

_FORMAT = 1


@dataclass(frozen=True)
class Resolved:
    """What a name stood for: its ``run_id``, the run's tuned ``self_transition`` (None
    when it has none) and the local ``checkpoint`` copy of its best weights."""

    run_id: str
    self_transition: float | None
    checkpoint: Path


def local_database(store_dir: str | Path, tracking_uri: str | None = None) -> Path | None:
    """The SQLite file of the store chordrec's tracking would use
    (:func:`~chordrec.constants.chosen_tracking_uri`, as
    :func:`chordrec.tracking.configure` chooses it), or None when that store is not a
    local SQLite file (a server, PostgreSQL). Makes nothing."""
    uri = chosen_tracking_uri(store_dir, tracking_uri)
    if uri.startswith("sqlite:///") and "?" not in uri and uri != "sqlite:///:memory:":
        return Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
    return None


def store_stamp(database: Path) -> str | None:
    """The state of ``database`` an entry is valid for (inode, size and modification
    time of the file and of its ``-wal`` log), or None when it does not exist or changed
    less than :data:`SETTLED_S` seconds ago. Take it before asking MLflow, so that a
    change while MLflow answers makes the entry stale."""
    parts = []
    for path in (database, database.with_name(database.name + "-wal")):
        try:
            info = path.stat()
        except FileNotFoundError:
            if path == database:
                return None
            continue
        if time.time() - info.st_mtime < SETTLED_S:
            return None
        parts.append(f"{path.name}:{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/chordrec/models`` (default ``~/.cache/chordrec/models``), made
    and checked by :func:`~chordrec.file_locks.private_directory`."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return private_directory(
        root / "chordrec" / "models",
        "the model cache",
        "set XDG_CACHE_HOME to a directory of your own",
    )


def _entry(database: Path, name: str) -> Path:
    """The JSON file of (``database``, ``name``); its checkpoint has the suffix ``.pt``."""
    key = hashlib.sha256(f"{database}\n{name}".encode()).hexdigest()[:32]
    return cache_dir() / f"{key}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lookup(database: Path, name: str, stamp: str | None) -> Resolved | None:
    """What ``name`` stood for in ``database`` when it was last in the state ``stamp``
    (:func:`store_stamp`), or None: no entry, another state, or a checkpoint copy
    that is missing or not the one recorded."""
    if stamp is None:
        return None
    entry = _entry(database, name)
    try:
        record = json.loads(entry.read_text())
        if record.get("format") != _FORMAT or record.get("stamp") != stamp:
            return None
        if record.get("database") != str(database) or record.get("name") != name:
            return None
        checkpoint = entry.with_suffix(".pt")
        if _sha256(checkpoint) != record["sha256"]:
            return None
        tuned = record["self_transition"]
        return Resolved(str(record["run_id"]), None if tuned is None else float(tuned), checkpoint)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(database: Path, name: str, stamp: str | None, resolved: Resolved) -> None:
    """Keep ``resolved`` (its checkpoint copied) as what ``name`` stands for in
    ``database`` in the state ``stamp``; nothing when ``stamp`` is None."""
    if stamp is None:
        return
    entry = _entry(database, name)
    digest = _sha256(resolved.checkpoint)  # of the source: a copy another process
    copy = entry.with_suffix(".pt")  # puts in place meanwhile is then a miss
    write_atomic(copy, lambda tmp: shutil.copyfile(resolved.checkpoint, tmp), force=True)
    record = {
        "format": _FORMAT,
        "database": str(database),
        "name": name,
        "stamp": stamp,
        "run_id": resolved.run_id,
        "self_transition": resolved.self_transition,
        "sha256": digest,
    }
    write_atomic(entry, lambda tmp: tmp.write_text(json.dumps(record, indent=1)), force=True)
