"""Passwords stay out of everything chordrec writes: :func:`chordrec.tracking.redact`
knows every form, a password in a setting or an argument is refused before anything is
written, and a whole Optuna sweep on a password-protected PostgreSQL (a real cluster,
its password in the environment) leaves it in no file, no database row and no command
line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chordrec import tracking
from chordrec.server.postgres import LocalPostgres, PostgresError, postgres_bin_dir
from tests.conftest import QUICK, free_port, subprocess_env

SECRET = "S3cret-h2-pw"


def test_redact_hides_every_password_form() -> None:
    hidden = {
        "postgresql://u:S3cret@h:5432/db": "postgresql://u:***@h:5432/db",
        "postgresql://u:p%40ss@h/db": "postgresql://u:***@h/db",
        "postgresql://u:p@ss@h/db": "postgresql://u:***@h/db",  # an "@" left unquoted
        "postgresql+psycopg://u:pa/ss@h/db": "postgresql+psycopg://u:***@h/db",  # SQLAlchemy's
        "http://u:S3cret@h:5000": "http://u:***@h:5000",
        "postgresql://u@h/db?password=S3cret": "postgresql://u@h/db?password=***",
        "postgresql://u@h/db?sslmode=require&password=S3cret&x=1": (
            "postgresql://u@h/db?sslmode=require&password=***&x=1"
        ),
        "host=h password=S3cret dbname=db": "host=h password=*** dbname=db",
        "PGPASSWORD=S3cret psql": "PGPASSWORD=*** psql",
        "MLFLOW_TRACKING_PASSWORD='a b' x": "MLFLOW_TRACKING_PASSWORD=*** x",
        "optuna.storage='postgresql://u:S3cret@h/db' seed=1": (
            "optuna.storage='postgresql://u:***@h/db' seed=1"
        ),
    }
    assert {text: tracking.redact(text) for text in hidden} == hidden
    assert all(tracking.holds_password(text) for text in hidden)
    assert not any(tracking.holds_password(text) for text in hidden.values())
    for text in (
        "http://127.0.0.1:5000",
        "http://127.0.0.1:5000/#/experiments/1/runs/abc?x=y",
        "sqlite:////x/mlflow.db",
        "postgresql://u@h/db",
        "0.001",
        "PWD=/root",
        "tokenizer=x",
    ):
        assert tracking.redact(text) == text


def _train(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "chordrec.train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or subprocess_env(),
    )


def _files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` whose bytes hold ``secret``."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_password_in_a_setting_or_an_argument_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens: nothing may even try to connect
    url = f"postgresql://chordrec:{SECRET}@127.0.0.1:{port}/optuna"
    work = tmp_path / "work"
    work.mkdir()
    cases = {
        "hydra.sweeper.storage": _train(
            "-m",
            "hparams_search=optuna",
            f"hydra.sweeper.storage={url}",
            f"hydra.sweep.dir={work / 'sweep'}",
            f"tracking.store_dir={work / 'store'}",
            cwd=work,
        ),
        "tracking.uri": _train(
            f"tracking.uri='postgresql://chordrec@127.0.0.1:{port}/mlflow?password={SECRET}'",
            f"hydra.run.dir={work / 'run'}",
            f"tracking.store_dir={work / 'store'}",
            cwd=work,
        ),
        "optuna.storage": _train(  # through the environment into a setting: still a setting
            "optuna.storage='postgresql://chordrec:${oc.env:H2_PASSWORD}@127.0.0.1:1/optuna'",
            f"hydra.run.dir={work / 'env-run'}",
            f"tracking.store_dir={work / 'store'}",
            cwd=work,
            env=subprocess_env(H2_PASSWORD=SECRET),
        ),
    }
    table = subprocess.run(
        [sys.executable, "-m", "chordrec", "table", "--tracking-uri", f"http://u:{SECRET}@h:1"],
        cwd=work,
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert table.returncode == 2, table.stderr
    assert "a password in --tracking-uri (http://u:***@h:1)" in table.stderr
    for setting, process in cases.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1, (setting, err[-3000:])
        (line,) = err.strip().splitlines()
        assert line.startswith(f"chordrec.train: error: a password in {setting} ("), line
        assert "PGPASSWORD" in line and "Traceback" not in err
        assert SECRET not in out + err + table.stdout + table.stderr
    # refused before Hydra saved the config or a store was made: nothing was written
    assert list(work.iterdir()) == []


# ------------------------------------------------------------------ a sweep on PostgreSQL


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    """A fresh PostgreSQL cluster on a free 127.0.0.1 port whose user ``chordrec`` has a
    generated password, with the databases ``mlflow`` and ``optuna``; stopped and
    removed afterwards. Under /var/tmp: as root, PostgreSQL runs as ``postgres``."""
    try:
        postgres_bin_dir()
    except PostgresError as exc:
        pytest.skip(str(exc))
    parent = Path(tempfile.mkdtemp(prefix="chordrec-test-pg-", dir="/var/tmp"))
    parent.chmod(0o755)  # the postgres user passes through to the cluster chordrec makes
    cluster = LocalPostgres(parent / "postgres", free_port())
    try:
        cluster.open()
        with psycopg.connect(cluster.url(), autocommit=True) as connection:
            connection.execute("CREATE DATABASE optuna")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(parent, ignore_errors=True)


def _watch_command_lines(seen: set[tuple[int, str]], stop: threading.Event) -> None:
    """Add every process's id and command line (``/proc/*/cmdline``) to ``seen`` until
    ``stop``."""
    while not stop.is_set():
        for path in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                line = path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # the process ended
            seen.add((int(path.parent.name), line))
        stop.wait(0.1)


def _dump(cluster: LocalPostgres, database: str, password: str) -> str:
    """Every row of ``database``, as ``pg_dump`` writes it."""
    done = subprocess.run(
        [
            str(postgres_bin_dir() / "pg_dump"),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "chordrec",
            database,
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(PGPASSWORD=password),
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.system
@pytest.mark.integration
def test_a_sweep_on_a_password_protected_postgresql_writes_the_password_nowhere(
    postgres: LocalPostgres, data_root: Path, tmp_path: Path
) -> None:
    password = postgres.password_file.read_text().strip()
    host = f"127.0.0.1:{postgres.port}"
    settings = [
        "-m", "hparams_search=optuna", "hydra.sweeper.study_name=secret", "hydra.sweeper.n_trials=2",
        "hydra/sweeper/pruner=none", f"data.root={data_root}", "ood.part=null", "data.level=beat",
        "seq_len=16", *QUICK,
    ]  # fmt: skip
    seen: set[tuple[int, str]] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_command_lines, args=(seen, stop), daemon=True)
    watcher.start()
    try:
        # the way the issue found it: the password in the URLs, on the command line
        typed = _train(
            *settings,
            f"hydra.sweeper.storage=postgresql://chordrec:{password}@{host}/optuna",
            f"tracking.uri=postgresql://chordrec:{password}@{host}/mlflow",
            f"hydra.sweep.dir={tmp_path / 'typed'}",
            f"tracking.store_dir={tmp_path / 'store'}",
            cwd=tmp_path,
        )
        typed_out, typed_err = typed.communicate(timeout=600)
        # the documented way: libpq finds the password in PGPASSWORD; MLflow's URL is in
        # MLFLOW_TRACKING_URI, password and all
        swept = _train(
            *settings,
            f"hydra.sweeper.storage=postgresql://chordrec@{host}/optuna",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"tracking.store_dir={tmp_path / 'store'}",
            cwd=tmp_path,
            env=subprocess_env(
                PGPASSWORD=password,
                MLFLOW_TRACKING_URI=f"postgresql://chordrec:{password}@{host}/mlflow",
            ),
        )
        out, err = swept.communicate(timeout=600)
    finally:
        stop.set()
        watcher.join()
    assert swept.returncode == 0, err[-3000:]
    rows = _dump(postgres, "mlflow", password)
    optuna_rows = _dump(postgres, "optuna", password)

    # the password is nowhere: no file (sweep dirs, Hydra's files, logs, artifacts,
    # checkpoints, the local store), no database row, no output, no command line but the
    # one the user typed it on, which is refused at once
    texts = {
        "the mlflow database": rows,
        "the optuna database": optuna_rows,
        "the sweep's output": out + err,
        "the refused command's output": typed_out + typed_err,
        **{f"the command line of process {pid}": line for pid, line in seen if pid != typed.pid},
    }
    leaks = [str(p.relative_to(tmp_path)) for p in _files_holding(tmp_path, password)]
    leaks += [where for where, text in texts.items() if password in text]
    assert leaks == []
    assert typed.returncode == 1, typed_err[-3000:]
    assert "a password in hydra.sweeper.storage, tracking.uri (" in typed_err

    # and the sweep ran: two trials, a run each under the study's parent, checkpoints, and
    # Hydra's files; its process was seen
    assert "secret" in optuna_rows and rows.count("optuna_trial") >= 2
    checkpoints = [p.name for p in tmp_path.rglob("*.pt")]
    assert checkpoints.count("best.pt") == 2 and checkpoints.count("last.pt") == 2
    assert (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").exists()
    assert any(pid == swept.pid and "hydra.sweeper.storage" in line for pid, line in seen)
