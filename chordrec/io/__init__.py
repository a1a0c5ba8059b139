"""File formats, one owner each: checkpoints, chord files (lab, JAMS, CSV) and the
atomic write every file goes through."""
