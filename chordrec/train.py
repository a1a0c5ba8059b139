"""Train one model on RWC-Pop and log everything to MLflow (the Hydra entry point).

    python -m chordrec.train model=crnn2 data.level=beat seq_len=32 optimizer=sgd
    python -m chordrec.train experiment=f
    python -m chordrec.train -m model=rnn_baseline,rnn_table4 seq_len=16,64,128
    python -m chordrec.train resume=<mlflow run id>

``--help`` lists the config groups and every setting.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from chordrec.errors import UserError
from chordrec.fit import FitResult, TrainerSettings, fit, resolve_device, seed_everything
from chordrec.run import (
    build_context,
    default_run_name,
    finish_run,
    load_initial_weights,
    record_dataset,
    resume_state,
)
from chordrec.tracking import RunTracker, base_tags, check_resumable, configure, process_tags

log = logging.getLogger("chordrec.train")


def _settings(cfg: DictConfig) -> TrainerSettings:
    return TrainerSettings(
        max_epochs=cfg.trainer.max_epochs,
        min_lr=cfg.trainer.min_lr,
        early_stopping_patience=cfg.trainer.early_stopping_patience,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.trainer.eval_batch_size,
        eval_seq_len=cfg.trainer.eval_seq_len,
        eval_overlap=cfg.trainer.eval_overlap,
        num_workers=cfg.data.num_workers,
        window_stride=cfg.data.window_stride,
        grad_clip=cfg.trainer.grad_clip,
        amp=cfg.trainer.amp,
        progress=cfg.trainer.progress,
    )


def run(cfg: DictConfig) -> float:
    """Train, evaluate and log one run; returns its best validation frame accuracy."""
    configure(cfg.tracking.store_dir, cfg.tracking.uri)
    tracking_dir = Path(cfg.tracking.store_dir).resolve()
    resume_id = cfg.resume
    resume = None
    if resume_id:
        check_resumable(resume_id)
        resume = resume_state(resume_id, tracking_dir, _checkpoint_dir(cfg, resume_id))
        cfg = resumed_config(resume.checkpoint["config"], cfg)
    seed_everything(cfg.seed)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    device = resolve_device(cfg.trainer.device)
    tags = {**base_tags(str(device)), **{k: str(v) for k, v in cfg.tracking.tags.items()}}
    if cfg.preset:
        tags["preset"] = str(cfg.preset)
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = str(cfg.tracking.parent_run_id)
    tags.update(_hydra_job())
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    with RunTracker(
        experiment=cfg.tracking.experiment,
        store_dir=tracking_dir,
        run_name=cfg.run_name or default_run_name(cfg),
        tags=tags,
        resume_run_id=cfg.resume,
        system_metrics=cfg.tracking.system_metrics,
        system_metrics_interval_s=cfg.tracking.system_metrics_interval_s,
    ) as tracker:
        tracker.set_tags({**process_tags(), "device": str(device)})  # a resumed run's own
        log.info("MLflow run %s in %s", tracker.run_id, tracker.artifact_uri)
        print(
            f"MLflow run id: {tracker.run_id}  (see it with `make ui`, or "
            f"`chordrec ui` then http://127.0.0.1:5000)",
            flush=True,
        )
        if resume is None:
            tracker.log_config(config, OmegaConf.to_yaml(cfg, resolve=True))
        # Bad data or a model that does not fit the data fail here: the run ends FAILED
        # with the error as a tag, its config logged.
        context = build_context(cfg)
        model = context.model
        if resume is None:
            record_dataset(tracker, context)
        else:
            tracker.backfill_history(resume.checkpoint["history"])
        checkpoint_dir = _checkpoint_dir(cfg, tracker.run_id)
        if cfg.init_from and resume is None:
            tracker.set_tags({"init_from": str(cfg.init_from)})
            model_config = OmegaConf.to_container(cfg.model, resolve=True)
            assert isinstance(model_config, dict)
            load_initial_weights(
                model, model_config, str(cfg.init_from), tracking_dir, checkpoint_dir / "init"
            )
        if any(p.requires_grad for p in model.parameters()):
            optimizer = instantiate(cfg.optimizer, params=model.parameters())
            result = fit(
                model,
                context.train_examples,
                context.validation,
                optimizer,
                instantiate(cfg.scheduler, optimizer=optimizer),
                _settings(cfg),
                device,
                checkpoint_dir,
                observer=tracker.log_epoch,
                resume_from=resume.checkpoint if resume else None,
                checkpoint_extra={"config": config},
            )
        else:  # a training-free model (template matching): evaluate it as it is
            result = FitResult.untrained(model)
        summary = finish_run(tracker, context, result, device, cfg, checkpoint_dir / "best.pt")
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # both are in the run's artifacts
    log.info(
        "test frame accuracy %.4f (validation %.4f)",
        summary["test_frame_acc"],
        summary["val_frame_acc"],
    )
    return summary["val_frame_acc"]


MACHINE_SETTINGS = (
    "trainer.device",
    "trainer.num_threads",
    "trainer.progress",
    "data.root",
    "data.num_workers",
    "paths",
    "tracking",
)
"""Settings a resumed run takes from the command line that resumes it, not from its own
config: where it runs, where its data and tracking store are. Everything that shapes
its results stays as the run began."""


def resumed_config(saved: dict[str, Any], command_line: DictConfig) -> DictConfig:
    """The config a resumed run continues with: its own ``saved`` config, with
    :data:`MACHINE_SETTINGS` and ``resume`` from ``command_line``."""
    cfg = OmegaConf.create(saved)
    for key in MACHINE_SETTINGS:
        OmegaConf.update(cfg, key, OmegaConf.select(command_line, key), merge=False)
    cfg.resume = command_line.resume
    return cfg


def _checkpoint_dir(cfg: DictConfig, run_id: str) -> Path:
    """Where a run's checkpoints are written before they are logged."""
    return Path(cfg.tracking.store_dir).resolve() / "checkpoints-in-progress" / run_id


def _hydra_job() -> dict[str, Any]:
    """Tags that tie a run to its Hydra sweep (multirun), if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    if hc.mode is None:  # composed outside a Hydra app (tests, notebooks)
        return {}
    tags = {"hydra_mode": str(hc.mode.name).lower()}
    if str(hc.mode.name) == "MULTIRUN":
        tags["sweep_dir"] = str(Path(hc.sweep.dir).resolve())
        tags["sweep_job"] = str(hc.job.num)
        tags["sweep_overrides"] = " ".join(hc.overrides.task)
    return tags


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one job. A :class:`~chordrec.errors.UserError` of a single run is printed as
    one line and exits with status 1 (``HYDRA_FULL_ERROR=1`` keeps its traceback); a
    multirun's launcher reports its jobs' errors itself."""
    try:
        return run(cfg)
    except UserError as exc:
        if (
            os.environ.get("HYDRA_FULL_ERROR") == "1"
            or _hydra_job().get("hydra_mode") == "multirun"
        ):
            raise
        print(f"chordrec.train: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
