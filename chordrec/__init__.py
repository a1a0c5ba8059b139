"""chordrec: chord-recognition experiments on RWC-Pop chroma, tracked in MLflow."""

__version__ = "0.1.0"
