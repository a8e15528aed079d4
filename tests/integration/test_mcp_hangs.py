"""`londinium mcp --http` against clients that would hold it for ever: a connection that sends
nothing, a body trickled a byte at a time, and more connections than it has file descriptors
(which killed the process before it had [serve]'s bounds: asyncio's failed accepts were logged
through a handler that itself needed a descriptor). Also a port already in use: one line, exit 2, and Host headers that do not name this server (DNS
rebinding; the SDK's own check let `127.0.0.1:<any port>` and `127.0.0.1:<port>@evil.example` in).
A real process, raw sockets as the slow clients (the helpers of test_serve_hangs)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import free_port, trained_run

from integration.test_serve_hangs import CLIENTS, READ_TIMEOUT, limited_files, rest_until_closed, trickle

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}).encode()


def mcp_command(ws, port: int) -> list[str]:
    return [sys.executable, "-m", "londinium", "mcp", "--http", "-w", str(ws.root), "--run", trained_run(ws),
            "--checkpoint", "latest", "--port", str(port), "--set", f"serve.read_timeout_s={READ_TIMEOUT}"]


@pytest.fixture(scope="module")
def mcp_http(tiny_workspace, tmp_path_factory):
    log, port = tmp_path_factory.mktemp("mcp-hangs") / "server.log", free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LONDINIUM_API_KEY": ""}
    with log.open("w") as out:
        proc = subprocess.Popen(mcp_command(tiny_workspace, port), stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=limited_files)
    try:
        deadline = time.monotonic() + 90
        while post_initialize(port) is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield port, log, proc
    finally:
        proc.kill()
        proc.wait()


def post_initialize(port: int) -> int | None:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/mcp", content=INITIALIZE, timeout=30,
                          headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}).status_code
    except httpx.TransportError:
        return None


def head(port: int, length: int) -> bytes:
    return (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Length: {length}\r\n\r\n").encode()


def test_an_idle_connection_and_a_trickled_body_are_cut_off(mcp_http) -> None:
    port, _, _ = mcp_http
    idle = socket.create_connection(("127.0.0.1", port))
    slow = socket.create_connection(("127.0.0.1", port))
    try:
        slow.sendall(head(port, len(INITIALIZE)))
        sent, reply = trickle(slow, INITIALIZE)
        rest = rest_until_closed(slow)
        assert rest is not None and reply.startswith(b"HTTP/1.1 408 ") and sent < len(INITIALIZE), reply[:200]
        error = json.loads((reply + rest).split(b"\r\n\r\n", 1)[1])
        assert error["id"] is None and error["error"]["code"] == -32600 and "serve.read_timeout_s" in error["error"]["message"]
        assert rest_until_closed(idle) == b""  # closed at the head deadline, having sent nothing
    finally:
        idle.close()
        slow.close()
    assert post_initialize(port) == 200


def test_a_host_that_does_not_name_this_server_is_421_and_a_foreign_origin_403(mcp_http) -> None:
    """`londinium serve`'s rule (serve/hosts.py) in front of the SDK's app, answered as JSON-RPC errors."""
    port, _, _ = mcp_http
    url = f"http://127.0.0.1:{port}/mcp"
    accept = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    for host in (f"127.0.0.1:{port}@evil.example", f"127.0.0.1:{port + 1}", f"evil.example:{port}", "evil.example",
                 f"127.0.0.1.nip.io:{port}", f"localhost.evil.example:{port}", f"[::1]:{port}x", "evil example"):
        r = httpx.post(url, content=INITIALIZE, headers={**accept, "Host": host}, timeout=30)
        assert r.status_code == 421, (host, r.status_code, r.text[:200])
        assert r.json()["id"] is None and r.json()["error"]["code"] == -32600 and f"Host header {host!r}" in r.text
    r = httpx.post(url, content=INITIALIZE, headers={**accept, "Origin": "http://evil.example"}, timeout=30)
    assert r.status_code == 403 and "serve.allowed_origins" in r.json()["error"]["message"], r.text[:200]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}", f"127.0.0.2:{port}"):
        r = httpx.post(url, content=INITIALIZE, headers={**accept, "Host": host}, timeout=30)
        assert r.status_code == 200, (host, r.text[:200])


def test_at_the_file_descriptor_limit_it_lives_and_serves_again(mcp_http) -> None:
    somaxconn = Path("/proc/sys/net/core/somaxconn")
    if not somaxconn.is_file() or int(somaxconn.read_text()) < CLIENTS:
        pytest.skip(f"needs Linux with a listen queue (net.core.somaxconn) of at least {CLIENTS} connections")
    port, log, proc = mcp_http
    os.kill(proc.pid, signal.SIGSTOP)  # every client waits in the listen queue: accept runs out of descriptors at once
    try:
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(CLIENTS)]
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    try:
        assert post_initialize(port) in (200, 503)  # answered either way while they hold their connections
    finally:
        for c in clients:
            c.close()
    deadline = time.monotonic() + 60
    while post_initialize(port) != 200:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    text = log.read_text()
    assert "Traceback" not in text and text.count("out of system resource") <= 1, text[-3000:]


def test_a_port_in_use_is_one_line(tiny_workspace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        commands = {"mcp": mcp_command(tiny_workspace, port),
                    "serve": [sys.executable, "-m", "londinium", "serve", "-w", str(tiny_workspace.root), "--run",
                              trained_run(tiny_workspace), "--port", str(port)]}
        procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k, c in commands.items()}
        for name, p in procs.items():
            out, err = p.communicate(timeout=120)
            lines = err.strip().splitlines()
            assert p.returncode == 2 and "Traceback" not in err, err
            assert lines[-1].startswith(f"londinium: error: londinium {name}") and \
                f"cannot listen on 127.0.0.1:{port} (Address already in use); another program listens there" in lines[-1], err
