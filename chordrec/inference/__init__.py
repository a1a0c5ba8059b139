"""Running a model and scoring what it says: :mod:`.predictor` (the recipe and predictor
every caller runs a model through; imports torch) and :mod:`.metrics` (frame accuracy,
MIREX scores, Harte labels to classes; no torch)."""
