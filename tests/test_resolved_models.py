"""What a registry or run name stood for in a local store, kept per user so that
``chordrec transcribe`` need not import MLflow again (chordrec.io.resolved_models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chordrec.errors import UserError
from chordrec.io import resolved_models
from chordrec.io.resolved_models import (
    Resolved,
    cache_dir,
    local_database,
    lookup,
    remember,
    store_stamp,
)

CHAMPION = "models:/chordrec@champion"


def settled(path: Path, seconds: float = 60) -> Path:
    """``path``, its modification time moved ``seconds`` back (past SETTLED_S)."""
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch) -> None:
    """Each test keeps its entries in a cache directory of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A database file last changed a minute ago."""
    path = tmp_path / "store" / "mlflow.db"
    path.parent.mkdir()
    path.write_bytes(b"SQLite format 3\0" + bytes(100))
    return settled(path)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "best.pt"
    path.write_bytes(os.urandom(4096))
    return path


def test_the_database_is_the_store_chordrec_would_use(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert local_database("mlruns") == tmp_path / "mlruns" / "mlflow.db"
    assert not (tmp_path / "mlruns").exists()  # nothing made to answer
    assert local_database("mlruns", f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/b.db")
    assert local_database("mlruns") == tmp_path / "b.db"
    assert local_database("mlruns", f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    for server in ("http://127.0.0.1:5000", "postgresql://u@127.0.0.1/db", "sqlite:///:memory:"):
        assert local_database("mlruns", server) is None


def test_a_missing_or_just_changed_database_is_not_kept(tmp_path, database, weights) -> None:
    assert store_stamp(tmp_path / "nothing.db") is None
    stamp = store_stamp(database)
    assert stamp is not None
    database.write_bytes(database.read_bytes() + b"x")  # changed just now
    assert store_stamp(database) is None
    remember(database, CHAMPION, None, Resolved("a" * 32, None, weights))
    assert not any(cache_dir().iterdir())
    assert lookup(database, CHAMPION, None) is None


def test_an_entry_holds_while_the_database_is_unchanged(database, weights) -> None:
    stamp = store_stamp(database)
    remember(database, CHAMPION, stamp, Resolved("a" * 32, 0.93, weights))
    kept = lookup(database, CHAMPION, store_stamp(database))
    assert kept is not None
    assert (kept.run_id, kept.self_transition) == ("a" * 32, 0.93)
    assert kept.checkpoint.read_bytes() == weights.read_bytes()
    assert kept.checkpoint.parent == cache_dir()
    assert lookup(database, "models:/chordrec/1", stamp) is None  # another name
    assert lookup(database.with_name("other.db"), CHAMPION, stamp) is None  # another store


def test_any_write_to_the_store_makes_the_entry_stale(database, weights) -> None:
    stamp = store_stamp(database)
    remember(database, CHAMPION, stamp, Resolved("a" * 32, None, weights))
    with open(database, "r+b") as handle:  # an alias moved: same size, new time
        handle.seek(20)
        handle.write(b"\1")
    settled(database, 120)
    assert store_stamp(database) != stamp
    assert lookup(database, CHAMPION, store_stamp(database)) is None
    wal = database.with_name("mlflow.db-wal")
    wal.write_bytes(b"log")  # a write-ahead log appears: stale too
    settled(wal)
    assert lookup(database, CHAMPION, store_stamp(database)) is None


@pytest.mark.parametrize("damage", ["checkpoint", "record", "missing"])
def test_a_damaged_entry_is_a_miss_never_a_wrong_model(database, weights, damage) -> None:
    stamp = store_stamp(database)
    remember(database, CHAMPION, stamp, Resolved("a" * 32, None, weights))
    (record,) = cache_dir().glob("*.json")
    if damage == "checkpoint":  # another model's weights under this name
        record.with_suffix(".pt").write_bytes(os.urandom(4096))
    elif damage == "record":
        record.write_text(record.read_text()[:40])
    else:
        record.with_suffix(".pt").unlink()
    assert lookup(database, CHAMPION, stamp) is None


def test_the_cache_is_a_directory_only_its_user_can_write(tmp_path) -> None:
    path = cache_dir()
    assert path == tmp_path / "xdg" / "chordrec" / "models"
    assert path.stat().st_mode & 0o777 == 0o700
    path.chmod(0o777)
    with pytest.raises(UserError, match="the model cache of uid .* XDG_CACHE_HOME"):
        cache_dir()
    path.rmdir()
    path.symlink_to(tmp_path)
    with pytest.raises(UserError, match=str(path)):
        cache_dir()


def test_keeping_fails_quietly_where_the_cache_cannot_be_written(
    database, weights, tmp_path, monkeypatch, caplog
) -> None:
    from chordrec.transcribe import _keep

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    _keep(database, CHAMPION, store_stamp(database), Resolved("a" * 32, None, weights))
    assert "could not keep what models:/chordrec@champion stands for" in caplog.text


_TRANSCRIBE = """
import sys
from chordrec.cli.program import main
code = main(sys.argv[1:])
print("MLFLOW", "mlflow" in sys.modules)
sys.exit(code)
"""


def _transcribe(work: Path, *args: str) -> tuple[str, bool]:
    """``chordrec transcribe song.wav`` in a fresh process with the store ``work/store``
    (no $MLFLOW_TRACKING_URI): the .lab written and whether MLflow was imported."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-c", _TRANSCRIBE, "transcribe", "song.wav", "-o", "out.lab"]
        + ["--force", "--quiet", "--store", "store", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return (work / "out.lab").read_text(), "MLFLOW True" in done.stdout


@pytest.mark.slow
def test_transcribe_asks_mlflow_once_until_the_champion_moves(tmp_path) -> None:
    """The champion of a real SQLite store: the first transcription imports MLflow and
    keeps the answer, the second does not import it and writes the same chords; once the
    alias moves to another run, MLflow is asked again and the new champion is used."""
    from chordrec import tracking
    from chordrec.audio.features import write_wav
    from chordrec.bench.startup import registered_champion
    from chordrec.bench.transcription import champion_checkpoint, synthetic_song

    store = tmp_path / "store"
    first = champion_checkpoint(tmp_path / "best.pt")
    registered_champion(store, first)
    write_wav(tmp_path / "song.wav", synthetic_song(8.0))
    settled(store / "mlflow.db")
    asked, imported = _transcribe(tmp_path)
    assert imported
    (record,) = _records()
    first_run = json.loads(record.read_text())["run_id"]
    kept, imported = _transcribe(tmp_path)
    assert not imported and kept == asked

    registered_champion(store, first)  # a second run, now the champion
    settled(store / "mlflow.db")
    _, imported = _transcribe(tmp_path)
    assert imported
    (record,) = _records()
    second_run = json.loads(record.read_text())["run_id"]
    assert second_run != first_run
    tracking.configure(store)
    assert tracking.registered_run_id(CHAMPION) == second_run
    _, imported = _transcribe(tmp_path, "-m", "templates")
    assert not imported


def _records() -> list[Path]:
    return sorted(cache_dir().glob("*.json"))


def test_the_module_imports_neither_mlflow_nor_torch() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {resolved_models.__name__}, sys; "
            "print(sorted(m for m in ('mlflow', 'torch') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
