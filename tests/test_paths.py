"""Where a run's data and store are: relative to the working directory by default,
moved by ``$CHORDREC_DATA`` and ``$CHORDREC_STORE`` or by a setting, the same for
training runs (``chordrec/conf/paths``) and the command-line tools
(:mod:`chordrec.constants`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chordrec.train import CONF
from tests.conftest import REPO, compose_train, subprocess_env


def test_configs_are_found_inside_the_package() -> None:
    assert CONF == REPO / "chordrec" / "conf"
    assert (CONF / "train.yaml").is_file()
    assert (CONF / "experiment").is_dir() and not (CONF / "experiment").is_symlink()
    assert not (REPO / "conf").exists() and not (REPO / "experiments").exists()


@pytest.mark.parametrize("unset", [True, False], ids=["unset", "empty"])
def test_data_and_store_default_to_the_working_directory(monkeypatch, unset) -> None:
    """An empty variable means the default as an unset one does (not ``/rwc-pop``)."""
    for name in ("CHORDREC_DATA", "CHORDREC_STORE"):
        if unset:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, "")
    cfg = compose_train(["experiment=best"])
    assert cfg.data.root == "data/rwc-pop"
    assert cfg.ood.root == "data/ood-synth"
    assert cfg.data.synth_root == "data/synth-train"
    assert cfg.tracking.store_dir == "mlruns"


def test_environment_variables_move_data_and_store(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CHORDREC_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("CHORDREC_STORE", str(tmp_path / "s"))
    cfg = compose_train([])
    assert cfg.data.root == f"{tmp_path}/d/rwc-pop"
    assert cfg.ood.root == f"{tmp_path}/d/ood-synth"
    assert cfg.data.synth_root == f"{tmp_path}/d/synth-train"
    assert cfg.tracking.store_dir == f"{tmp_path}/s"
    # a setting wins over the environment
    cfg = compose_train(["paths.data=/srv/x", "tracking.store_dir=/srv/y"])
    assert (cfg.data.root, cfg.tracking.store_dir) == ("/srv/x/rwc-pop", "/srv/y")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CHORDREC_DATA": "", "CHORDREC_STORE": ""},
        {"CHORDREC_DATA": "/d", "CHORDREC_STORE": "/s"},
    ],
)
def test_command_line_tools_default_to_the_same_paths(env) -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from chordrec import constants as c; "
            "print(c.DATA_DIR, c.OOD_DIR, c.SYNTH_TRAIN_DIR, c.STORE_DIR)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={
            **{k: v for k, v in subprocess_env().items() if not k.startswith("CHORDREC_")},
            **env,
        },
    ).stdout.split()
    data, store = env.get("CHORDREC_DATA") or "data", env.get("CHORDREC_STORE") or "mlruns"
    assert shown == [f"{data}/rwc-pop", f"{data}/ood-synth", f"{data}/synth-train", store]
