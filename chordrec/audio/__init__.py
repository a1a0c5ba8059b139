"""Audio in: reading files and computing the data set's chroma and beats (the only
librosa user)."""
