"""The models: one configurable CRNN, and training-free chroma template matching.

``build_model`` builds either from its config; ``_target_`` names
(``chordrec.models.CRNN``, ``chordrec.models.ChromaTemplates``) are those of the
model presets in ``chordrec/conf/model/`` and of every checkpoint's config.
"""

from chordrec.models.networks import CRNN, ChromaTemplates, ConvBlock, build_model, describe_model

__all__ = ["CRNN", "ChromaTemplates", "ConvBlock", "build_model", "describe_model"]
