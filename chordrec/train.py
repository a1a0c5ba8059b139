"""Train one model on RWC-Pop and log everything to MLflow: the Hydra entry point.

    python -m chordrec.train model=crnn2 data.level=beat seq_len=32 optimizer=sgd
    python -m chordrec.train experiment=best
    python -m chordrec.train -m model=rnn_baseline,rnn_table4 seq_len=16,64,128
    python -m chordrec.train resume=<mlflow run id>

``--help`` lists the config groups and every setting. The run itself is
:func:`chordrec.run.train`; this module owns Hydra: composing the config, the sweep
tags of a multirun, turning a user's mistake into one line, and refusing a password in
any setting before Hydra saves the config (:class:`PasswordCheck`). It imports torch
and MLflow (through :mod:`chordrec.run`) only when a job runs, so that ``--help``,
``--cfg`` and a refused setting answer at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from chordrec.constants import env_or
from chordrec.errors import UserError
from chordrec.extras import require_extra
from chordrec.passwords import check_no_passwords, redact
from chordrec.sweeps import sweep_id

CONF = Path(__file__).resolve().parent / "conf"
"""The Hydra configs, inside the package (``chordrec/conf``; presets in ``conf/experiment``)."""

OmegaConf.register_new_resolver("chordrec.env", env_or, replace=True)  # paths/default.yaml


def run(cfg: DictConfig) -> float:
    """Train, score and log one run; returns its best validation frame accuracy (what
    a sweep optimises)."""
    from chordrec import run as lifecycle  # torch and MLflow: only when a job runs

    return lifecycle.train(cfg, sweep_tags())["val/frame_acc"]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The training config exactly as ``python -m chordrec.train <overrides>`` composes
    it, outside a Hydra app (``model_name`` and ``preset`` resolved)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                cfg.model_name = cfg.model_name
                cfg.preset = cfg.preset
                del cfg["hydra"]
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    return cfg


def sweep_tags() -> dict[str, str]:
    """Tags that tie a run to its Hydra sweep (multirun), if any."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    if hc.mode is None:  # composed outside a Hydra app (tests, notebooks)
        return {}
    tags = {"hydra_mode": str(hc.mode.name).lower()}
    if str(hc.mode.name) == "MULTIRUN":
        tags["sweep_dir"] = str(Path(hc.sweep.dir).resolve())
        tags["sweep_id"] = sweep_id(hc)
        tags["sweep_job"] = str(hc.job.num)
        tags["sweep_overrides"] = redact(" ".join(hc.overrides.task))
    return tags


def report_user_error(program: str, exc: UserError) -> None:
    """Print ``exc`` as one line and exit with status 1, unless ``HYDRA_FULL_ERROR=1``
    asks for the traceback (then re-raise)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    exit_with_error(program, exc)


def exit_with_error(program: str, exc: UserError) -> NoReturn:
    """Print ``exc`` as one line and exit with status 1."""
    print(f"{program}: error: {exc}", file=sys.stderr)
    sys.exit(1)


PLUGIN_EXTRAS = {
    "hydra_plugins.chordrec_optuna.": ("tune", "hparams_search=optuna (hydra/sweeper=optuna)"),
    "hydra_plugins.chordrec_ray.": ("cluster", "hydra/launcher=ray"),
}
"""The extra each of chordrec's Hydra plugins needs (by the start of its ``_target_``),
and the setting that chooses it."""


def check_plugin_extras(config: DictConfig) -> None:
    """Raise :class:`~chordrec.extras.MissingExtra` when the multirun's sweeper or
    launcher is a chordrec plugin whose extra is not installed."""
    for node in ("sweeper", "launcher"):
        target = str(OmegaConf.select(config, f"hydra.{node}._target_", default="") or "")
        for prefix, (extra, what) in PLUGIN_EXTRAS.items():
            if target.startswith(prefix):
                require_extra(extra, what)


class PasswordCheck(Callback):
    """The Hydra callback (``chordrec/conf/train.yaml``, before any other) that stops a run or a
    multirun whose config holds a password (:func:`chordrec.passwords.check_no_passwords`),
    or a multirun whose sweeper or launcher needs an extra that is not installed
    (:func:`check_plugin_extras`), before Hydra saves its config (``.hydra/``), the
    sweep's parent run is made, a sweeper opens a study or any job starts: one line and
    exit status 1, even with ``HYDRA_FULL_ERROR=1`` (Hydra turns a callback's exception
    into a warning and goes on)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a password in a single run's settings."""
        self._check(config, multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a password in any of a multirun's settings."""
        self._check(config, multirun=True)

    @staticmethod
    def _check(config: DictConfig, multirun: bool) -> None:
        try:
            check_no_passwords(config)
            if multirun:
                check_plugin_extras(config)
        except UserError as exc:
            exit_with_error("chordrec.train", exc)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one job. A :class:`~chordrec.errors.UserError` of a single run is one line
    and exit status 1; a multirun's launcher reports its jobs' errors itself."""
    try:
        return run(cfg)
    except UserError as exc:
        if sweep_tags().get("hydra_mode") == "multirun":
            raise
        report_user_error("chordrec.train", exc)
        raise  # unreachable: report_user_error exits


if __name__ == "__main__":
    main()
