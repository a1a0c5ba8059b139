"""Tracking-store load benchmark: concurrent training runs and a tight metric loop.

    python -m chordrec.bench.tracking [--runs 8] [--epochs 2] [--data data/rwc-pop]

For each of three stores, all on 127.0.0.1 and all started and stopped here, in a
temporary directory under ``/var/tmp``:

- ``sqlite``: the default file store (``tracking.store_dir=<tmp>``: SQLite database and
  artifacts on the local disk, every process writing the database itself);
- ``server-sqlite``: ``mlflow server --serve-artifacts`` over a SQLite database, as
  :func:`chordrec.tracking.tracking_server_command` builds it (two web workers);
- ``server-postgres``: the same server over a local PostgreSQL
  (:class:`chordrec.server.postgres.LocalPostgres`).

the benchmark launches ``--runs`` concurrent short training runs (``python -m
chordrec.train`` on two songs at beat level, ``--epochs`` epochs, one torch thread,
experiment ``bench-<store>``), and, for as long as they run, one client thread in
this process that logs a metric to one run of its own in a tight loop
(``MlflowClient.log_metric``, step = call number, each call timed with
:func:`time.perf_counter`, no retries).

What it reports per store:

- runs finished: training runs whose status is FINISHED;
- points lost: per-epoch metric points missing (or duplicated) plus tight-loop points
  missing (or whose call failed); every training run must have each of ``train/loss``,
  ``train/acc``, ``train/lr``, ``val/loss``, ``val/acc``, ``time/epoch_s`` at exactly the
  steps ``1..fit/epochs_run``, and the tight-loop run exactly one point per call;
- writes/s, p50 ms, p99 ms: the tight-loop client's successful calls per second of the
  loop, and the median and 99th percentile latency of one ``log_metric`` call;
- logging per epoch s: the time logging adds to an epoch. ``time/epoch_s`` is the
  training loop's own measure of an epoch (training plus validation, nothing else).
  An epoch's ``val/acc`` is logged (with a client timestamp, stored by the store) after
  its checkpoints are written locally and uploaded, in one batch with the epoch's other
  metrics. So the gap between the ``val/acc`` timestamps of epochs k-1 and k is epoch
  k's ``time/epoch_s`` plus what the run did besides training: logging epoch k-1's
  metrics, writing and uploading epoch k's checkpoints. ``gap - time/epoch_s``,
  averaged over every run and every epoch after the first, is that added time
  (timestamps have millisecond resolution). It needs ``--epochs`` of at least 2.

It prints what is missing, or ``lost: 0``, then the machine, the command and one
Markdown table; it exits 1 if any point was lost or any run did not finish.

The runs share the machine's cores with the servers and the client thread, so the
numbers measure the store under this load on this machine, not the store alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chordrec import tracking
from chordrec.constants import DATA_DIR
from chordrec.server.postgres import LocalPostgres

STORES = ("sqlite", "server-sqlite", "server-postgres")
"""The stores benchmarked, in order."""

EPOCH_METRICS = ("train/loss", "train/acc", "train/lr", "val/loss", "val/acc", "time/epoch_s")
"""The metrics every training run logs once per epoch."""

LOOP_METRIC = "bench/loop"
"""The tight-loop client's metric."""

RUN_TIMEOUT_S = 900.0
"""How long one store's training runs may take before they are killed."""


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on: bound once by the OS, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_ENVIRONMENT = dict(os.environ)
"""This process's environment as it started (before :func:`tracking.configure` set
MLflow's request retries in it)."""


def child_env(**extra: str) -> dict[str, str]:
    """This process's starting environment without ``MLFLOW_TRACKING_URI``, plus ``extra``."""
    env = {k: v for k, v in _ENVIRONMENT.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(extra)
    return env


@dataclass
class Store:
    """Where one store's runs log: the URI its clients use and the training overrides
    that point a run at it."""

    name: str
    uri: str
    overrides: list[str]
    store_dir: Path | None = None


@contextmanager
def mlflow_server(backend_uri: str, directory: Path) -> Iterator[str]:
    """An ``mlflow server`` over ``backend_uri`` with its artifacts in ``directory``,
    on a free 127.0.0.1 port; yields its URL, stops it (and its workers) on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command, env = tracking.tracking_server_command(
        backend_uri, directory / "artifacts", "127.0.0.1", port
    )
    log = directory / "server.log"
    with open(log, "a") as out:
        server = subprocess.Popen(
            command, env=child_env(**env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=directory,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no MLflow server on {url}: {log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@contextmanager
def open_store(name: str, directory: Path) -> Iterator[Store]:
    """Start store ``name`` (one of :data:`STORES`) in ``directory``; stop it on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    if name == "sqlite":
        store_dir = directory / "store"
        yield Store(
            name, tracking.store_uri(store_dir), [f"tracking.store_dir={store_dir}"], store_dir
        )
        return
    local = [f"tracking.store_dir={directory / 'local'}"]  # checkpoints in progress
    if name == "server-sqlite":
        with mlflow_server(tracking.store_uri(directory / "db"), directory) as url:
            yield Store(name, url, [f"tracking.uri={url}", *local])
        return
    if name == "server-postgres":
        postgres = LocalPostgres(directory / "postgres", free_port())
        try:
            postgres.open()
            with mlflow_server(postgres.url(), directory) as url:
                yield Store(name, url, [f"tracking.uri={url}", *local])
        finally:
            postgres.stop()
        return
    raise ValueError(f"unknown store {name!r}")


@dataclass
class LoopClient:
    """A thread logging :data:`LOOP_METRIC` to one run in a tight loop until stopped."""

    client: Any
    run_id: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        """Start sampling in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and wait for the sampler to end."""
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            step = self.calls
            self.calls += 1
            before = time.perf_counter()
            try:
                self.client.log_metric(self.run_id, LOOP_METRIC, float(step), step=step)
            except Exception as exc:  # MlflowException, connection errors: counted as lost
                self.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            self.latencies.append(time.perf_counter() - before)
        self.seconds = time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def last_error(output: str) -> str:
    """The last exception line of a failed run's ``output`` (cut to 400 characters),
    else its last 800 characters."""
    found = re.findall(r"^[\w.]*(?:Error|Exception)\b.*$", output, re.M)
    return found[-1][:400] if found else output[-800:]


def training_command(store: Store, data: Path, epochs: int, hydra_dir: Path) -> list[str]:
    """The command line of one short training run logging to ``store``."""
    return [
        sys.executable, "-m", "chordrec.train",
        "split.max_songs=2", "data.level=beat", "seq_len=16", f"trainer.max_epochs={epochs}",
        "trainer.num_threads=1", "trainer.progress=false", "tracking.log_model=false",
        "tracking.system_metrics=false", f"tracking.experiment=bench-{store.name}",
        f"data.root={data}", "ood.part=null", f"hydra.run.dir={hydra_dir}", *store.overrides,
    ]  # fmt: skip


@dataclass
class StoreResult:
    """What one store's benchmark measured and found missing."""

    name: str
    runs: int
    finished: int = 0
    lost: list[str] = field(default_factory=list)
    lost_points: int = 0
    writes_per_s: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    logging_per_epoch_s: float = float("nan")
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def run_training(
    store: Store, runs: int, epochs: int, data: Path, directory: Path
) -> tuple[list[int], list[str]]:
    """Run ``runs`` training runs against ``store`` at once; their exit codes and the
    tails of the outputs of those that failed."""
    processes = []
    for index in range(runs):
        log = open(directory / f"train-{index}.log", "w")  # noqa: SIM115 (closed below)
        processes.append(
            (
                subprocess.Popen(
                    training_command(store, data, epochs, directory / f"hydra-{index}"),
                    cwd=directory,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=child_env(),
                    start_new_session=True,
                ),  # fmt: skip
                log,
            )
        )
    codes, failures = [], []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        for index, (process, log) in enumerate(processes):
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(-1)
            log.close()
            if codes[-1] != 0:
                output = (directory / f"train-{index}.log").read_text()
                failures.append(f"run {index} exited {codes[-1]}: {last_error(output)}")
    finally:
        for process, log in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
    return codes, failures


def check_runs(client: Any, experiment_id: str, skip: str, result: StoreResult) -> list[float]:
    """Check every training run of ``experiment_id`` but ``skip`` into ``result``
    (finished runs, lost points); returns each epoch's ``gap - time/epoch_s`` (s)."""
    added: list[float] = []
    found = [r for r in client.search_runs([experiment_id]) if r.info.run_id != skip]
    if len(found) != result.runs:
        result.lost.append(
            f"{result.name}: {len(found)} training runs found, {result.runs} started"
        )
    for run in found:
        run_id = run.info.run_id
        if run.info.status == "FINISHED":
            result.finished += 1
        else:
            result.lost.append(f"{result.name} run {run_id}: status {run.info.status}")
        epochs = int(run.data.metrics.get("fit/epochs_run", 0))
        if epochs < 1:
            result.lost.append(f"{result.name} run {run_id}: no fit/epochs_run")
        history = {key: client.get_metric_history(run_id, key) for key in EPOCH_METRICS}
        for key, points in history.items():
            steps = sorted(m.step for m in points)
            if steps != list(range(1, epochs + 1)):
                missing = sorted(set(range(1, epochs + 1)) - set(steps))
                extra = len(steps) - (epochs - len(missing))
                result.lost_points += len(missing) + max(0, extra)
                result.lost.append(
                    f"{result.name} run {run_id} {key}: steps {steps}, expected 1..{epochs}"
                )
        stamps = {m.step: m.timestamp / 1000 for m in history["val/acc"]}
        epoch_s = {m.step: m.value for m in history["time/epoch_s"]}
        for step in range(2, epochs + 1):
            if {step - 1, step} <= stamps.keys() and step in epoch_s:
                added.append(stamps[step] - stamps[step - 1] - epoch_s[step])
    return added


def bench_store(name: str, runs: int, epochs: int, data: Path, root: Path) -> StoreResult:
    """Benchmark store ``name``: start it, run the training runs and the tight loop,
    check what was logged, stop it."""
    result = StoreResult(name, runs)
    started = time.perf_counter()
    directory = root / name
    with open_store(name, directory) as store:
        tracking.configure(store.store_dir or directory / "unused", store.uri)
        experiment_id = tracking.ensure_experiment(f"bench-{name}", store.store_dir)
        client = tracking.mlflow_client(store.uri)
        loop_run = client.create_run(experiment_id, run_name="tight-loop-client").info.run_id
        loop = LoopClient(client, loop_run)
        loop.start()
        try:
            codes, failures = run_training(store, runs, epochs, data, directory)
        finally:
            loop.stop()
        client.set_terminated(loop_run)
        result.errors = failures + sorted(set(loop.errors))
        result.writes_per_s = len(loop.latencies) / loop.seconds if loop.seconds else 0.0
        result.p50_ms = percentile(loop.latencies, 50) * 1000
        result.p99_ms = percentile(loop.latencies, 99) * 1000
        points = client.get_metric_history(loop_run, LOOP_METRIC)
        steps = sorted(m.step for m in points)
        if steps != list(range(loop.calls)):
            missing = loop.calls - len(set(steps))
            result.lost_points += missing + (len(steps) - len(set(steps)))
            result.lost.append(
                f"{name} tight loop: {len(set(steps))} of {loop.calls} calls' points stored "
                f"({len(loop.errors)} calls failed, {len(steps) - len(set(steps))} duplicates)"
            )
        added = check_runs(client, experiment_id, loop_run, result)
        if added:
            result.logging_per_epoch_s = statistics.fmean(added)
        if any(code != 0 for code in codes) and not result.lost:
            result.lost.append(f"{name}: {sum(c != 0 for c in codes)} training runs failed")
    result.wall_s = time.perf_counter() - started
    return result


def table(results: list[StoreResult]) -> str:
    """The results as one Markdown table."""
    lines = [
        "| store | runs finished | points lost | writes/s | p50 ms | p99 ms | logging per epoch s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.finished}/{r.runs} | {r.lost_points} | {r.writes_per_s:.0f} | "
            f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.logging_per_epoch_s:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run this benchmark with the command line's options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="data set root")
    parser.add_argument("--runs", type=int, default=8, help="concurrent training runs (8)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (2, at least 2)")
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    args = parser.parse_args()
    if args.runs < 1 or args.epochs < 2:
        parser.error("--runs must be at least 1 and --epochs at least 2")
    data = args.data.expanduser().resolve()
    # As root, PostgreSQL runs as the postgres user, who must be able to enter the directory.
    root = Path(tempfile.mkdtemp(prefix="chordrec-bench-tracking-", dir="/var/tmp"))
    root.chmod(0o755)
    started = time.perf_counter()
    results = []
    try:
        for name in args.stores:
            result = bench_store(name, args.runs, args.epochs, data, root)
            results.append(result)
            print(
                f"{name}: {result.finished}/{result.runs} runs finished, "
                f"{result.lost_points} points lost, {result.wall_s:.0f} s",
                flush=True,
            )
            for error in result.errors:
                print(f"  error: {error}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lost = [line for r in results for line in r.lost]
    print("lost: 0" if not lost else "lost:\n" + "\n".join(f"  {line}" for line in lost))
    print(
        f"\nmachine: {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )
    print(f"command: python -m chordrec.bench.tracking {shlex.join(sys.argv[1:])}".rstrip())
    print(f"wall time: {time.perf_counter() - started:.0f} s\n")
    print(table(results))
    if lost or any(r.finished != r.runs for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
