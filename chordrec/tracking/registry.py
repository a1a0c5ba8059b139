"""What runs leave behind for later use: their checkpoints and registered model versions."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from chordrec.constants import REGISTERED_MODEL
from chordrec.tracking.runs import get_run
from chordrec.tracking.store import (
    ServerUnavailable,
    TrackingError,
    request_filter,
    request_tag,
    retry_locked,
)


def run_checkpoint(run_id: str, name: str = "best", dest: str | Path | None = None) -> Path:
    """Download ``checkpoints/<name>.pt`` of MLflow run ``run_id`` into ``dest`` (a
    temporary directory by default); :class:`TrackingError` when the run or file is missing."""
    get_run(run_id)
    dest = Path(dest or tempfile.mkdtemp(prefix="chordrec-ckpt-"))
    try:
        path = retry_locked(
            lambda: mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"checkpoints/{name}.pt", dst_path=str(dest)
            )
        )
    except ServerUnavailable:
        raise
    except Exception as exc:  # MlflowException, OSError: the artifact is not there
        raise TrackingError(f"run {run_id} has no checkpoints/{name}.pt ({exc})") from exc
    return Path(path)


def registered_run_id(model_uri: str) -> str:
    """The source run of a registered model version: ``model_uri`` is
    ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a logged model
    ``models:/<model id>``. Raises :class:`TrackingError` when nothing matches."""
    if not model_uri.startswith("models:/"):
        raise ValueError(f"not a registry URI (models:/...): {model_uri!r}")
    ref = model_uri[len("models:/") :].strip("/")
    client = MlflowClient()
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = retry_locked(lambda: client.get_model_version_by_alias(name, alias))
        elif "/" in ref:
            name, number = ref.split("/", 1)
            version = retry_locked(lambda: client.get_model_version(name, number))
        else:
            run_id = retry_locked(lambda: client.get_logged_model(ref)).source_run_id
            if not run_id:
                raise TrackingError(f"{model_uri} was not logged by a run")
            return run_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(
            f"{model_uri}: not found in the registry at {mlflow.get_registry_uri()} ({exc}); "
            "register a run first (`chordrec register <run id> --alias champion`)"
        ) from exc
    if version.run_id:
        return version.run_id
    if version.source.startswith("models:/"):
        return registered_run_id(version.source)
    raise TrackingError(f"{model_uri}: version {version.version} names no source run")


def register_run_model(run_id: str, name: str = REGISTERED_MODEL, alias: str | None = None) -> str:
    """Register the model that run ``run_id`` logged (``mlflow.pytorch``, name "model")
    as a new version of registered model ``name``, optionally pointing ``alias`` at it;
    returns the version. The run must hold ``checkpoints/best.pt`` (what transcription
    loads). Raises :class:`TrackingError` naming what is missing. The version is tagged
    with a :func:`~chordrec.tracking.store.request_tag`: a reply lost after the registry
    made it is answered by finding that version, never by a second one."""
    client = MlflowClient()
    run = get_run(run_id, client)
    checkpoints = retry_locked(lambda: client.list_artifacts(run_id, "checkpoints"))
    if not any(item.path == "checkpoints/best.pt" for item in checkpoints):
        raise TrackingError(f"run {run_id} has no checkpoints/best.pt: nothing to transcribe with")
    logged = retry_locked(
        lambda: client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
        )
    )
    if not logged:
        raise TrackingError(
            f"run {run_id} logged no model named 'model' (was it trained with "
            "tracking.log_model=false?)"
        )
    request = request_tag()
    version = retry_locked(
        lambda: mlflow.register_model(f"models:/{logged[0].model_id}", name, tags=request),
        landed=lambda: next(iter(client.search_model_versions(request_filter(request))), None),
    )
    if alias:
        retry_locked(lambda: client.set_registered_model_alias(name, alias, version.version))
    return str(version.version)
