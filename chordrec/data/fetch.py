"""Fetch the RWC-Pop data set and verify it against the checksums pinned in this package.

The data set is 400 files (``chroma/``, ``chord/``, ``beat/`` ``.npy`` files and
``labs/`` chord annotations for 100 songs) plus ``SHA256SUMS`` and an optional
``README.md``. Every data file's sha256 is pinned in ``chordrec/rwc_pop.sha256``
(the data set's own ``SHA256SUMS``), so a fetched copy is byte-identical to the
one the experiments were run on, whichever source it came from.

Below the data set's checksum lines, ``rwc_pop.sha256`` holds chordrec's own pins as
comment lines, which ``sha256sum -c`` skips: ``# size <bytes> ./<path>`` for every data
file and for ``README.md``, and ``# sha256 <hex> ./README.md``. A fetch stops reading a
file one byte past its pinned size, so a bad source cannot fill the disk, and copies the
README only if it matches its pins.

Sources:

* ``"github"`` (:data:`DEFAULT_SOURCE`): the public upstream repositories at pinned
  commits (see :func:`upstream_url`).
* a *mirror* with the data set's own layout (``<mirror>/<folder>/<file>``): a local
  directory, a ``file://`` URL or an ``http(s)://`` base URL.

The environment variable ``CHORDREC_DATA_SOURCE`` overrides the default source.

A fetch writes into a temporary directory next to the destination and renames it
into place only once every file has verified, so the destination is either the
complete, verified data set or untouched. Only a missing or empty destination, or one
that holds a copy of this data set (its ``SHA256SUMS`` as pinned), is ever replaced.
:func:`ensure_dataset` is the fetch a run makes on a machine of a cluster
(``data.fetch_source``): under a file lock, so that concurrent runs on one machine
fetch once.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from chordrec.errors import UserError
from chordrec.file_locks import exclusive_lock
from chordrec.io.atomic_write import (
    ForeignDirectoryError,
    check_replaceable,
    default_dir_mode,
    install_directory,
    is_empty_directory,
)

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "github"
"""Default source: the upstream GitHub repositories at pinned commits."""

SOURCE_ENV_VAR = "CHORDREC_DATA_SOURCE"
"""Environment variable that overrides :data:`DEFAULT_SOURCE`."""

CHECKSUM_FILE = "SHA256SUMS"
README_FILE = "README.md"
PINNED_CHECKSUMS_RESOURCE = "rwc_pop.sha256"

DEFAULT_TIMEOUT_S = 30.0
"""Socket timeout (seconds) for each HTTP request."""

RETRIES = 2
"""Extra attempts per file after a transient HTTP failure (timeout, reset, 5xx)."""

RETRY_DELAY_S = 1.0
"""Delay before the first retry; doubled for each further one."""

MAX_WORKERS = 8
"""Files fetched concurrently."""

_CHUNK = 1 << 20
_USER_AGENT = "chordrec-fetch/1.0 (+urllib)"

GCT634_BASE_URL = (
    "https://raw.githubusercontent.com/juhannam/gct634-2018/"
    "fb408edae7fcbd8853cc698df863df9256e1f981/hw3/dataset"
)
"""Upstream of ``chroma/``, ``chord/`` and ``beat/`` (KAIST GCT634 2018, pinned commit)."""
DATASET_NAME = "RWC-Pop"
DATASET_VERSION = "gct634-2018@fb408ed"
"""The data set's name and version (the upstream commit of its chroma) as runs record it."""

LABS_BASE_URL = (
    "https://raw.githubusercontent.com/tmc323/Chord-Annotations/"
    "4b022ff5a95ff1d9ba1057ea4c982e45484d764f/RWC_Pop_Chords"
)
"""Upstream of ``labs/`` (``tmc323/Chord-Annotations``, NYU MARL, pinned commit)."""

# Upstream file names of the lab files where they differ from the data set's own
# names (``labs/<name>`` -> ``RWC_Pop_Chords/<upstream name>``). Checked against an
# index of the repository: 99 of the 100 files are stored there under exactly the
# data set's names (``RWC_Pop_Chords/N001-M01-T01.lab`` ... ``N100-M07-T10.lab``),
# and N001's content matches its pinned sha256. ``N060-M04-T12.lab`` was not in
# that index (its sibling ``N060-M04-T12.svl`` is, under the same naming), so its
# name is assumed to be the same as well. The index did not hold the pinned commit
# itself; the pinned checksums catch any difference there.
_UPSTREAM_LAB_NAMES: dict[str, str] = {}


class DataFetchError(UserError, RuntimeError):
    """Fetching or verifying the data set failed; the message names the file and problem."""


class _Cancelled(Exception):
    """Raised inside a worker when another file already failed."""


# --------------------------------------------------------------------------- pinned list


@dataclass(frozen=True)
class PinnedFile:
    """The pinned identity of one file: its sha256 (lowercase hex) and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class _Pins:
    """``rwc_pop.sha256`` parsed: the data set's ``SHA256SUMS`` text and every pinned file."""

    checksums_text: bytes
    files: dict[str, PinnedFile]
    readme: PinnedFile


_PIN_KEYS = ("size", "sha256")


def _pins() -> _Pins:
    """Read and parse ``chordrec/rwc_pop.sha256``."""
    text = resources.files("chordrec.data").joinpath(PINNED_CHECKSUMS_RESOURCE).read_bytes()
    return _parse_pins(text)


def _parse_pins(text: bytes) -> _Pins:
    """Parse the pinned file: checksum lines ``<sha256>  ./<folder>/<file>`` (kept verbatim
    as the data set's ``SHA256SUMS``) and pin lines ``# <size|sha256> <value> ./<path>``.

    Raises :class:`DataFetchError` on a malformed line, a data file or README without
    its pins, or a pin for a file that is neither.
    """
    checksum_lines: list[bytes] = []
    checksums: dict[str, str] = {}
    pins: dict[tuple[str, str], str] = {}
    for lineno, raw in enumerate(text.splitlines(keepends=True), start=1):
        line = raw.decode("utf-8").strip()
        if line.startswith("#"):
            key, rel, value = _parse_pin_line(line, lineno)
            pins[key, rel] = value
            continue
        checksum_lines.append(raw)
        if line:
            rel, digest = _parse_checksum_line(line, lineno)
            checksums[rel] = digest
    files = {
        rel: PinnedFile(digest, int(_pop_pin(pins, "size", rel)))
        for rel, digest in checksums.items()
    }
    readme = PinnedFile(
        _pop_pin(pins, "sha256", README_FILE), int(_pop_pin(pins, "size", README_FILE))
    )
    if pins:
        key, rel = next(iter(pins))
        raise DataFetchError(f"{PINNED_CHECKSUMS_RESOURCE}: {key} pinned for unknown file {rel!r}")
    return _Pins(b"".join(checksum_lines), files, readme)


def _malformed(lineno: int, line: str) -> DataFetchError:
    return DataFetchError(f"{PINNED_CHECKSUMS_RESOURCE}: malformed line {lineno}: {line!r}")


def _parse_checksum_line(line: str, lineno: int) -> tuple[str, str]:
    """``<sha256>  ./<folder>/<file>`` -> (relative path, sha256)."""
    digest, sep, name = line.partition(" ")
    name = name.strip().lstrip("*")
    if not sep or len(digest) != 64 or not name:
        raise _malformed(lineno, line)
    rel = _strip_dot(name)
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or len(parts) != 2:
        raise DataFetchError(f"{PINNED_CHECKSUMS_RESOURCE}: unexpected path {name!r}")
    return rel, digest.lower()


def _parse_pin_line(line: str, lineno: int) -> tuple[str, str, str]:
    """``# size <bytes> ./<path>`` or ``# sha256 <hex> ./<path>`` -> (key, path, value)."""
    fields = line[1:].split()
    if len(fields) != 3 or fields[0] not in _PIN_KEYS:
        raise _malformed(lineno, line)
    key, value, name = fields
    valid = (
        value.isascii() and value.isdigit()
        if key == "size"
        else len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)
    )
    if not valid:
        raise _malformed(lineno, line)
    return key, _strip_dot(name), value.lower()


def _strip_dot(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _pop_pin(pins: dict[tuple[str, str], str], key: str, rel: str) -> str:
    try:
        return pins.pop((key, rel))
    except KeyError:
        raise DataFetchError(f"{PINNED_CHECKSUMS_RESOURCE}: no pinned {key} for {rel!r}") from None


def pinned_checksums_text() -> bytes:
    """Return the data set's ``SHA256SUMS`` as pinned in the package.

    Returns
    -------
    bytes
        The checksum lines of ``chordrec/rwc_pop.sha256`` (``<sha256>  ./<folder>/<file>``),
        verbatim, without chordrec's ``#`` pin lines.
    """
    return _pins().checksums_text


def pinned_files() -> dict[str, PinnedFile]:
    """Return the pinned sha256 and size of every data file.

    Returns
    -------
    dict of str to PinnedFile
        ``{"beat/N001-M01-T01.npy": PinnedFile(sha256, size), ...}``, relative POSIX
        paths in the order of the pinned list (400 entries).
    """
    return _pins().files


def pinned_readme() -> PinnedFile:
    """Return the pinned sha256 and size of the data set's ``README.md``."""
    return _pins().readme


def pinned_checksums() -> dict[str, str]:
    """Return the pinned sha256 of every data file.

    Returns
    -------
    dict of str to str
        ``{"beat/N001-M01-T01.npy": "<sha256 hex>", ...}``, relative POSIX paths in
        the order of the pinned list (400 entries).
    """
    return {rel: pin.sha256 for rel, pin in pinned_files().items()}


# --------------------------------------------------------------------------- sources


def default_source() -> str:
    """Return the source used when none is given.

    Returns
    -------
    str
        The value of the environment variable ``CHORDREC_DATA_SOURCE`` if set and
        non-empty, else :data:`DEFAULT_SOURCE` (``"github"``).
    """
    return os.environ.get(SOURCE_ENV_VAR, "").strip() or DEFAULT_SOURCE


def upstream_url(rel: str) -> str:
    """Return the pinned upstream URL of one data file.

    Parameters
    ----------
    rel : str
        The file's path in the data set, e.g. ``"chroma/N001-M01-T01.npy"`` or
        ``"labs/N001-M01-T01.lab"``.

    Returns
    -------
    str
        A ``raw.githubusercontent.com`` URL at a pinned commit.

    Raises
    ------
    DataFetchError
        If ``rel`` is not in a folder with a known upstream.
    """
    folder, _, name = rel.partition("/")
    if folder in ("chroma", "chord", "beat"):
        return f"{GCT634_BASE_URL}/{folder}/{urllib.parse.quote(name)}"
    if folder == "labs":
        return f"{LABS_BASE_URL}/{urllib.parse.quote(_UPSTREAM_LAB_NAMES.get(name, name))}"
    raise DataFetchError(f"{rel}: no upstream source known for folder {folder!r}")


class _Source:
    """Where the files come from: ``open(rel)`` gives a binary stream of one file."""

    description: str

    def open(self, rel: str) -> BinaryIO:  # pragma: no cover - interface
        raise NotImplementedError

    def open_optional(self, rel: str) -> BinaryIO | None:
        """Open a file that the source may lack; ``None`` if it cannot be read."""
        try:
            return self.open(rel)
        except (DataFetchError, OSError, http.client.HTTPException):
            return None


class _LocalSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def open(self, rel: str) -> BinaryIO:
        path = self.root / rel
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise DataFetchError(f"{rel}: missing from mirror {self.root}") from None
        except OSError as exc:
            raise DataFetchError(f"{rel}: cannot read {path}: {exc}") from exc


class _HttpSource(_Source):
    def __init__(self, url_for: Callable[[str], str], description: str, timeout: float) -> None:
        self.url_for = url_for
        self.description = description
        self.timeout = timeout

    def open(self, rel: str) -> BinaryIO:
        url = self.url_for(rel)
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        return urllib.request.urlopen(request, timeout=self.timeout)


def _resolve_source(source: str | os.PathLike[str] | None, timeout: float) -> _Source:
    spec = default_source() if source is None else os.fspath(source)
    if spec == "github":
        return _HttpSource(upstream_url, "github (pinned upstream commits)", timeout)
    if "://" in spec:
        parsed = urllib.parse.urlparse(spec)
        scheme = parsed.scheme.lower()
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise DataFetchError(f"source {spec!r}: file:// URLs must name a local path")
            root = Path(urllib.request.url2pathname(parsed.path))
            return _local_source(root, spec)
        if scheme in ("http", "https"):
            base = spec.rstrip("/")
            return _HttpSource(lambda rel: f"{base}/{urllib.parse.quote(rel)}", base, timeout)
        raise DataFetchError(
            f"source {spec!r}: unsupported URL scheme {scheme!r} "
            "(use 'github', a directory, a file:// URL or an http(s):// base URL)"
        )
    return _local_source(Path(spec).expanduser(), spec)


def _local_source(root: Path, spec: str) -> _LocalSource:
    if not root.is_dir():
        raise DataFetchError(f"source {spec!r}: {root} is not a directory")
    return _LocalSource(root)


# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """The SHA256 hex digest of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashed(
    src: BinaryIO, dst: BinaryIO, cancel: threading.Event, limit: int
) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` until its end or ``limit`` bytes, whichever comes first;
    return the sha256 (hex) and the number of bytes copied."""
    h = hashlib.sha256()
    n = 0
    while n < limit and (chunk := src.read(min(_CHUNK, limit - n))):
        if cancel.is_set():
            raise _Cancelled
        h.update(chunk)
        dst.write(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def _receive(
    stream: BinaryIO, target: Path, rel: str, pin: PinnedFile, where: str, cancel: threading.Event
) -> int:
    """Write ``stream`` to ``target``, reading at most one byte past the pinned size;
    check the size and sha256 against ``pin`` and return the size in bytes.

    Raises :class:`DataFetchError` naming ``rel``, and for an oversized file ``where``
    (the source) and the limit; ``target`` is then left for the caller to remove.
    """
    with open(target, "wb") as out:
        got, size = _copy_hashed(stream, out, cancel, pin.size + 1)
    if size > pin.size:
        raise DataFetchError(
            f"{rel}: larger than its pinned size of {pin.size} bytes at {where}; stopped reading"
        )
    if got != pin.sha256:
        raise DataFetchError(f"{rel}: sha256 mismatch (expected {pin.sha256}, got {got})")
    return size


def verify_dataset(root: str | Path) -> None:
    """Check a data set directory against the pinned checksums.

    Every data file in the pinned list must exist with the pinned sha256, and
    ``root/SHA256SUMS`` must equal the pinned list.

    Parameters
    ----------
    root : str or Path
        The data set directory (holding ``chroma/``, ``chord/``, ``beat/``, ``labs/``).

    Raises
    ------
    DataFetchError
        Naming the first missing or mismatched file, e.g.
        ``"chroma/N003-M01-T03.npy: sha256 mismatch (expected ..., got ...)"``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFetchError(f"{root}: not a directory")
    for rel, expected in pinned_checksums().items():
        path = root / rel
        if not path.is_file():
            raise DataFetchError(f"{rel}: missing in {root}")
        got = sha256_file(path)
        if got != expected:
            raise DataFetchError(f"{rel}: sha256 mismatch (expected {expected}, got {got})")
    _check_checksum_file(root)


def _check_checksum_file(root: Path) -> bytes:
    path = root / CHECKSUM_FILE
    if not path.is_file():
        raise DataFetchError(f"{CHECKSUM_FILE}: missing in {root}")
    content = path.read_bytes()
    if content != pinned_checksums_text():
        raise DataFetchError(
            f"{CHECKSUM_FILE}: differs from the checksum list pinned in chordrec "
            f"({PINNED_CHECKSUMS_RESOURCE}); {root} holds another version of the data set"
        )
    return content


DATASET_DIRECTORY = f"the RWC-Pop data set it fetched (recognised by its {CHECKSUM_FILE})"
"""The directories a fetch replaces besides empty ones, as error messages name them."""


def holds_dataset(root: Path) -> bool:
    """Whether ``root`` holds a copy of this data set, whole or damaged: its
    ``SHA256SUMS`` equals the checksum list pinned in chordrec, as every fetch writes it."""
    path = root / CHECKSUM_FILE
    pinned = pinned_checksums_text()
    try:
        return path.is_file() and path.stat().st_size == len(pinned) and path.read_bytes() == pinned
    except OSError:
        return False


def dataset_digest(root: str | Path) -> str:
    """Return a short identity of the data set version at ``root``.

    Parameters
    ----------
    root : str or Path
        The data set directory.

    Returns
    -------
    str
        The sha256 (hex) of ``root/SHA256SUMS``, which must equal the checksum list
        pinned in the package (e.g. for an MLflow tag). The data files themselves
        are not re-hashed; call :func:`verify_dataset` for that.

    Raises
    ------
    DataFetchError
        If ``root/SHA256SUMS`` is missing or differs from the pinned list.
    """
    return hashlib.sha256(_check_checksum_file(Path(root))).hexdigest()


# --------------------------------------------------------------------------- fetching


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    return isinstance(
        exc, (TimeoutError, socket.timeout, ConnectionResetError, http.client.IncompleteRead)
    )


def _where(rel: str, source: _Source) -> str:
    """Where ``rel`` comes from: its URL, or the local mirror's directory."""
    return source.url_for(rel) if isinstance(source, _HttpSource) else source.description


def _describe_error(rel: str, source: _Source, exc: BaseException) -> str:
    where = _where(rel, source)
    if isinstance(exc, urllib.error.HTTPError):
        return f"{rel}: HTTP {exc.code} {exc.reason} from {where}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"{rel}: timed out fetching {where}"
        return f"{rel}: cannot reach {where} ({reason}); is the source reachable?"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"{rel}: timed out fetching {where}"
    if isinstance(exc, http.client.HTTPException):
        return f"{rel}: bad HTTP response from {where} ({type(exc).__name__}: {exc})"
    return f"{rel}: {type(exc).__name__}: {exc} ({where})"


def _fetch_one(
    source: _Source, rel: str, pin: PinnedFile, tmp: Path, cancel: threading.Event
) -> int:
    """Fetch one file into ``tmp`` (retrying transient HTTP failures), check its size and
    sha256 against ``pin``; return its size in bytes."""
    if cancel.is_set():
        raise _Cancelled
    target = tmp / rel
    attempt = 0
    while True:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open(rel) as stream:
                return _receive(stream, target, rel, pin, _where(rel, source), cancel)
        except (DataFetchError, _Cancelled):
            raise
        except (OSError, http.client.HTTPException) as exc:
            if attempt < RETRIES and _is_transient(exc) and not cancel.is_set():
                delay = RETRY_DELAY_S * 2**attempt
                log.warning("%s: %s; retrying in %.1f s", rel, exc, delay)
                attempt += 1
                time.sleep(delay)
                continue
            raise DataFetchError(_describe_error(rel, source, exc)) from exc


def _fetch_all(source: _Source, entries: dict[str, PinnedFile], tmp: Path, progress: bool) -> int:
    cancel = threading.Event()
    total = 0
    bar = tqdm(total=len(entries), unit="file", desc="rwc-pop", disable=not progress, leave=True)
    pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="chordrec-fetch")
    try:
        futures = {
            pool.submit(_fetch_one, source, rel, pin, tmp, cancel): rel
            for rel, pin in entries.items()
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                cancel.set()
                # Report the failure that comes first in the pinned list.
                first = min(failed, key=lambda f: list(futures).index(f))
                raise first.exception()  # type: ignore[misc]
            for f in done:
                total += f.result()
                bar.update(1)
            bar.set_postfix_str(_human_bytes(total), refresh=False)
    finally:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return total


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _copy_readme(source: _Source, pin: PinnedFile, tmp: Path) -> None:
    """Copy the source's README into ``tmp`` if it matches ``pin``.

    The README is optional documentation, not data: a source without one, or with one
    that cannot be read, is too large or does not match its pinned sha256, costs only
    the README (skipped, with a log message naming the source and the problem), never
    the verified data set.
    """
    if isinstance(source, _HttpSource) and source.url_for is upstream_url:
        return  # the upstream repositories hold no README of this data set
    stream = source.open_optional(README_FILE)
    if stream is None:
        log.info("source %s has no %s; skipped", source.description, README_FILE)
        return
    target = tmp / README_FILE
    try:
        with stream:
            _receive(
                stream, target, README_FILE, pin, _where(README_FILE, source), threading.Event()
            )
    except (DataFetchError, OSError, http.client.HTTPException) as exc:
        log.warning("%s not copied from %s: %s", README_FILE, source.description, exc)
        target.unlink(missing_ok=True)


def fetch_dataset(
    source: str | os.PathLike[str] | None,
    dest: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download (or copy) the RWC-Pop data set into ``dest`` and verify it.

    Parameters
    ----------
    source : str or None
        ``"github"`` for the pinned upstream URLs, or a mirror with the data set's
        own layout: a local directory, a ``file://`` URL or an ``http(s)://`` base
        URL (files at ``<base>/<folder>/<file>``). ``None`` means
        :func:`default_source` (``$CHORDREC_DATA_SOURCE`` or ``"github"``).
    dest : str or Path
        Directory to create. Files are written into a temporary directory next to
        it (``.<name>.partial-XXXX``) that is renamed to ``dest`` once every file
        has verified.
    force : bool, default False
        If ``dest`` holds the data set (its ``SHA256SUMS`` as pinned) but does not
        verify, fetch afresh and replace it (atomically: the old directory is moved
        aside, the new one moved in, then the old one deleted). Without it such a
        ``dest`` raises. An empty ``dest`` is filled without it; any other directory
        is never replaced, ``force`` or not.
    progress : bool, default True
        Show a tqdm progress bar (files, with the bytes fetched so far).
    timeout : float, default 30
        Socket timeout in seconds for each HTTP request.

    Returns
    -------
    Path
        ``dest``, holding the verified data set, ``SHA256SUMS`` and (if the mirror
        has one that matches its pinned sha256 and size) ``README.md``.

    Raises
    ------
    DataFetchError
        On any failure (HTTP error, unreachable source, missing file, a file larger
        than its pinned size (reading stops one byte past it), sha256 mismatch, I/O
        error), naming the file and the problem. The temporary directory is removed
        and ``dest`` is left as it was. Also raised if ``dest`` exists, does not
        verify and ``force`` is False.
    ForeignDirectoryError
        If ``dest`` is a non-empty directory that does not hold the data set, or a
        symbolic link to one that does not verify; it is left as it was.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise DataFetchError(f"{dest}: exists and is not a directory")
        try:
            verify_dataset(dest)
        except DataFetchError as exc:
            check_replaceable(dest, holds_dataset, DATASET_DIRECTORY)
            if is_empty_directory(dest):
                log.info("%s: empty; fetching the data set into it", dest)
            elif not force:
                raise DataFetchError(
                    f"{dest} exists but does not verify: {exc} "
                    "(`chordrec data fetch --force` fetches it afresh and replaces it)"
                ) from exc
            else:
                log.warning("%s does not verify (%s); fetching afresh (--force)", dest, exc)
        else:
            log.info("%s: already present and verified", dest)
            return dest

    src = _resolve_source(source, timeout)
    pins = _pins()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    log.info("fetching %d files from %s into %s", len(pins.files), src.description, dest)
    try:
        nbytes = _fetch_all(src, pins.files, tmp, progress)
        (tmp / CHECKSUM_FILE).write_bytes(pins.checksums_text)
        _copy_readme(src, pins.readme, tmp)
        os.chmod(tmp, default_dir_mode())
        install_directory(tmp, dest, holds_dataset, DATASET_DIRECTORY)
    except (DataFetchError, ForeignDirectoryError):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataFetchError(f"{dest}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "fetched and verified %d files (%s) into %s", len(pins.files), _human_bytes(nbytes), dest
    )
    return dest


def ensure_dataset(
    source: str | os.PathLike[str] | None,
    dest: str | Path,
    *,
    progress: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Make sure ``dest`` holds the verified data set, fetching it from ``source`` if it
    is missing (:func:`fetch_dataset`, same sources, same checks).

    The check and the fetch hold an exclusive lock on ``.<dest name>.lock`` beside
    ``dest`` (:func:`chordrec.file_locks.exclusive_lock`), so the runs on one machine
    that start together fetch once: the first fetches, the others wait (saying so in the
    log) and then find ``dest`` verified. A ``dest``
    that verifies is returned without fetching (hashing the data set takes a fraction
    of a second); one that exists but does not verify raises, as in
    :func:`fetch_dataset` without ``force``.

    Returns
    -------
    Path
        ``dest`` (absolute), holding the verified data set.

    Raises
    ------
    DataFetchError
        As :func:`fetch_dataset`: the fetch failed, or ``dest`` holds something else.
    """
    dest = Path(dest).expanduser().absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(
        dest.parent / f".{dest.name}.lock",
        mode=0o666,  # less the umask: whoever may fill dest may take its lock
        on_wait=lambda: log.info("%s: waiting for another process fetching the data set", dest),
    ):
        return fetch_dataset(source, dest, progress=progress, timeout=timeout)
