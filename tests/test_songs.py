"""Tests of chordrec.data.songs: loading, validating and splitting RWC-Pop songs.

Every bad-input test builds a tiny data set with the real layout (``chroma/``,
``chord/``, ``beat/`` .npy files named like ``N001-M01-T01``) in ``tmp_path``, breaks
one file and checks that :class:`SongDataError` names that file and the problem.
The integration test at the end checks the report's split sizes on the real data.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from chordrec.data.sequences import count_chunks, song_steps
from chordrec.data.songs import (
    Song,
    SongDataError,
    load_song,
    load_songs,
    song_names,
    split_songs,
    validate_song,
)

NAMES = ("N001-M01-T01", "N002-M01-T02", "N003-M01-T03", "N004-M01-T04")
SONG = NAMES[1]  # the song the bad-input tests break
FOLDERS = {"chroma": "chroma", "labels": "chord", "beats": "beat"}
REAL_DATA = Path(__file__).resolve().parents[1] / "data" / "rwc-pop"


def make_song(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chroma (frames, 12) float32 with unit-norm rows, labels (frames,) int64 in 0..24,
    beats int64 every 7 frames from frame 3 (all inside the song)."""
    rng = np.random.default_rng(seed)
    chroma = rng.random((n_frames, 12)).astype(np.float32)
    chroma /= np.linalg.norm(chroma, axis=1, keepdims=True)
    labels = rng.integers(0, 25, n_frames).astype(np.int64)
    beats = np.arange(3, n_frames, 7, dtype=np.int64)
    return chroma, labels, beats


def make_dataset(root: Path, names: tuple[str, ...] = NAMES) -> dict[str, Song]:
    """Write songs of 40, 47, 54, ... frames under ``root`` in the data set's layout;
    return what was written, by name."""
    for folder in FOLDERS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
    songs = {}
    for i, name in enumerate(names):
        chroma, labels, beats = make_song(40 + 7 * i, seed=i)
        np.save(root / "chroma" / f"{name}.npy", chroma)
        np.save(root / "chord" / f"{name}.npy", labels)
        np.save(root / "beat" / f"{name}.npy", beats)
        songs[name] = Song(name, chroma, labels, beats)
    return songs


def song_path(root: Path, kind: str, name: str = SONG) -> Path:
    return root / FOLDERS[kind] / f"{name}.npy"


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, Song]]:
    root = tmp_path / "rwc-pop"
    return root, make_dataset(root)


def _load_error(root: Path, name: str = SONG) -> str:
    with pytest.raises(SongDataError) as info:
        load_song(root, name)
    return str(info.value)


# --------------------------------------------------------------------------- loading


def test_load_song_returns_the_written_arrays(dataset):
    root, songs = dataset
    song = load_song(root, SONG)
    assert song.name == SONG
    assert song.chroma.dtype == np.float32 and song.chroma.shape == (47, 12)
    assert song.labels.dtype == np.int64 and song.n_frames == 47
    assert song.beats.dtype == np.int64
    np.testing.assert_array_equal(song.chroma, songs[SONG].chroma)
    np.testing.assert_array_equal(song.labels, songs[SONG].labels)
    np.testing.assert_array_equal(song.beats, songs[SONG].beats)


def test_load_songs_keeps_the_order_asked_for(dataset):
    root, _ = dataset
    loaded = load_songs(root, [NAMES[2], NAMES[0]])
    assert [s.name for s in loaded] == [NAMES[2], NAMES[0]]


def test_load_song_converts_other_float_and_int_dtypes(dataset):
    root, songs = dataset
    np.save(song_path(root, "chroma"), songs[SONG].chroma.astype(np.float64))
    np.save(song_path(root, "labels"), songs[SONG].labels.astype(np.int16))
    np.save(song_path(root, "beats"), songs[SONG].beats.astype(np.int32))
    song = load_song(root, SONG)
    assert song.chroma.dtype == np.float32
    assert song.labels.dtype == np.int64 and song.beats.dtype == np.int64


def test_beat_on_the_last_frame_is_inside_the_song(dataset):
    root, songs = dataset
    np.save(song_path(root, "beats"), np.array([0, 10, 46], np.int64))
    assert load_song(root, SONG).beats[-1] == 46


# ------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("kind", ["chroma", "labels", "beats"])
def test_garbage_bytes_name_the_file(dataset, kind):
    root, _ = dataset
    path = song_path(root, kind)
    path.write_bytes(b"this is not a numpy file \x00\x01\x02" * 3)
    message = _load_error(root)
    assert str(path) in message
    assert "not a readable .npy array" in message


@pytest.mark.parametrize("kind", ["chroma", "labels", "beats"])
def test_truncated_npy_names_the_file(dataset, kind):
    root, _ = dataset
    path = song_path(root, kind)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    message = _load_error(root)
    assert str(path) in message
    assert "not a readable .npy array" in message


def test_empty_file_names_the_file(dataset):
    root, _ = dataset
    path = song_path(root, "chroma")
    path.write_bytes(b"")
    message = _load_error(root)
    assert str(path) in message and "not a readable .npy array" in message


class _Booby:
    """Unpickling this object creates the marker file: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["chroma", "labels", "beats"])
def test_pickled_object_array_is_refused_without_unpickling(dataset, tmp_path, kind):
    root, _ = dataset
    marker = tmp_path / f"unpickled-{kind}"
    objects = np.empty(3, dtype=object)
    objects[:] = [_Booby(marker), 1, 2]
    path = song_path(root, kind)
    with path.open("wb") as f:  # np.save would add nothing but the suffix
        np.save(f, objects, allow_pickle=True)
    message = _load_error(root)
    assert str(path) in message
    assert "not a readable .npy array" in message
    assert "allow_pickle" in message
    assert not marker.exists(), "the pickled payload was executed"


def test_npz_archive_under_npy_name_raises_song_data_error(dataset):
    root, songs = dataset
    path = song_path(root, "chroma")
    with path.open("wb") as f:
        np.savez(f, chroma=songs[SONG].chroma)
    message = _load_error(root)
    assert str(path) in message


# ------------------------------------------------------------------- bad chroma


def _rewrite(root: Path, kind: str, array: np.ndarray) -> Path:
    path = song_path(root, kind)
    np.save(path, array)
    return path


def test_chroma_with_11_bins(dataset):
    root, songs = dataset
    path = _rewrite(root, "chroma", songs[SONG].chroma[:, :11])
    message = _load_error(root)
    assert str(path) in message
    assert "chroma must have shape (frames, 12)" in message and "(47, 11)" in message


def test_chroma_one_dimensional(dataset):
    root, songs = dataset
    path = _rewrite(root, "chroma", songs[SONG].chroma[:, 0])
    message = _load_error(root)
    assert str(path) in message and "chroma must have shape (frames, 12)" in message


def test_integer_chroma(dataset):
    root, songs = dataset
    path = _rewrite(root, "chroma", (songs[SONG].chroma * 100).astype(np.int32))
    message = _load_error(root)
    assert str(path) in message
    assert "chroma must be floating point" in message and "int32" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_chroma(dataset, bad):
    root, songs = dataset
    chroma = songs[SONG].chroma.copy()
    chroma[9, 4] = bad
    chroma[20, 0] = bad
    path = _rewrite(root, "chroma", chroma)
    message = _load_error(root)
    assert str(path) in message
    assert "NaN or Inf" in message and "first at frame 9" in message


# ------------------------------------------------------------------- bad labels


@pytest.mark.parametrize("n_labels", [46, 48])
def test_chroma_and_labels_of_different_lengths(dataset, n_labels):
    root, _ = dataset
    path = _rewrite(root, "labels", np.zeros(n_labels, np.int64))
    message = _load_error(root)
    assert str(path) in message  # the chord file is blamed: it disagrees with chroma
    assert f"chroma has 47 frames but labels have {n_labels}" in message


@pytest.mark.parametrize(("bad", "frame"), [(-1, 5), (25, 30), (-100, 0)])
def test_labels_out_of_range(dataset, bad, frame):
    root, songs = dataset
    labels = songs[SONG].labels.copy()
    labels[frame] = bad
    path = _rewrite(root, "labels", labels)
    message = _load_error(root)
    assert str(path) in message
    assert f"label {bad} at frame {frame} is outside 0..24" in message


def test_float_labels(dataset):
    root, songs = dataset
    path = _rewrite(root, "labels", songs[SONG].labels.astype(np.float64))
    message = _load_error(root)
    assert str(path) in message
    assert "labels must be a 1-D integer array" in message and "float64" in message


def test_two_dimensional_labels(dataset):
    root, songs = dataset
    path = _rewrite(root, "labels", songs[SONG].labels[:, None])
    message = _load_error(root)
    assert str(path) in message and "labels must be a 1-D integer array" in message


# ------------------------------------------------------------------- bad beats


@pytest.mark.parametrize("kind", ["chroma", "labels", "beats"])
def test_missing_file(dataset, kind):
    root, _ = dataset
    path = song_path(root, kind)
    path.unlink()
    message = _load_error(root)
    assert str(path) in message and "file is missing" in message


@pytest.mark.parametrize(
    ("beats", "detail"),
    [([0, 8, 8, 16], "beat 2 (8) follows 8"), ([0, 8, 4, 16], "beat 2 (4) follows 8")],
)
def test_beats_not_increasing(dataset, beats, detail):
    root, _ = dataset
    path = _rewrite(root, "beats", np.array(beats, np.int64))
    message = _load_error(root)
    assert str(path) in message
    assert "beats must increase" in message and detail in message


def test_decreasing_unsigned_beats(dataset):
    root, _ = dataset
    path = _rewrite(root, "beats", np.array([0, 8, 4, 16], np.uint64))
    message = _load_error(root)
    assert str(path) in message and "beats must increase" in message


@pytest.mark.parametrize(
    ("beats", "detail"), [([0, 10, 47], "range 0..47"), ([-1, 10, 20], "range -1..20")]
)
def test_beat_outside_the_song(dataset, beats, detail):
    root, _ = dataset
    path = _rewrite(root, "beats", np.array(beats, np.int64))
    message = _load_error(root)
    assert str(path) in message
    assert "beats must lie inside the song's 47 frames" in message and detail in message


@pytest.mark.parametrize("beats", [[], [12]])
def test_fewer_than_two_beats(dataset, beats):
    root, _ = dataset
    path = _rewrite(root, "beats", np.array(beats, np.int64))
    message = _load_error(root)
    assert str(path) in message
    assert f"needs at least 2 beats, got {len(beats)}" in message


def test_float_beats(dataset):
    root, songs = dataset
    path = _rewrite(root, "beats", songs[SONG].beats.astype(np.float64))
    message = _load_error(root)
    assert str(path) in message and "beats must be a 1-D integer array" in message


def test_validate_song_prefixes_where():
    chroma, labels, beats = make_song(20, seed=0)
    validate_song(chroma, labels, beats)  # valid: no error
    with pytest.raises(SongDataError, match=r"^my song: needs at least 2 beats"):
        validate_song(chroma, labels, beats[:1], where="my song")


# ------------------------------------------------------------------- names and split


def test_song_names_sorted(tmp_path):
    root = tmp_path / "data"
    shuffled = list(NAMES)
    random.Random(3).shuffle(shuffled)
    make_dataset(root, tuple(shuffled))
    (root / "chroma" / "README.txt").write_text("not a song")
    assert song_names(root) == list(NAMES)


def test_song_names_missing_chroma_dir(tmp_path):
    root = tmp_path / "nothing-here"
    with pytest.raises(SongDataError) as info:
        song_names(root)
    message = str(info.value)
    assert str(root / "chroma") in message and "no such directory" in message


def test_song_names_empty_chroma_dir(tmp_path):
    (tmp_path / "chroma").mkdir()
    with pytest.raises(SongDataError) as info:
        song_names(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "chroma") in message and "no .npy files" in message


def _fake_names(n: int = 100) -> list[str]:
    names = [f"N{i:03d}-M{1 + (i - 1) // 15:02d}-T{1 + (i - 1) % 15:02d}" for i in range(1, n + 1)]
    random.Random(0).shuffle(names)
    return names


def test_split_songs_report_split():
    split = split_songs(_fake_names(), [0, 60], [60, 80], [80, 100])
    assert set(split) == {"train", "test", "validation"}
    assert [n[:4] for n in split["train"]] == [f"N{i:03d}" for i in range(1, 61)]
    assert [n[:4] for n in split["test"]] == [f"N{i:03d}" for i in range(61, 81)]
    assert [n[:4] for n in split["validation"]] == [f"N{i:03d}" for i in range(81, 101)]


def test_split_songs_max_songs():
    split = split_songs(_fake_names(), (0, 60), (60, 80), (80, 100), max_songs=2)
    assert [n[:4] for n in split["train"]] == ["N001", "N002"]
    assert [n[:4] for n in split["test"]] == ["N061", "N062"]
    assert [n[:4] for n in split["validation"]] == ["N081", "N082"]


def test_split_songs_max_songs_none_keeps_all():
    split = split_songs(_fake_names(), (0, 60), (60, 80), (80, 100), max_songs=None)
    assert [len(v) for v in (split["train"], split["test"], split["validation"])] == [60, 20, 20]


@pytest.mark.parametrize(
    ("train", "test", "validation"),
    [
        ((0, 61), (60, 80), (80, 100)),
        ((0, 60), (60, 81), (80, 100)),
        ((0, 60), (60, 80), (50, 55)),
        ((0, 100), (10, 20), (30, 40)),
    ],
)
def test_split_songs_overlapping_ranges(train, test, validation):
    with pytest.raises(ValueError, match="overlaps"):
        split_songs(_fake_names(), train, test, validation)


@pytest.mark.parametrize(
    ("train", "test", "validation"),
    [
        ((0, 60), (60, 80), (80, 101)),
        ((-1, 60), (60, 80), (80, 100)),
        ((0, 60), (80, 80), (81, 100)),
        ((0, 60), (70, 65), (80, 100)),
        ((100, 101), (0, 10), (10, 20)),
    ],
)
def test_split_songs_out_of_range(train, test, validation):
    with pytest.raises(ValueError, match="does not fit the 100 songs"):
        split_songs(_fake_names(), train, test, validation)


# ------------------------------------------------------------------- the real data set


@pytest.mark.integration
def test_report_split_sizes_on_real_data():
    if not (REAL_DATA / "chroma").is_dir():
        pytest.skip(f"real data set not found at {REAL_DATA}")
    split = split_songs(song_names(REAL_DATA), [0, 60], [60, 80], [80, 100])
    expected = {
        # part: frames, inter-beat spans, 32-step chunks at beat level and frame level
        "train": (1_237_379, 27_552, 834, 38_637),
        "test": (427_121, 9_373, 284, 13_339),
        "validation": (437_700, 10_617, 323, 13_668),
    }
    for part, (frames, spans, beat_chunks, frame_chunks) in expected.items():
        songs = load_songs(REAL_DATA, split[part])
        n_frames = [s.n_frames for s in songs]
        n_spans = [len(s.beats) - 1 for s in songs]
        assert sum(n_frames) == frames, part
        assert sum(n_spans) == spans, part
        assert [song_steps(s, "beat").n_steps for s in songs[:3]] == n_spans[:3]
        assert count_chunks(n_spans, 32) == beat_chunks, part
        assert count_chunks(n_frames, 32) == frame_chunks, part
    assert split["train"][0] == "N001-M01-T01" and split["validation"][-1] == "N100-M07-T10"
