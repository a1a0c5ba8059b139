"""Check chordrec on this machine's accelerator (``make gpu-check``); installs nothing.

    python -m chordrec.bench.gpu_check [--store DIR] [hydra overrides ...]

1. the test suite's device-dependent tests (``pytest -m device``);
2. ``experiment=best`` on CUDA (on the CPU where there is none: the CPU part) until
   its first epoch is logged, then SIGKILL, as a lost GPU node would be;
3. the MLflow record holds GPU system metrics (``system/gpu_*``; needs nvidia-ml-py);
4. the run resumed with ``trainer.device=cpu`` finishes its second epoch on the CPU;
5. the epoch time on each device, side by side.

Extra overrides go to both training commands (e.g. ``split.max_songs=4`` for a
quick check). Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from chordrec import tracking

REPO = Path(__file__).resolve().parents[2]
RUN_ID = re.compile(r"MLflow run id: ([0-9a-f]{32})")


def _train(store: Path, log: Path, overrides: list[str]) -> subprocess.Popen:
    """``python -m chordrec.train`` logging to ``store``, its output into ``log``."""
    command = [
        sys.executable,
        "-m",
        "chordrec.train",
        f"tracking.store_dir={store}",
        f"hydra.run.dir={log.parent / log.stem}",
        "trainer.progress=false",
        *overrides,
    ]
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _wait_for_epoch(process: subprocess.Popen, log: Path, timeout: float) -> str:
    """The run id of the training ``process`` once its first epoch is logged."""
    deadline = time.monotonic() + timeout
    run_id = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"training ended (exit {process.returncode}) before epoch 1:\n"
                + log.read_text()[-3000:]
            )
        if run_id is None:
            found = RUN_ID.search(log.read_text())
            run_id = found.group(1) if found else None
        elif tracking.metric_history(run_id).get("val/acc"):
            return run_id
        time.sleep(0.5)
    raise TimeoutError(f"no epoch logged within {timeout:.0f} s; see {log}")


def main(argv: list[str] | None = None) -> int:
    """Run the GPU check with ``argv`` (default: the process's); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="tracking store (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds for epoch 1")
    parser.add_argument(
        "--no-tests", action="store_true", help="skip step 1 (the device-dependent tests)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs")
    args = parser.parse_args(argv)
    failures: list[str] = []

    if not args.no_tests:
        print("== 1. device-dependent tests", flush=True)
        if subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "device"], cwd=REPO):
            failures.append("device-dependent tests failed")

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA device: the CPU part)"
    print(f"== 2. experiment=best, epoch 1 on {name}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="chordrec-gpu-check-"))
    store = (args.store or work / "mlruns").resolve()
    tracking.configure(store)
    first = [
        "experiment=best",
        "trainer.max_epochs=2",
        f"trainer.device={device}",
        "tracking.system_metrics_interval_s=1",
        *args.overrides,
    ]
    process = _train(store, work / "first.log", first)
    try:
        run_id = _wait_for_epoch(process, work / "first.log", args.timeout)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    print(f"run {run_id}: epoch 1 logged, process killed", flush=True)

    print("== 3. GPU system metrics", flush=True)
    metrics = tracking.run_metrics(run_id)
    gpu = sorted(k for k in metrics if k.startswith("system/gpu_"))
    if cuda and not gpu:
        failures.append(
            "no system/gpu_* metrics in the run (is nvidia-ml-py installed? pip install -e '.[gpu]')"
        )
    print(", ".join(gpu) if gpu else "none (no GPU)" if not cuda else "none", flush=True)

    print("== 4. resume on the CPU", flush=True)
    resumed = _train(
        store, work / "resumed.log", [f"resume={run_id}", "trainer.device=cpu", *args.overrides]
    )
    if resumed.wait() != 0:
        failures.append(f"resume on the CPU failed:\n{(work / 'resumed.log').read_text()[-3000:]}")
    final = tracking.get_run(run_id)
    if final.info.status != "FINISHED" or final.data.tags.get("device") != "cpu":
        failures.append(f"resumed run is {final.info.status} on {final.data.tags.get('device')}")

    print("== 5. epoch time", flush=True)
    times = tracking.metric_history(run_id).get("time/epoch_s", {})
    if len(times) == 2:
        print(f"epoch 1 on {name}: {times[1]:.1f} s")
        print(f"epoch 2 on CPU ({torch.get_num_threads()} threads): {times[2]:.1f} s")
        print(f"CPU / {device}: {times[2] / times[1]:.1f}x")
    else:
        failures.append(f"epoch times logged for epochs {sorted(times)}, not 1 and 2")
    print(f"store: {store} (run {run_id})")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
