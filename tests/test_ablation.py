"""The ablation of experiment=best: each option changes one factor, and the sweep runs
as one Hydra multirun whose run table names the options."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from chordrec.tracking import flatten
from tests.conftest import CONF, compose_train, run_chordrec
from tests.test_study import _sweep

OPTIONS = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))
# what each option changes in experiment=best
CHANGES = {
    "none": {},
    "no_transpose": {"data.augment": ("transpose", "none")},
    "seq_len_128": {"seq_len": ("256", "128")},
    "seq_len_512": {"seq_len": ("256", "512")},
}


def _flat(cfg) -> dict[str, str]:
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def test_the_documented_options_are_the_group():
    assert OPTIONS == sorted(CHANGES)


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_changes_one_factor_of_best(option):
    best = _flat(compose_train(["experiment=best"]))
    ablated = _flat(compose_train(["experiment=best", f"+ablation={option}"]))
    assert set(best) == set(ablated)
    changed = {k: (best[k], ablated[k]) for k in best if best[k] != ablated[k]}
    assert changed == CHANGES[option]


@pytest.mark.integration
def test_ablation_sweep_logs_one_run_per_option_and_tabulates(data_root, tmp_path: Path):
    options = ",".join(OPTIONS)
    # as docs/results.md runs it: its own MLflow experiment, the runs tagged with a study id
    _, _, runs = _sweep(
        data_root,
        tmp_path,
        "experiment=best",
        f"+ablation={options}",
        "tracking.experiment=issue4",
        "+tracking.tags.study=best-ablation",
        experiment="issue4",
    )
    assert len(runs) == len(OPTIONS) and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["seq_len"] for r in runs) == ["128", "256", "256", "512"]

    table = run_chordrec(
        "table",
        "--runs",
        "--experiment",
        "issue4",
        "--study",
        "best-ablation",
        "--store",
        str(tmp_path / "mlruns"),
        "--format",
        "csv",
        cwd=tmp_path,
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split(",")[1] == "+ablation"
    assert sorted(line.split(",")[1] for line in lines[1:]) == OPTIONS
