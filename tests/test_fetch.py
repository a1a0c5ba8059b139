"""Tests of chordrec.data.fetch: fetching the data set from mirrors, verification, failure cleanup.

The tests that need the data set use the verified copy that ``make data`` fetched into
``data/rwc-pop`` (conftest's ``data_root``) as the mirror, and are skipped without it.
No test touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chordrec.data import fetch
from chordrec.data.fetch import (
    DEFAULT_SOURCE,
    DataFetchError,
    dataset_digest,
    default_source,
    ensure_dataset,
    fetch_dataset,
    pinned_checksums,
    pinned_checksums_text,
    upstream_url,
    verify_dataset,
)

CORRUPT_REL = "chroma/N003-M01-T03.npy"


FLOOD_BYTES = 256 << 20
"""What the flooding test server sends at most: far more than any pinned size plus the
socket buffers between it and the client."""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Flood:
    """One file that a server sends as ``budget`` zero bytes; counts the bytes it sent."""

    def __init__(self, rel: str, budget: int) -> None:
        self.rel = rel
        self.budget = budget
        self.sent = 0
        self.done = threading.Event()


class _FloodHandler(_QuietHandler):
    """Serves a directory, but ``flood.rel`` as ``flood.budget`` zero bytes with no
    Content-Length (an HTTP/1.0 body that ends when the connection does), or until the
    client hangs up."""

    def __init__(self, *args: Any, flood: _Flood, **kwargs: Any) -> None:
        self.flood = flood
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self.path != f"/{self.flood.rel}":
            super().do_GET()
            return
        self.send_response(200)
        self.end_headers()
        block = bytes(1 << 20)
        try:
            while self.flood.sent < self.flood.budget:
                self.wfile.write(block)
                self.flood.sent += len(block)
        except OSError:
            pass  # the client hung up
        finally:
            self.flood.done.set()


Handler = Callable[..., http.server.BaseHTTPRequestHandler]


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[..., str]]:
    """Factory: serve a directory over http://127.0.0.1:<free port> (with ``_QuietHandler``
    or the handler given); return the base URL."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(directory: Path, handler: Handler = _QuietHandler) -> str:
        bound = functools.partial(handler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), bound)
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


def _mirror_with(data: Path, root: Path, rel: str, content: bytes | None) -> Path:
    """A mirror like ``data`` (symlinked) but with ``rel`` holding ``content`` (None: absent)."""
    root.mkdir()
    head, _, tail = rel.partition("/")
    for entry in data.iterdir():
        if entry.name != head:
            (root / entry.name).symlink_to(entry)
    if tail:
        _mirror_with(data / head, root / head, tail, content)
    elif content is not None:
        (root / head).write_bytes(content)
    return root


def _corrupt_mirror(data: Path, root: Path, rel: str = CORRUPT_REL) -> Path:
    """A mirror like ``data`` but with one byte of ``rel`` changed (the rest symlinked)."""
    content = bytearray((data / rel).read_bytes())
    content[len(content) // 2] ^= 0xFF
    return _mirror_with(data, root, rel, bytes(content))


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


# ------------------------------------------------------------------ against the fetched data


def test_fetched_data_verifies(data_root: Path) -> None:
    verify_dataset(data_root)
    expected = hashlib.sha256(pinned_checksums_text()).hexdigest()
    assert dataset_digest(data_root) == expected


def test_fetch_from_local_directory(data_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data" / "rwc-pop"
    assert fetch_dataset(str(data_root), dest, progress=False) == dest.absolute()
    verify_dataset(dest)
    assert (dest / "SHA256SUMS").read_bytes() == pinned_checksums_text()
    assert (dest / "README.md").read_bytes() == (data_root / "README.md").read_bytes()
    assert dataset_digest(dest) == dataset_digest(data_root)
    assert _leftovers(dest.parent) == []


def test_fetch_from_file_url(data_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rwc-pop"
    fetch_dataset(data_root.as_uri(), dest, progress=False)
    verify_dataset(dest)


@pytest.mark.slow
def test_fetch_over_http(
    data_root: Path, tmp_path: Path, serve: Callable[..., str], capsys: pytest.CaptureFixture
) -> None:
    dest = tmp_path / "rwc-pop"
    base = serve(data_root)
    fetch_dataset(base + "/", dest, progress=True)
    verify_dataset(dest)
    assert (dest / "README.md").is_file()
    assert "400/400" in capsys.readouterr().err  # the tqdm bar
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("via", ["directory", "http"])
def test_corrupted_mirror(
    data_root: Path, tmp_path: Path, serve: Callable[..., str], via: str
) -> None:
    mirror = _corrupt_mirror(data_root, tmp_path / "mirror")
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
    data_root: Path, tmp_path: Path, serve: Callable[..., str], via: str
) -> None:
    mirror = _mirror_with(data_root, tmp_path / "mirror", "labs/N050-M04-T02.lab", None)
    source = str(mirror) if via == "directory" else serve(mirror)
    out = tmp_path / "out"
    out.mkdir()
    match = "missing from mirror" if via == "directory" else "HTTP 404"
    with pytest.raises(DataFetchError, match=rf"^labs/N050-M04-T02\.lab: {match}"):
        fetch_dataset(source, out / "rwc-pop", progress=False)
    assert list(out.iterdir()) == []


def test_existing_dest(
    data_root: Path,
    tmp_path: Path,
    closed_port_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dest = tmp_path / "rwc-pop"
    fetch_dataset(str(data_root), dest, progress=False)

    # Verified: returned as is; the unreachable source proves nothing is fetched.
    def no_fetch(*args: object, **kwargs: object) -> int:
        raise AssertionError("fetched although dest verified")

    with monkeypatch.context() as m:
        m.setattr(fetch, "_fetch_all", no_fetch)
        with caplog.at_level(logging.INFO, logger="chordrec.data.fetch"):
            assert fetch_dataset(closed_port_url, dest, progress=False) == dest
    assert "already present and verified" in caplog.text

    # Corrupted: an error naming the file, dest untouched.
    bad = dest / "beat" / "N010-M01-T10.npy"
    _flip_byte(bad)
    corrupted = bad.read_bytes()
    with pytest.raises(DataFetchError, match=r"beat/N010-M01-T10\.npy: sha256 mismatch"):
        fetch_dataset(str(data_root), dest, progress=False)
    assert bad.read_bytes() == corrupted

    # A failing forced fetch leaves the old dest in place.
    with pytest.raises(DataFetchError, match="cannot reach"):
        fetch_dataset(closed_port_url, dest, force=True, progress=False)
    assert bad.read_bytes() == corrupted

    # force=True replaces it.
    (dest / "stale-extra-file").write_text("x")
    assert fetch_dataset(str(data_root), dest, force=True, progress=False) == dest
    verify_dataset(dest)
    assert not (dest / "stale-extra-file").exists()
    assert _leftovers(tmp_path) == []


def test_verify_and_digest_errors(data_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rwc-pop"
    fetch_dataset(str(data_root), dest, progress=False)  # a writable copy
    (dest / "labs" / "N100-M07-T10.lab").unlink()
    with pytest.raises(DataFetchError, match=r"^labs/N100-M07-T10\.lab: missing"):
        verify_dataset(dest)
    (dest / "SHA256SUMS").write_bytes(pinned_checksums_text() + b"\n")
    with pytest.raises(DataFetchError, match="^SHA256SUMS: differs"):
        dataset_digest(dest)
    (dest / "SHA256SUMS").unlink()
    with pytest.raises(DataFetchError, match="^SHA256SUMS: missing"):
        dataset_digest(dest)


# ------------------------------------------------------------------ pinned sizes and README


def test_pinned_sizes_and_readme_match_the_data(data_root: Path) -> None:
    checksums = pinned_checksums()
    files = fetch.pinned_files()
    assert list(files) == list(checksums)
    for rel, pin in files.items():
        assert pin == fetch.PinnedFile(checksums[rel], (data_root / rel).stat().st_size)
    readme = (data_root / "README.md").read_bytes()
    assert fetch.pinned_readme() == fetch.PinnedFile(
        hashlib.sha256(readme).hexdigest(), len(readme)
    )


def test_pinned_file_checks_with_sha256sum(data_root: Path) -> None:
    """The pins that chordrec adds are comment lines: ``sha256sum -c`` still checks the list."""
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum (GNU coreutils) is not installed")
    pinned = Path(fetch.__file__).with_name("rwc_pop.sha256")
    result = subprocess.run(
        ["sha256sum", "--strict", "--quiet", "-c", str(pinned)],
        cwd=data_root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_malformed_pins_are_rejected() -> None:
    text = Path(fetch.__file__).with_name("rwc_pop.sha256").read_bytes()
    size_line = next(
        line
        for line in text.splitlines(keepends=True)
        if b"./beat/" in line and line.startswith(b"#")
    )
    with pytest.raises(DataFetchError, match=r"no pinned size for 'beat/N001-M01-T01\.npy'"):
        fetch._parse_pins(text.replace(size_line, b""))
    with pytest.raises(DataFetchError, match=r"size pinned for unknown file 'beat/N999\.npy'"):
        fetch._parse_pins(text + b"# size 12 ./beat/N999.npy\n")
    bad = len(text.splitlines()) + 1
    with pytest.raises(
        DataFetchError, match=rf"malformed line {bad}: '# size twelve \./README\.md'"
    ):
        fetch._parse_pins(text + b"# size twelve ./README.md\n")


@pytest.mark.parametrize("via", ["directory", "http"])
def test_file_over_its_pinned_size(
    data_root: Path, tmp_path: Path, serve: Callable[..., str], via: str
) -> None:
    content = (data_root / CORRUPT_REL).read_bytes()
    mirror = _mirror_with(data_root, tmp_path / "mirror", CORRUPT_REL, content + b"\0")
    source = str(mirror) if via == "directory" else serve(mirror)
    where = source if via == "directory" else f"{source}/{CORRUPT_REL}"
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataFetchError) as err:
        fetch_dataset(source, out / "rwc-pop", progress=False)
    assert str(err.value) == (
        f"{CORRUPT_REL}: larger than its pinned size of {len(content)} bytes "
        f"at {where}; stopped reading"
    )
    assert list(out.iterdir()) == []


def test_flooding_server_is_cut_off_at_the_pinned_size(
    data_root: Path, tmp_path: Path, serve: Callable[..., str]
) -> None:
    """A server that would send 256 MiB for one file: the fetch stops reading past the
    pinned size and hangs up, so the server gets nowhere near sending it all."""
    flood = _Flood(CORRUPT_REL, FLOOD_BYTES)
    base = serve(data_root, functools.partial(_FloodHandler, flood=flood))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataFetchError) as err:
        fetch_dataset(base, out / "rwc-pop", progress=False)
    limit = (data_root / CORRUPT_REL).stat().st_size
    assert str(err.value) == (
        f"{CORRUPT_REL}: larger than its pinned size of {limit} bytes "
        f"at {base}/{CORRUPT_REL}; stopped reading"
    )
    assert flood.done.wait(timeout=60), "the server is still sending"
    assert flood.sent < FLOOD_BYTES
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("change", ["edited", "longer"])
def test_readme_that_is_not_the_pinned_one_is_not_copied(
    data_root: Path,
    tmp_path: Path,
    serve: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    change: str,
) -> None:
    readme = (data_root / "README.md").read_bytes()
    content = readme.replace(b"RWC", b"CWR", 1) if change == "edited" else readme + b"more\n"
    base = serve(_mirror_with(data_root, tmp_path / "mirror", "README.md", content))
    dest = tmp_path / "rwc-pop"
    with caplog.at_level(logging.WARNING, logger="chordrec.data.fetch"):
        fetch_dataset(base, dest, progress=False)
    verify_dataset(dest)
    assert not (dest / "README.md").exists()
    problem = "sha256 mismatch" if change == "edited" else "larger than its pinned size"
    assert f"README.md not copied from {base}: README.md: {problem}" in caplog.text
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------ ensure_dataset (a run's fetch)


@pytest.fixture
def tiny_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A generated four-file data set (one small file per folder, no README) in a mirror
    directory, pinned in place of the real list."""
    mirror = tmp_path / "mirror"
    files = {}
    lines = []
    for index, rel in enumerate(("beat/s.npy", "chord/s.npy", "chroma/s.npy", "labs/s.lab")):
        content = f"song file {index}\n".encode() * (index + 1)
        (mirror / rel).parent.mkdir(parents=True)
        (mirror / rel).write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        files[rel] = fetch.PinnedFile(digest, len(content))
        lines.append(f"{digest}  ./{rel}\n")
    pins = fetch._Pins("".join(lines).encode(), files, fetch.PinnedFile("0" * 64, 1))
    monkeypatch.setattr(fetch, "_pins", lambda: pins)
    return mirror


def test_ensure_dataset_fetches_once_for_runs_starting_together(
    tiny_mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first caller fetches; the second, arriving while it does (its fetch is held
    until the second says it waits), waits for it and then finds the set verified."""
    dest = tmp_path / "node" / "rwc-pop"
    fetching = threading.Event()
    second_waits = threading.Event()
    fetches = []
    fetch_all = fetch._fetch_all

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for another process fetching" in record.getMessage():
                second_waits.set()

    def held_fetch_all(*args: Any) -> int:
        fetches.append(args)
        fetching.set()
        second_waits.wait(timeout=30)  # the fetch goes on once the second caller waits
        return fetch_all(*args)

    monkeypatch.setattr(fetch, "_fetch_all", held_fetch_all)
    results: list[Path] = []
    callers = [
        threading.Thread(target=lambda: results.append(ensure_dataset(str(tiny_mirror), dest)))
        for _ in range(2)
    ]
    waiting = Waiting()
    logging.getLogger("chordrec.data.fetch").addHandler(waiting)
    try:
        with caplog.at_level(logging.INFO, logger="chordrec.data.fetch"):
            callers[0].start()
            assert fetching.wait(timeout=30)
            callers[1].start()
            for caller in callers:
                caller.join(timeout=60)
    finally:
        logging.getLogger("chordrec.data.fetch").removeHandler(waiting)
    assert second_waits.is_set(), "the second caller never waited for the first"
    assert results == [dest, dest] and len(fetches) == 1
    assert "waiting for another process fetching the data set" in caplog.text
    assert "already present and verified" in caplog.text  # the second caller's
    verify_dataset(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == [".rwc-pop.lock", "rwc-pop"]


def test_ensure_dataset_keeps_a_verified_dest_and_refuses_a_corrupted_one(
    tiny_mirror: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "rwc-pop"
    assert ensure_dataset(str(tiny_mirror), dest) == dest
    # verified: returned without looking at the source
    assert ensure_dataset(str(tmp_path / "no-such-mirror"), dest) == dest
    _flip_byte(dest / "labs" / "s.lab")
    with pytest.raises(DataFetchError, match=r"exists but does not verify: labs/s\.lab: sha256"):
        ensure_dataset(str(tiny_mirror), dest)


# ------------------------------------------------- folders chordrec did not make (issue 24)


def _thesis_folder(root: Path) -> Path:
    """A folder of the user's, chordrec's data set nowhere in it."""
    (root / "figures").mkdir(parents=True)
    (root / "chapter1.tex").write_text("\\chapter{Introduction}\nSix months of work.\n")
    (root / "figures" / "plot.pdf").write_bytes(bytes(range(256)) * 8)
    return root


@pytest.mark.parametrize("checksums", [None, "other"])
def test_fetch_with_force_never_replaces_a_folder_that_is_not_the_data_set(
    tiny_mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], checksums: str | None
) -> None:
    """`chordrec data fetch --force --dest D` on a thesis folder (with or without a
    SHA256SUMS of its own) is refused in one line naming D and --dest; D stays byte for
    byte. A damaged copy of the data set is still replaced with --force."""
    from chordrec import cli
    from tests.test_synthetic import tree_snapshot

    thesis = _thesis_folder(tmp_path / "thesis")
    if checksums:
        (thesis / "SHA256SUMS").write_text(f"{'0' * 64}  ./chapter1.tex\n")
    before = tree_snapshot(thesis)
    argv = ["data", "fetch", "--source", str(tiny_mirror), "--dest", str(thesis), "--quiet"]
    assert cli.main([*argv, "--force"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"chordrec: error: {thesis}: not replaced: ")
    assert "it holds other files" in err and "--dest" in err and "SHA256SUMS" in err
    assert tree_snapshot(thesis) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "thesis"]

    dest = tmp_path / "rwc-pop"  # chordrec's own copy, damaged: replaced with --force
    fetch_dataset(str(tiny_mirror), dest, progress=False)
    _flip_byte(dest / "labs" / "s.lab")
    (dest / "stale-extra-file").write_text("x")
    assert cli.main([*argv[:4], "--dest", str(dest), "--quiet", "--force"]) == 0
    verify_dataset(dest)
    assert not (dest / "stale-extra-file").exists()
    assert _leftovers(tmp_path) == []


def test_fetch_fills_an_empty_folder_without_force(tiny_mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "rwc-pop"
    dest.mkdir()
    assert fetch_dataset(str(tiny_mirror), dest, progress=False) == dest
    verify_dataset(dest)
    assert _leftovers(tmp_path) == []


def test_a_symbolic_link_is_not_replaced(tiny_mirror: Path, tmp_path: Path) -> None:
    """A link to a folder that does not verify is left as it is, and so is its target."""
    thesis = _thesis_folder(tmp_path / "thesis")
    link = tmp_path / "rwc-pop"
    link.symlink_to(thesis)
    with pytest.raises(fetch.ForeignDirectoryError, match=r"rwc-pop: not replaced: it is a symb"):
        fetch_dataset(str(tiny_mirror), link, force=True, progress=False)
    assert link.is_symlink() and (thesis / "chapter1.tex").is_file()
