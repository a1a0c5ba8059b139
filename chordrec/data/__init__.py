"""The data set: the chord vocabulary, songs and beats on disk, the steps and examples a
model sees, and fetching the data set with pinned checksums."""
