"""Tests of chordrec.fetch: fetching the data set from mirrors, verification, failure cleanup.

They use the team's read-only copy of the data set as the mirror (``$CHORDREC_SHARED_DATA``
or ``../shared/datasets/rwc-pop`` next to the repository) and are skipped without it.
No test touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chordrec import fetch
from chordrec.fetch import (
    DEFAULT_SOURCE,
    DataFetchError,
    dataset_digest,
    default_source,
    fetch_dataset,
    pinned_checksums,
    pinned_checksums_text,
    upstream_url,
    verify_dataset,
)

CORRUPT_REL = "chroma/N003-M01-T03.npy"


def _shared_data_dir() -> Path:
    env = os.environ.get("CHORDREC_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).parents[1] / ".." / "shared" / "datasets" / "rwc-pop"


@pytest.fixture(scope="module")
def shared() -> Path:
    path = _shared_data_dir().resolve()
    if not (path / "SHA256SUMS").is_file():
        pytest.skip(
            f"shared RWC-Pop copy not found at {path} "
            "(set CHORDREC_SHARED_DATA to the data set directory)"
        )
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[[Path], str]]:
    """Factory: serve a directory over http://127.0.0.1:<free port>; return the base URL."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _corrupt_mirror(shared: Path, root: Path, rel: str = CORRUPT_REL) -> Path:
    """A mirror like ``shared`` but with one byte of ``rel`` changed (the rest symlinked)."""
    root.mkdir()
    bad_folder, bad_name = rel.split("/")
    for entry in shared.iterdir():
        if entry.name != bad_folder:
            (root / entry.name).symlink_to(entry)
    (root / bad_folder).mkdir()
    for f in (shared / bad_folder).iterdir():
        if f.name != bad_name:
            (root / bad_folder / f.name).symlink_to(f)
    data = bytearray((shared / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / rel).write_bytes(bytes(data))
    return root


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ no data needed


def test_pinned_list_has_400_files() -> None:
    entries = pinned_checksums()
    assert len(entries) == 400
    folders = {rel.split("/")[0] for rel in entries}
    assert folders == {"chroma", "chord", "beat", "labs"}
    assert "labs/N001-M01-T01.lab" in entries and "chroma/N100-M07-T10.npy" in entries


def test_default_source_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHORDREC_DATA_SOURCE", raising=False)
    assert default_source() == DEFAULT_SOURCE == "github"
    monkeypatch.setenv("CHORDREC_DATA_SOURCE", "https://mirror.example/rwc-pop")
    assert default_source() == "https://mirror.example/rwc-pop"


def test_upstream_urls() -> None:
    assert upstream_url("chroma/N001-M01-T01.npy") == (
        "https://raw.githubusercontent.com/juhannam/gct634-2018/"
        "fb408edae7fcbd8853cc698df863df9256e1f981/hw3/dataset/chroma/N001-M01-T01.npy"
    )
    assert upstream_url("labs/N100-M07-T10.lab") == (
        "https://raw.githubusercontent.com/tmc323/Chord-Annotations/"
        "4b022ff5a95ff1d9ba1057ea4c982e45484d764f/RWC_Pop_Chords/N100-M07-T10.lab"
    )


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(DataFetchError, match="not a directory"):
        fetch_dataset(str(tmp_path / "nope"), tmp_path / "d", progress=False)
    with pytest.raises(DataFetchError, match="unsupported URL scheme"):
        fetch_dataset("ftp://example.org/x", tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()
    assert _leftovers(tmp_path) == []


def test_unreachable_server(tmp_path: Path, closed_port_url: str) -> None:
    dest = tmp_path / "rwc-pop"
    with pytest.raises(DataFetchError, match=r"cannot reach http://127\.0\.0\.1:\d+/") as err:
        fetch_dataset(closed_port_url, dest, progress=False, timeout=5)
    assert str(err.value).split(":")[0] in pinned_checksums()  # names a file
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------ against the shared copy


def test_shared_copy_verifies(shared: Path) -> None:
    verify_dataset(shared)
    expected = hashlib.sha256(pinned_checksums_text()).hexdigest()
    assert dataset_digest(shared) == expected


def test_fetch_from_local_directory(shared: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data" / "rwc-pop"
    assert fetch_dataset(str(shared), dest, progress=False) == dest.absolute()
    verify_dataset(dest)
    assert (dest / "SHA256SUMS").read_bytes() == pinned_checksums_text()
    assert (dest / "README.md").read_bytes() == (shared / "README.md").read_bytes()
    assert dataset_digest(dest) == dataset_digest(shared)
    assert _leftovers(dest.parent) == []


def test_fetch_from_file_url(shared: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rwc-pop"
    fetch_dataset(shared.as_uri(), dest, progress=False)
    verify_dataset(dest)


def test_fetch_over_http(
    shared: Path, tmp_path: Path, serve: Callable[[Path], str], capsys: pytest.CaptureFixture
) -> None:
    dest = tmp_path / "rwc-pop"
    base = serve(shared)
    fetch_dataset(base + "/", dest, progress=True)
    verify_dataset(dest)
    assert (dest / "README.md").is_file()
    assert "400/400" in capsys.readouterr().err  # the tqdm bar
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("via", ["directory", "http"])
def test_corrupted_mirror(
    shared: Path, tmp_path: Path, serve: Callable[[Path], str], via: str
) -> None:
    mirror = _corrupt_mirror(shared, tmp_path / "mirror")
    source = str(mirror) if via == "directory" else serve(mirror)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "rwc-pop"
    with pytest.raises(DataFetchError, match=rf"^{CORRUPT_REL}: sha256 mismatch \(expected "):
        fetch_dataset(source, dest, progress=False)
    assert not dest.exists()
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("via", ["directory", "http"])
def test_missing_file_in_mirror(
    shared: Path, tmp_path: Path, serve: Callable[[Path], str], via: str
) -> None:
    mirror = _corrupt_mirror(shared, tmp_path / "mirror", rel="labs/N050-M04-T02.lab")
    (mirror / "labs" / "N050-M04-T02.lab").unlink()
    source = str(mirror) if via == "directory" else serve(mirror)
    out = tmp_path / "out"
    out.mkdir()
    match = "missing from mirror" if via == "directory" else "HTTP 404"
    with pytest.raises(DataFetchError, match=rf"^labs/N050-M04-T02\.lab: {match}"):
        fetch_dataset(source, out / "rwc-pop", progress=False)
    assert list(out.iterdir()) == []


def test_existing_dest(
    shared: Path,
    tmp_path: Path,
    closed_port_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dest = tmp_path / "rwc-pop"
    fetch_dataset(str(shared), dest, progress=False)

    # Verified: returned as is; the unreachable source proves nothing is fetched.
    def no_fetch(*args: object, **kwargs: object) -> int:
        raise AssertionError("fetched although dest verified")

    with monkeypatch.context() as m:
        m.setattr(fetch, "_fetch_all", no_fetch)
        with caplog.at_level(logging.INFO, logger="chordrec.fetch"):
            assert fetch_dataset(closed_port_url, dest, progress=False) == dest
    assert "already present and verified" in caplog.text

    # Corrupted: an error naming the file, dest untouched.
    bad = dest / "beat" / "N010-M01-T10.npy"
    _flip_byte(bad)
    corrupted = bad.read_bytes()
    with pytest.raises(DataFetchError, match=r"beat/N010-M01-T10\.npy: sha256 mismatch"):
        fetch_dataset(str(shared), dest, progress=False)
    assert bad.read_bytes() == corrupted

    # A failing forced fetch leaves the old dest in place.
    with pytest.raises(DataFetchError, match="cannot reach"):
        fetch_dataset(closed_port_url, dest, force=True, progress=False)
    assert bad.read_bytes() == corrupted

    # force=True replaces it.
    (dest / "stale-extra-file").write_text("x")
    assert fetch_dataset(str(shared), dest, force=True, progress=False) == dest
    verify_dataset(dest)
    assert not (dest / "stale-extra-file").exists()
    assert _leftovers(tmp_path) == []


def test_verify_and_digest_errors(shared: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rwc-pop"
    fetch_dataset(str(shared), dest, progress=False)  # a writable copy
    (dest / "labs" / "N100-M07-T10.lab").unlink()
    with pytest.raises(DataFetchError, match=r"^labs/N100-M07-T10\.lab: missing"):
        verify_dataset(dest)
    (dest / "SHA256SUMS").write_bytes(pinned_checksums_text() + b"\n")
    with pytest.raises(DataFetchError, match="^SHA256SUMS: differs"):
        dataset_digest(dest)
    (dest / "SHA256SUMS").unlink()
    with pytest.raises(DataFetchError, match="^SHA256SUMS: missing"):
        dataset_digest(dest)
