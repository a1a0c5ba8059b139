"""Dependencies as pyproject.toml declares them: every module chordrec imports is
declared, a core install (no extras) trains, tracks, makes tables and transcribes, and a
command that needs a missing extra names it in one line.

The core install is simulated: chordrec runs in subprocesses where a ``sitecustomize``
makes the extras' modules unimportable (a ``sys.meta_path`` finder that raises
ModuleNotFoundError for them), in them and in every process they start."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from chordrec import extras
from chordrec.errors import UserError
from tests.conftest import QUICK, REPO, subprocess_env

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

BLOCKED = ("ray", "psycopg", "psycopg_binary", "optuna", "mido", "flask_wtf", "pynvml")
"""What the extras install that the core does not (:data:`chordrec.extras.EXTRAS`)."""

BLOCKER = f"""
import sys

BLOCKED = {BLOCKED!r}


class _BlockExtras:
    \"\"\"A core install: the extras' modules are not there.\"\"\"

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (a core install)", name=name)
        return None


sys.meta_path.insert(0, _BlockExtras)
"""


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    """Distributions declared by the core dependencies and ``extras``."""
    optional = PYPROJECT["optional-dependencies"]
    requirements = [*PYPROJECT["dependencies"], *(r for e in extras for r in optional[e])]
    return {_name(r) for r in requirements}


# ------------------------------------------------------------------ unit tests


def test_a_missing_extra_is_one_line_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(extras.EXTRAS, "tune", ("chordrec_no_such_module",))
    with pytest.raises(extras.MissingExtra) as raised:
        extras.require_extra("tune", "an Optuna search")
    assert (
        str(raised.value) == 'an Optuna search needs the [tune] extra: pip install "chordrec[tune]"'
    )
    assert isinstance(raised.value, UserError)
    extras.require_extra("tune", "only json", ("json",))  # the modules named are there


def test_the_extras_are_pyprojects() -> None:
    optional = PYPROJECT["optional-dependencies"]
    assert set(extras.EXTRAS) | {"all", "dev"} == set(optional)
    assert optional["all"] == [f"chordrec[{','.join(extras.EXTRAS)}]"]


def _imported_modules(root: Path) -> set[str]:
    """Top-level modules that the Python files under ``root`` import (anywhere in a
    file: functions and TYPE_CHECKING blocks too), relative imports left out."""
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_every_module_chordrec_imports_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    own = {"chordrec", "hydra_plugins", "__future__"}
    undeclared = []
    for module in sorted(
        _imported_modules(REPO / "chordrec") | _imported_modules(REPO / "hydra_plugins")
    ):
        if module in own or module in sys.stdlib_module_names:
            continue
        providers = {_name(d) for d in distributions.get(module, [])}
        if not providers & _declared(*PYPROJECT["optional-dependencies"]):
            undeclared.append(f"{module} ({', '.join(sorted(providers)) or 'not installed'})")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_extras_are_not_core_dependencies() -> None:
    core = _declared()
    for extra in extras.EXTRAS:
        for requirement in PYPROJECT["optional-dependencies"][extra]:
            if _name(requirement) not in ("mlflow", "sqlalchemy"):  # core, with more here
                assert _name(requirement) not in core, f"[{extra}] {requirement} is also core"


# ------------------------------------------------------------------ a core install


@pytest.fixture(scope="module")
def core_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a subprocess that sees no extra installed."""
    blocker = tmp_path_factory.mktemp("core-install")
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    path = [str(blocker), str(REPO), *filter(None, [subprocess_env().get("PYTHONPATH")])]
    return subprocess_env(PYTHONPATH=":".join(path), HYDRA_FULL_ERROR="0")


def _run(env: dict[str, str], cwd: Path, *args: str, timeout: float = 600):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_the_blocker_blocks_and_the_core_imports_none_of_the_extras(
    core_env: dict[str, str], tmp_path: Path
) -> None:
    modules = [
        "chordrec.cli",
        "chordrec.train",
        "chordrec.run",
        "chordrec.transcribe",
        "chordrec.study",
        "chordrec.tuning",
        "chordrec.data.synthetic",
        "hydra_plugins.chordrec_optuna.optuna_sweeper",
        "hydra_plugins.chordrec_ray.ray_launcher",
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}))\n"
        "try:\n    import optuna\nexcept ModuleNotFoundError:\n    print('blocked')\n"
    )
    done = _run(core_env, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "blocked"]


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.integration
def test_a_core_install_trains_makes_a_table_and_transcribes(
    core_env: dict[str, str], data_root: Path, tmp_path: Path
) -> None:
    store = tmp_path / "mlruns"
    trained = _run(
        core_env,
        tmp_path,
        "-m",
        "chordrec.train",
        f"data.root={data_root}",
        f"tracking.store_dir={store}",
        "ood.part=null",
        *QUICK,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    table = _run(core_env, tmp_path, "-m", "chordrec", "table", "--runs", "--store", str(store))
    assert table.returncode == 0, table.stderr[-3000:]
    assert "rnn_table4" in table.stdout or "|" in table.stdout
    song = tmp_path / "song.wav"
    t = np.arange(5 * 22050) / 22050
    sf.write(song, 0.2 * sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)), 22050)
    lab = tmp_path / "song.lab"
    done = _run(
        core_env,
        tmp_path,
        "-m",
        "chordrec",
        "transcribe",
        str(song),
        "-m",
        "templates",
        "-o",
        str(lab),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "C:maj" in lab.read_text()


def _last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def _message(extra: str, what: str) -> str:
    return extras.missing_extra_message(extra, what)


@pytest.mark.slow
def test_commands_that_need_a_missing_extra_name_it(
    core_env: dict[str, str], tmp_path: Path
) -> None:
    server = _run(
        core_env, tmp_path, "-m", "chordrec", "server", "--postgres-dir", str(tmp_path / "pg")
    )
    assert server.returncode == 1
    assert _last_line(server) == "chordrec: error: " + _message(
        "server", "chordrec server on PostgreSQL"
    )
    assert not (tmp_path / "pg").exists()
    auth = _run(core_env, tmp_path, "-m", "chordrec", "server", "--auth", str(tmp_path / "auth"))
    assert auth.returncode == 1
    assert _last_line(auth) == "chordrec: error: " + _message("server", "chordrec server --auth")
    synth = _run(
        core_env, tmp_path, "-m", "chordrec", "data", "synth", "--dest", str(tmp_path / "ood")
    )
    assert synth.returncode == 1
    assert _last_line(synth).endswith(
        _message("synth", "synthesizing the out-of-domain songs (chordrec data synth)")
    )
    store = tmp_path / "mlruns"
    for choice, extra, what in (
        ("hparams_search=optuna", "tune", "hparams_search=optuna (hydra/sweeper=optuna)"),
        ("hydra/launcher=ray", "cluster", "hydra/launcher=ray"),
    ):
        sweep = _run(
            core_env,
            tmp_path,
            "-m",
            "chordrec.train",
            "-m",
            choice,
            f"tracking.store_dir={store}",
            "trainer.max_epochs=1",
        )
        assert sweep.returncode == 1, choice
        assert _last_line(sweep) == "chordrec.train: error: " + _message(extra, what)
        assert not store.exists(), f"{choice}: a parent run was made before the check"
