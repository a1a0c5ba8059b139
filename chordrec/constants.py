"""chordrec's fixed quantities and default names, each defined once.

The data set's signal parameters (its chroma is 44.1 kHz audio at a hop of 512
samples, about 86.1 frames per second) and the defaults that command-line options
share with the Hydra configs (``chordrec/conf/paths/default.yaml`` and
``chordrec/conf/tracking/default.yaml`` hold the same values for training runs).
"""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_RATE = 44100
"""Hz: the audio rate the data set's chroma was computed at."""

HOP_LENGTH = 512
"""Samples between chroma frames."""

FRAME_RATE = SAMPLE_RATE / HOP_LENGTH
"""Chroma frames per second (about 86.13)."""

DATA_ENV_VAR = "CHORDREC_DATA"
"""The environment variable that moves the data folder (``paths.data`` in the config)."""

STORE_ENV_VAR = "CHORDREC_STORE"
"""The environment variable that moves the local tracking store (``paths.store_dir``)."""


def env_or(name: str, default: str) -> str:
    """The environment variable ``name``, else ``default`` when it is unset or empty (an
    empty ``CHORDREC_DATA`` means the default folder, not the file system's root). The
    configs read the same through the ``chordrec.env`` resolver (:mod:`chordrec.train`)."""
    return os.environ.get(name) or default


DATA_HOME = Path(env_or(DATA_ENV_VAR, "data"))
"""The data folder: ``$CHORDREC_DATA``, else ``data`` in the working directory."""

DATA_DIR = DATA_HOME / "rwc-pop"
"""Where ``chordrec data fetch`` puts the data set."""

OOD_DIR = DATA_HOME / "ood-synth"
"""Where ``chordrec data synth`` puts the synthesized out-of-domain songs."""

SYNTH_TRAIN_DIR = DATA_HOME / "synth-train"
"""Where ``chordrec data synth`` puts the synthetic training songs (``data.synth_root``)."""

OOD_SONGS_PER_PART = 64
"""Songs in each part of the out-of-domain set. A song depends only on the seed, its part
and its index, so the first ``n`` songs of a part are the same whatever its size
(``chordrec ood --max-songs n`` scores them)."""

SYNTH_TRAIN_SONGS = 240
"""Songs in the synthetic training set."""

STORE_DIR = Path(env_or(STORE_ENV_VAR, "mlruns"))
"""The default tracking store (SQLite database and artifacts): ``$CHORDREC_STORE``, else
``mlruns`` in the working directory."""


def store_database_uri(store_dir: str | Path) -> str:
    """The tracking URI of the local store in ``store_dir``: its SQLite database
    ``sqlite:///<absolute store_dir>/mlflow.db``. Makes nothing."""
    return f"sqlite:///{Path(store_dir).expanduser().resolve() / 'mlflow.db'}"


def chosen_tracking_uri(store_dir: str | Path, tracking_uri: str | None = None) -> str:
    """The store chordrec's tracking uses: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``,
    else the local store in ``store_dir`` (:func:`store_database_uri`). Makes nothing."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or store_database_uri(store_dir)


EXPERIMENT = "chordrec"
"""The default MLflow experiment of training runs."""

REGISTERED_MODEL = "chordrec"
"""The registered model that ``chordrec register`` adds versions to."""

CHAMPION = f"models:/{REGISTERED_MODEL}@champion"
"""The model ``chordrec transcribe`` uses by default."""

PRESETS = ("a", "b", "c", "d", "e", "f")
"""The report's experiments, one per column of its Table 5 (``chordrec/conf/experiment/a.yaml``...)."""

LONGEST_FIRST = ("b", "c", "d", "e", "f", "a")
"""The report's experiments by their training time on the 2-core CPU of docs/performance.md "Speed",
longest first: a study starts its members in this order (others after them), so that
its parallel jobs end close together."""
