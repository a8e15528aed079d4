"""`url` sources against a real HTTP server on 127.0.0.1: caching, retries, timeouts, caps, hashes."""

from __future__ import annotations

import collections
import hashlib
import io
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from londinium.corpus import download
from londinium.corpus.download import DownloadCache
from londinium.corpus.sources import SourceSpec, fetch_source
from londinium.errors import SourceError

TEXT = b"Now is the winter of our discontent\nMade glorious summer by this sun of York.\n"
MB = 1 << 20


class Server:
    """A real HTTP server whose routes are plain functions of the request handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.done: dict[str, threading.Event] = collections.defaultdict(threading.Event)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server.hits[self.path] += 1
                try:
                    server.routes[self.path](self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up on purpose (cap, timeout)
                finally:
                    server.done[self.path].set()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(status: int, body: bytes = b"", length: bool = True, ctype: str = "text/plain"):
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    # The retry schedule is what is tested, not its wall-clock length.
    monkeypatch.setattr(download, "BACKOFF_S", 0.02)


def fetch(tmp_path: Path, url: str, retries: int = 2, timeout_s: float = 5.0, max_bytes: int = MB, sha256: str = "", files: str = ""):
    skips: list = []
    spec = SourceSpec(id="web", kind="url", location=url, sha256=sha256, files=files)
    got = list(fetch_source(spec, tmp_path / "cache", max_bytes, timeout_s, retries, lambda n, r: skips.append((n, r))))
    return {f.name: f.data for f in got}, skips


def test_download_is_cached_and_second_fetch_makes_no_request(server: Server, tmp_path: Path):
    server.routes["/richard3.txt"] = reply(200, TEXT)
    assert fetch(tmp_path, server.url("/richard3.txt"))[0] == {"richard3.txt": TEXT}
    assert fetch(tmp_path, server.url("/richard3.txt"))[0] == {"richard3.txt": TEXT}
    assert server.hits["/richard3.txt"] == 1
    blob = DownloadCache(tmp_path / "cache").blob_path(hashlib.sha256(TEXT).hexdigest())
    assert blob.read_bytes() == TEXT
    assert not any((tmp_path / "cache" / "tmp").iterdir())  # no leftovers of the download


def test_corrupt_cached_blob_is_detected_and_downloaded_again(server: Server, tmp_path: Path):
    server.routes["/r.txt"] = reply(200, TEXT)
    fetch(tmp_path, server.url("/r.txt"))
    blob = DownloadCache(tmp_path / "cache").blob_path(hashlib.sha256(TEXT).hexdigest())
    blob.write_bytes(TEXT[:10])  # a torn or tampered blob
    assert fetch(tmp_path, server.url("/r.txt"))[0] == {"r.txt": TEXT}
    assert server.hits["/r.txt"] == 2


def test_404_fails_at_once_without_retries(server: Server, tmp_path: Path):
    server.routes["/gone.txt"] = reply(404, b"not here")
    with pytest.raises(SourceError, match=r"source 'web': .*/gone.txt answered HTTP 404.*not retried"):
        fetch(tmp_path, server.url("/gone.txt"), retries=3)
    assert server.hits["/gone.txt"] == 1


def test_server_error_is_retried_then_succeeds(server: Server, tmp_path: Path):
    answers = iter([reply(500, b"oops"), reply(503, b"busy"), reply(200, TEXT)])
    server.routes["/flaky.txt"] = lambda h: next(answers)(h)
    assert fetch(tmp_path, server.url("/flaky.txt"), retries=2)[0] == {"flaky.txt": TEXT}
    assert server.hits["/flaky.txt"] == 3


def test_persistent_server_error_gives_up_after_the_retries(server: Server, tmp_path: Path):
    server.routes["/down.txt"] = reply(500, b"oops")
    with pytest.raises(SourceError, match=r"HTTP 500 after 3 attempt"):
        fetch(tmp_path, server.url("/down.txt"), retries=2)
    assert server.hits["/down.txt"] == 3


def test_server_slower_than_the_timeout_is_a_source_error_naming_the_timeout(server: Server, tmp_path: Path):
    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(1.0)
        reply(200, TEXT)(h)

    server.routes["/slow.txt"] = slow
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"timed out after 2 attempt.*download_timeout_s"):
        fetch(tmp_path, server.url("/slow.txt"), retries=1, timeout_s=0.2)
    assert time.monotonic() - t0 < 1.0  # it gave up; it did not wait for the server
    assert server.hits["/slow.txt"] == 2


def _endless(declare: bool, total: int, sent: list[int]):
    chunk = b"a" * 65536

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if declare:
            h.send_header("Content-Length", str(total))
        h.end_headers()
        while sent[0] < total:
            h.wfile.write(chunk)
            sent[0] += len(chunk)

    return route


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "no-length"])
def test_oversized_body_is_rejected_without_reading_it_all(server: Server, tmp_path: Path, declare: bool):
    total, sent = 256 * MB, [0]
    server.routes["/huge.txt"] = _endless(declare, total, sent)
    with pytest.raises(SourceError, match=r"over the cap of 1 MB.*max_file_mb"):
        fetch(tmp_path, server.url("/huge.txt"), max_bytes=MB, retries=3)
    assert server.done["/huge.txt"].wait(10)
    assert sent[0] < total // 4  # the connection was dropped long before the end
    assert server.hits["/huge.txt"] == 1  # too big is not retried
    assert not any((tmp_path / "cache" / "blobs").glob("*"))


def test_sha256_mismatch_is_an_error_and_nothing_is_cached(server: Server, tmp_path: Path):
    server.routes["/pinned.txt"] = reply(200, TEXT)
    wrong = "0" * 64
    with pytest.raises(SourceError, match=rf"has sha256 {hashlib.sha256(TEXT).hexdigest()}.*expects {wrong}"):
        fetch(tmp_path, server.url("/pinned.txt"), sha256=wrong)
    assert not (tmp_path / "cache" / "blobs").exists() or not any((tmp_path / "cache" / "blobs").iterdir())
    right = hashlib.sha256(TEXT).hexdigest()
    assert fetch(tmp_path, server.url("/pinned.txt"), sha256=right)[0] == {"pinned.txt": TEXT}


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_served_by_url_is_sniffed_and_read_by_glob(server: Server, tmp_path: Path):
    arc = _targz({"pkg/texts/a.txt": TEXT, "pkg/texts/b.txt": TEXT + b"b", "pkg/img.png": b"\x89PNG\x00"})
    server.routes["/download?id=7"] = reply(200, arc, ctype="application/octet-stream")  # no .tar.gz in the URL
    got, skips = fetch(tmp_path, server.url("/download?id=7"), files="pkg/texts/*.txt")
    assert got == {"pkg/texts/a.txt": TEXT, "pkg/texts/b.txt": TEXT + b"b"} and skips == []


def test_truncated_archive_download_is_reported_and_removed_from_the_cache(server: Server, tmp_path: Path):
    arc = _targz({"pkg/a.txt": bytes(range(32, 127)) * 2000})
    server.routes["/pkg.tar.gz"] = reply(200, arc[: len(arc) // 2])
    with pytest.raises(SourceError, match=r"source 'web': archive pkg.tar.gz is truncated or corrupt.*removed it from the cache"):
        fetch(tmp_path, server.url("/pkg.tar.gz"))
    server.routes["/pkg.tar.gz"] = reply(200, arc)  # the upstream is fixed: the next run downloads again
    assert list(fetch(tmp_path, server.url("/pkg.tar.gz"))[0]) == ["pkg/a.txt"]
    assert server.hits["/pkg.tar.gz"] == 2


def test_html_page_without_suffix_is_named_for_format_detection(server: Server, tmp_path: Path):
    page = b"<!DOCTYPE html><html><body><p>Alas, poor Yorick!</p></body></html>"
    server.routes["/plays/hamlet/5"] = reply(200, page, ctype="text/html")
    assert fetch(tmp_path, server.url("/plays/hamlet/5"))[0] == {"5.html": page}


def test_download_cut_short_is_retried_and_never_cached_half_done(server: Server, tmp_path: Path):
    def cut(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(TEXT)))
        h.end_headers()
        h.wfile.write(TEXT[:20])  # then the connection closes

    server.routes["/cut.txt"] = cut
    with pytest.raises(SourceError, match=r"connection broken.*after 2 attempt"):
        fetch(tmp_path, server.url("/cut.txt"), retries=1)
    assert server.hits["/cut.txt"] == 2
    cache = tmp_path / "cache"
    assert not (cache / "blobs").exists() and not (cache / "keys").exists()
    assert not any((cache / "tmp").iterdir())


# ---- hostile servers: each is cut off or refused, named, and never hangs the build ----------------


def _trickle(headers_too: bool):
    def route(h: BaseHTTPRequestHandler) -> None:
        if headers_too:  # the status line itself, one byte at a time
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n":
                h.wfile.write(bytes([b]))
                h.wfile.flush()
                time.sleep(0.1)
            return
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(100000):
            h.wfile.write(b"a")
            h.wfile.flush()
            time.sleep(0.05)

    return route


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "status-line"])
def test_a_server_that_trickles_is_cut_off_at_the_download_deadline(server: Server, tmp_path: Path, headers_too: bool):
    server.routes["/drip.txt"] = _trickle(headers_too)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"timed out after 1 attempt.*download_timeout_s \(now 0.6 s\)"):
        fetch(tmp_path, server.url("/drip.txt"), retries=0, timeout_s=0.6)
    assert time.monotonic() - t0 < 3.0  # each byte came well inside any per-read timeout
    assert not any((tmp_path / "cache" / "tmp").iterdir())


def test_a_server_that_accepts_and_never_answers_is_cut_off(server: Server, tmp_path: Path):
    release = threading.Event()
    server.routes["/hang.txt"] = lambda h: release.wait(30)
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"timed out after 2 attempt"):
            fetch(tmp_path, server.url("/hang.txt"), retries=1, timeout_s=0.4)
    finally:
        release.set()
    assert time.monotonic() - t0 < 3.0


def test_a_refused_connection_is_retried_then_named(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match=r"connection failed.*after 2 attempt"):
        fetch(tmp_path, f"http://127.0.0.1:{port}/x.txt", retries=1)


def _liar(claimed: str):
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", claimed)
        h.end_headers()
        h.wfile.write(TEXT)  # then the connection closes

    return route


def test_a_server_that_claims_more_than_it_sends_is_retried_and_never_cached(server: Server, tmp_path: Path):
    server.routes["/liar.txt"] = _liar("999999")
    with pytest.raises(SourceError, match=r"liar.txt failed: connection broken.*after 2 attempt"):
        fetch(tmp_path, server.url("/liar.txt"), retries=1)
    assert not (tmp_path / "cache" / "blobs").exists()


@pytest.mark.parametrize("claimed", ["-5", "lots"])
def test_an_unusable_content_length_is_ignored_and_the_body_read_to_the_close(server: Server, tmp_path: Path, claimed: str):
    server.routes["/liar.txt"] = _liar(claimed)
    assert fetch(tmp_path, server.url("/liar.txt"))[0] == {"liar.txt": TEXT}


def test_download_folders_of_killed_processes_are_removed_on_the_next_run(server: Server, tmp_path: Path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "cache" / "tmp" / f"{dead}-abc123"
    stale.mkdir(parents=True)
    (stale / "download").write_bytes(b"half a file")
    server.routes["/r.txt"] = reply(200, TEXT)
    fetch(tmp_path, server.url("/r.txt"))
    assert not stale.exists()


def test_corpus_build_records_a_trickling_source_and_keeps_the_others(server: Server, tmp_path: Path):
    import json
    import subprocess
    import sys

    from helpers.prose import prose

    server.routes["/drip.txt"] = _trickle(False)
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(4):
        (texts / f"t{i}.txt").write_text(f"TEXT {i}\n\n" + prose(30 + i, 12), encoding="utf-8")
    registry = tmp_path / "sources.toml"
    registry.write_text(f'[[source]]\nid = "local"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1600]\n\n'
                        f'[[source]]\nid = "drip"\nkind = "url"\nlocation = "{server.url("/drip.txt")}"\nperiod = [1600, 1600]\n',
                        encoding="utf-8")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "londinium", "corpus", "build", "-w", str(tmp_path / "ws"),
                           "--set", f"corpus.sources={json.dumps(str(registry))}",
                           "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
                           "--set", "corpus.download_timeout_s=1", "--set", "corpus.download_retries=0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 30
    assert "skipped source 'drip'" in proc.stdout and "timed out" in proc.stdout
    card = json.loads((tmp_path / "ws" / "corpus" / "report.json").read_text())
    drip = next(s for s in card["sources"] if s["id"] == "drip")
    assert drip["status"] == "failed" and "timed out" in drip["error"]


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:9/x.txt", "file:///etc/hostname", "data:text/plain,hello"])
def test_a_redirect_away_from_http_is_never_followed(server: Server, tmp_path: Path, target: str):
    def redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", target)
        h.send_header("Content-Length", "0")
        h.end_headers()

    server.routes["/away.txt"] = redirect
    with pytest.raises(SourceError, match=r"source 'web': .*away.txt"):
        fetch(tmp_path, server.url("/away.txt"), retries=0)


def test_a_redirect_to_another_http_url_is_followed(server: Server, tmp_path: Path):
    def redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(301)
        h.send_header("Location", server.url("/here.txt"))
        h.send_header("Content-Length", "0")
        h.end_headers()

    server.routes["/moved.txt"] = redirect
    server.routes["/here.txt"] = reply(200, TEXT)
    assert fetch(tmp_path, server.url("/moved.txt"))[0] == {"moved.txt": TEXT}


def test_a_failed_source_is_retried_by_the_next_build_until_it_succeeds(server: Server, tmp_path: Path):
    """A build that skipped a failed source is not up to date: `corpus build` again retries it, and
    once every source is read the build is up to date as usual."""
    import json

    from helpers.prose import prose
    from train_helpers import cli_in_process

    server.routes["/late.txt"] = reply(404)
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(4):
        (texts / f"t{i}.txt").write_text(f"TEXT {i}\n\n" + prose(40 + i, 12), encoding="utf-8")
    registry = tmp_path / "sources.toml"
    registry.write_text(f'[[source]]\nid = "local"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1600]\n\n'
                        f'[[source]]\nid = "late"\nkind = "url"\nlocation = "{server.url("/late.txt")}"\nperiod = [1600, 1600]\n',
                        encoding="utf-8")
    ws = tmp_path / "ws"
    args = ["corpus", "build", "-w", str(ws), "--set", f"corpus.sources={json.dumps(str(registry))}",
            "--set", f"corpus.cache_dir={json.dumps(str(tmp_path / 'cache'))}", "--set", "corpus.download_retries=0"]

    def status() -> str:
        card = json.loads((ws / "corpus" / "report.json").read_text(encoding="utf-8"))
        return next(s["status"] for s in card["sources"] if s["id"] == "late")

    rc, out, err = cli_in_process(args)
    assert rc == 0, err
    assert "skipped source 'late'" in out and status() == "failed" and server.hits["/late.txt"] == 1

    server.routes["/late.txt"] = reply(200, ("\n\n".join(prose(90 + i, 10) for i in range(3))).encode())  # the server is back
    rc, out, err = cli_in_process(args)
    assert rc == 0, err
    assert "the last build skipped failed source(s) 'late': building again to retry them" in out
    assert "up to date" not in out and status() == "ok" and server.hits["/late.txt"] == 2

    rc, out, err = cli_in_process(args)
    assert rc == 0, err
    assert "corpus: up to date" in out and "retry" not in out and server.hits["/late.txt"] == 2
