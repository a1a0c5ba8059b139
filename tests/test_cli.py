"""The documented commands (README.md, docs/), run as a user runs them: ``chordrec``'s
subcommands, the training entry point's help, data fetch and verify, the tracking UI,
the two benchmarks, the Makefile targets and an unreachable tracking server.

Subprocesses get one OpenMP thread; nothing touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chordrec import cli
from tests import test_fetch
from tests.conftest import OOD, REPO, free_port, subprocess_env
from tests.test_fetch import CORRUPT_REL, _flip_byte

# a fixture of test_fetch, reused: a closed port on 127.0.0.1
closed_port_url = test_fetch.closed_port_url

COMMANDS = (
    "data",
    "ood",
    "ui",
    "server",
    "train",
    "evaluate",
    "table",
    "compare",
    "study",
    "transcribe",
    "register",
    "sweep",
)
MODELS = ("rnn_baseline", "rnn_table4", "crnn1", "crnn2", "crnn_tagging")
GROUPS = ("model", "data", "split", "optimizer", "scheduler", "trainer", "tracking", "ablation")


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python <args>`` in the repository, one OpenMP thread, output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
    )


def _clean_error(result: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a command that failed the way a user should see it: exit 1, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


# ------------------------------------------------------------------------ help


def test_chordrec_help_lists_every_command() -> None:
    result = _run("-m", "chordrec", "--help")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    listed = re.findall(r"^ {4}([a-z]+) {2,}\S", section, re.M)
    assert sorted(listed) == sorted(COMMANDS), result.stdout


@pytest.mark.slow
def test_train_help_shows_config_groups_and_examples() -> None:
    result = _run("-m", "chordrec.train", "--help")
    assert result.returncode == 0, result.stderr
    groups = dict(
        line.split(": ", 1)
        for line in result.stdout.split("Config groups", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    )
    assert set(GROUPS) <= set(groups), groups
    assert set(MODELS) <= set(groups["model"].split(", "))
    assert {"adam", "adamw", "sgd", "rmsprop"} <= set(groups["optimizer"].split(", "))
    footer = result.stdout.split("Examples:", 1)[1]
    assert "python -m chordrec.train resume=<mlflow run id>" in footer
    assert "model=crnn2 data.level=beat" in footer
    assert "+ablation=none,no_transpose" in footer


def test_chordrec_train_forwards_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(
        cli.program.subprocess, "call", lambda command, **_: calls.append(command) or 3
    )
    assert cli.main(["train", "--help"]) == 3
    assert cli.main(["train", "model=crnn2", "-m", "seed=0,1"]) == 3
    assert calls == [
        [sys.executable, "-m", "chordrec.train", "--help"],
        [sys.executable, "-m", "chordrec.train", "model=crnn2", "-m", "seed=0,1"],
    ]


@pytest.mark.parametrize("command", ["transcribe", "table", "study", "register", "ui"])
def test_tracking_options(command: str) -> None:
    extra = {"transcribe": ["song.wav"], "register": ["0123abc"]}.get(command, [])
    parser = cli.build_parser()
    args = parser.parse_args([command, *extra])
    assert args.store == Path("mlruns")
    if command == "ui":  # serves the local store only
        assert not hasattr(args, "tracking_uri")
        assert (args.host, args.port) == ("127.0.0.1", 5000)
        return
    assert args.tracking_uri is None
    args = parser.parse_args([command, *extra, "--store", "s", "--tracking-uri", "http://h:1"])
    assert (args.store, args.tracking_uri) == (Path("s"), "http://h:1")
    if command in ("table", "study"):
        assert args.experiment == "chordrec"
    if command == "study":  # presets, not to be confused with the MLflow experiment
        assert args.presets == "a,b,c,d,e,f"
        assert parser.parse_args(["study", "--presets", "a,d"]).presets == "a,d"


# ------------------------------------------------------------------------ data


@pytest.mark.integration
def test_data_fetch_then_verify(data_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rwc-pop"
    fetched = _run(
        "-m",
        "chordrec",
        "data",
        "fetch",
        "--source",
        str(data_root),
        "--dest",
        str(dest),
        "--quiet",
    )
    assert fetched.returncode == 0, fetched.stderr
    assert f"ready and verified in {dest}" in fetched.stdout
    verified = _run("-m", "chordrec", "data", "verify", "--root", str(dest))
    assert verified.returncode == 0, verified.stderr
    assert "all files match the pinned checksums" in verified.stdout

    _flip_byte(dest / CORRUPT_REL)  # the fetched copy, not its source
    stderr = _clean_error(_run("-m", "chordrec", "data", "verify", "--root", str(dest)))
    assert CORRUPT_REL in stderr
    assert stderr.startswith("chordrec: error:")


# ------------------------------------------------------------------------ tracking


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    hosts = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            fields = line.split()
            host, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                hosts.append(host)
    return hosts


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.system
@pytest.mark.slow
def test_ui_serves_this_machine_only_and_stops_with_its_command(tmp_path: Path) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp to see what the server binds")
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "chordrec", "ui", "--store", str(tmp_path / "mlruns")]
        + ["--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        start_new_session=True,  # its own process group: nothing outlives the test
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/health"):
            assert ui.poll() is None, ui.stdout.read() if ui.stdout else ""
            assert time.monotonic() < deadline, "the UI did not answer within 60 s"
            time.sleep(0.5)
        assert set(_listening(port)) == {"0100007F"}  # 127.0.0.1, no wildcard address
        ui.terminate()
        ui.wait(timeout=40)  # the command stops its server before it exits
        output = ui.stdout.read() if ui.stdout else ""
        assert f"at http://127.0.0.1:{port}" in output
        assert _listening(port) == []
    finally:
        if ui.poll() is None or _listening(port):
            try:
                os.killpg(ui.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            ui.wait(timeout=10)


@pytest.mark.parametrize("study", ["a,b", "x' OR '1'='1", "-rf", "", "ü"])
@pytest.mark.parametrize("command", ["study", "table"])
def test_a_study_id_that_would_sweep_or_break_a_filter_is_refused(
    command: str, study: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    option = "--study-id" if command == "study" else "--study"
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--store", str(tmp_path / "mlruns"), f"{option}={study}"])
    assert exit_info.value.code == 2
    assert "letters, digits" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()  # refused before any run or sweep began


def test_table_with_unreachable_server(closed_port_url: str, tmp_path: Path) -> None:
    result = _run(
        "-m", "chordrec", "table", "--tracking-uri", closed_port_url, "--store", str(tmp_path)
    )
    stderr = _clean_error(result)
    assert f"MLflow tracking server {closed_port_url} is unreachable" in stderr
    assert result.stdout == ""


# ------------------------------------------------------------------------ benchmarks


@pytest.mark.system
@pytest.mark.integration
def test_training_benchmark(data_root: Path) -> None:
    result = _run(
        "-m",
        "chordrec.bench.training",
        "--data",
        str(data_root),
        "--songs",
        "2",
        "--seconds",
        "1",
        "--course-seconds",
        "1.5",
    )
    assert result.returncode == 0, result.stderr
    for seq_len in (16, 128):
        assert re.search(
            rf"L=\s*{seq_len}, 2 songs: course [\d,]+ examples/s, chordrec [\d,]+ examples/s: "
            r"ratio \d+\.\d\d; examples held: course [\d,]+ MiB, chordrec [\d,.]+ MiB",
            result.stdout,
        ), result.stdout
    for mode in ("window", "sequence"):
        assert re.search(rf"^{mode}\s+L=128: [\d,]+ frames/s", result.stdout, re.M), result.stdout


@pytest.mark.system
@pytest.mark.slow
def test_transcription_benchmark_on_ten_seconds() -> None:
    result = _run(
        "-m", "chordrec.bench.transcription", "--minutes", "0.17", "--repeats", "1", "--files", "2"
    )
    assert result.returncode == 0, result.stderr
    # the command end to end, one file and a folder, beside essentia's quoted figure
    assert (
        "essentia's HPCP chord detection, quoted from docs/performance.md: 350-456x"
        in result.stdout
    )
    for model in ("templates", "best_synth.pt"):
        assert re.search(
            rf"{re.escape(model)}\s+one 0.17-min file:\s+[\d.]+ s\s+[\d.]+x\s+"
            r"2 files \(0 min\):\s+[\d.]+ s\s+[\d.]+x",
            result.stdout,
        ), result.stdout
    # then stage by stage
    assert "audio: 10 s" in result.stdout
    for stage in ("read + mix down", "chroma_features", "beat_frames", "model templates"):
        assert re.search(rf"{re.escape(stage)}.* s\s+[\d.]+x real time", result.stdout), stage
    assert result.stdout.count("   end to end") == 5
    for model in ("best_synth (untrained)", "best_synth transpose_average=true (untrained)"):
        assert re.search(rf"model {re.escape(model)}\s+[\d.]+ s", result.stdout), model


@pytest.mark.system
@pytest.mark.integration
def test_gpu_check_runs_its_cpu_part(data_root: Path, tmp_path: Path) -> None:
    """`make gpu-check` where no GPU is lent: experiment=best killed after epoch 1,
    resumed on the CPU, both epoch times printed (step 1, the device tests, is the
    suite's own `-m device` selection and skipped here)."""
    result = _run(
        "-m",
        "chordrec.bench.gpu_check",
        "--no-tests",
        "--store",
        str(tmp_path / "mlruns"),
        f"data.root={data_root}",
        f"ood.root={OOD}",
        "split.max_songs=1",
        "trainer.num_threads=1",
        "tracking.log_model=false",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^epoch 1 on .*: [\d.]+ s$", result.stdout, re.M), result.stdout
    assert re.search(r"^epoch 2 on CPU .*: [\d.]+ s$", result.stdout, re.M), result.stdout


# ------------------------------------------------------------------------ make


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_makefile_has_the_documented_targets() -> None:
    readme = (REPO / "README.md").read_text()
    targets = set(re.findall(r"(?:^|`|or: )make ([\w-]+)", readme, re.M))
    assert {"train", "test", "ui", "help", "study", "bench", "lint", "gpu-check"} <= targets
    listed = _make("help")
    assert listed.returncode == 0, listed.stderr
    for target in targets:
        assert re.search(rf"^\s+make {target}\s", listed.stdout, re.M), target
    # -n: print what would run, run nothing
    commands = {
        "train": "-m chordrec.train",
        "test": "-m pytest",
        "ui": "chordrec ui",
        "server": "chordrec server --postgres-dir",
        "study": "chordrec study",
        "table": "chordrec table",
        "bench": "-m chordrec.bench.training",
        "bench-transcription": "-m chordrec.bench.transcription",
        "bench-launchers": "-m chordrec.bench.launchers",
        "lint": "ruff check",
        "gpu-check": "-m chordrec.bench.gpu_check",
    }
    for target, command in commands.items():
        dry = _make("-n", target)
        assert dry.returncode == 0, dry.stderr
        assert command in dry.stdout, (target, dry.stdout)
