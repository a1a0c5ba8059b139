"""The models: one configurable CRNN, and training-free chroma template matching.

``build_model`` builds either from its config; ``_target_`` names
(``chordrec.models.CRNN``, ``chordrec.models.ChromaTemplates``) are those of the
model presets in ``chordrec/conf/model/`` and of every checkpoint's config.

The networks (:mod:`chordrec.models.networks`) are torch modules, imported on first use
of a name below, so that the numpy template matcher (:mod:`chordrec.models.templates`)
loads without torch (``chordrec transcribe --model templates``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chordrec.models.networks import (
        CRNN,
        ChromaTemplates,
        ConvBlock,
        build_model,
        describe_model,
    )

__all__ = ["CRNN", "ChromaTemplates", "ConvBlock", "build_model", "describe_model"]


def __getattr__(name: str) -> Any:
    """The names of :mod:`chordrec.models.networks`, imported (with torch) on first use."""
    if name in __all__:
        return getattr(importlib.import_module("chordrec.models.networks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
