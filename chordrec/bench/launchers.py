"""Launcher benchmark: one tiny sweep through Hydra's joblib launcher, then through
chordrec's Ray launcher.

    python -m chordrec.bench.launchers [--jobs 8] [--data data/rwc-pop]

The sweep is ``--jobs`` tiny training jobs (``seed=0..jobs-1``; one song per part at beat
level, L = 16, one epoch, one torch thread, no model, no system metrics and no
out-of-domain scores logged), run
as one ``python -m chordrec.train -m`` command per launcher, each into its own SQLite
store in a temporary directory:

- ``joblib``: ``hydra/launcher=parallel hydra.launcher.n_jobs=2``: two worker processes,
  each running job after job;
- ``ray``: ``hydra/launcher=ray hydra.launcher.local_cpus=2``: a local Ray on 127.0.0.1
  started for the sweep, every job a fresh worker process asking for one CPU, so two at
  a time.

A sweep's wall time is the whole command: Python's start, the launcher's (Ray's start
included), the jobs, and the sweep's parent run with its table. The benchmark prints
both, the Ray launcher's overhead per job over joblib, ``(T_ray - T_joblib) / jobs``, and
the ratio ``T_ray / T_joblib``, from this one run of each: not a mean, and the machine's
other load counts. It exits 1 if a sweep failed or did not leave ``jobs`` FINISHED runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from chordrec import tracking
from chordrec.bench.tracking import child_env, last_error
from chordrec.constants import DATA_DIR, EXPERIMENT

LAUNCHERS = {
    "joblib": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
    "ray": ["hydra/launcher=ray", "hydra.launcher.local_cpus=2"],
}
"""The launchers compared, in the order they run, and the overrides that select them."""

TINY = [
    "data.level=beat",
    "split.max_songs=1",
    "trainer.max_epochs=1",
    "trainer.num_threads=1",
    "trainer.progress=false",
    "tracking.system_metrics=false",
    "tracking.log_model=false",
]
"""Every job's budget (with ``seq_len=16``): what a job costs besides its launcher stays
small."""

SWEEP_TIMEOUT_S = 1800.0


@dataclass
class SweepResult:
    """One launcher's sweep: its wall time (s), FINISHED runs and, if it failed, why."""

    launcher: str
    jobs: int
    wall_s: float
    finished: int
    error: str = ""


def sweep_command(launcher: str, jobs: int, data: Path, directory: Path) -> list[str]:
    """The command line of the sweep through ``launcher`` (a key of :data:`LAUNCHERS`)."""
    return [
        sys.executable, "-m", "chordrec.train", "-m", *LAUNCHERS[launcher], *TINY, "seq_len=16",
        f"data.root={data}", "ood.part=null", f"tracking.store_dir={directory / 'mlruns'}",
        f"hydra.sweep.dir={directory / 'sweep'}", f"seed={','.join(map(str, range(jobs)))}",
    ]  # fmt: skip


def run_sweep(launcher: str, jobs: int, data: Path, directory: Path) -> SweepResult:
    """Run the sweep through ``launcher`` in ``directory`` (its output in ``sweep.log``)
    and count the FINISHED runs it left in its store."""
    directory.mkdir(parents=True)
    log = directory / "sweep.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(
            sweep_command(launcher, jobs, data, directory),
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            timeout=SWEEP_TIMEOUT_S,
        )
    wall_s = time.perf_counter() - started
    tracking.configure(directory / "mlruns")
    runs = [r for r in tracking.find_runs(EXPERIMENT) if "kind" not in r.tags]  # not the parent
    finished = sum(r.status == "FINISHED" for r in runs)
    error = f"exit status {done.returncode}: {last_error(log.read_text())}" * (done.returncode != 0)
    return SweepResult(launcher, jobs, wall_s, finished, error)


def table(joblib: SweepResult, ray: SweepResult) -> str:
    """The two sweeps and the Ray launcher's overhead over joblib, as Markdown."""
    overhead = (ray.wall_s - joblib.wall_s) / ray.jobs
    lines = [
        "| launcher | jobs | sweep wall time s | per job s |",
        "|---|---|---|---|",
        *(
            f"| {r.launcher} ({' '.join(LAUNCHERS[r.launcher])}) | {r.jobs} | {r.wall_s:.1f} | "
            f"{r.wall_s / r.jobs:.2f} |"
            for r in (joblib, ray)
        ),
        "",
        f"Ray overhead per job over joblib, (T_ray - T_joblib) / {ray.jobs}: {overhead:.2f} s",
        f"T_ray / T_joblib: {ray.wall_s / joblib.wall_s:.2f}",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run this benchmark with the command line's options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="data set root")
    parser.add_argument("--jobs", type=int, default=8, help="jobs per sweep (8)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    data = args.data.expanduser().resolve()
    root = Path(tempfile.mkdtemp(prefix="chordrec-bench-launchers-"))
    results = {}
    try:
        for launcher in LAUNCHERS:
            result = run_sweep(launcher, args.jobs, data, root / launcher)
            results[launcher] = result
            print(
                f"{launcher}: {result.finished}/{result.jobs} runs finished in "
                f"{result.wall_s:.1f} s",
                flush=True,
            )
            if result.error:
                print(f"  error: {result.error}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\nmachine: {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )
    print(f"command: python -m chordrec.bench.launchers {shlex.join(sys.argv[1:])}".rstrip())
    print(table(results["joblib"], results["ray"]))
    if any(r.error or r.finished != r.jobs for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
