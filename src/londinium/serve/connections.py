"""Bounds on connections, which uvicorn leaves open: how many, and how long one may take to send a
request. Without them, clients that connect and send nothing (or trickle a header a byte at a time)
hold their connections for ever; at the open-file limit the server can accept nobody, and asyncio
logs a traceback for every failed accept, up to the listen backlog (2,048) each second: 39 MB of
log in 10 s here (docs/LOG.md).

- `BoundedH11` is uvicorn's h11 protocol with a cap on open connections (one over it is answered
  503 and closed at once, so it holds no descriptor) and a deadline for a request's head, counted
  from the connection opening or the previous response (uvicorn only times out a connection idle
  between requests, and only until its first byte). A request's body has its own deadline in the
  app (`bodies.BodyLimit`, 408).
- `connection_cap` keeps the cap under the process's open-file limit.
- `OncePer` is a logging filter that lets a repeated condition through once per interval, as one
  line with the count of repeats, without its traceback.
- `listen` binds the listening socket before uvicorn starts, so a port in use or an address that is
  not this machine's is one line and exit 2 (uvicorn logs the error and exits 3 from inside).

`londinium serve` and `londinium mcp --http` use all of them, with [serve]'s bounds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import errno
import resource
import socket
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from londinium.errors import LondiniumError

log = logging.getLogger("londinium.serve")

# Descriptors the server needs besides its connections: the listening socket, the event loop's own,
# the request log, standard streams, and files opened while loading (a checkpoint, the tokenizer).
RESERVED_FDS = 32
CAP_REACHED = "londinium serve: connection limit reached"


def connection_cap(configured: int) -> int:
    """`configured`, lowered to what the soft open-file limit leaves for connections."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - RESERVED_FDS))


def connection_limits(serve: Any) -> dict[str, Any]:
    """uvicorn.Config's arguments for the bounds of `serve` (a ServeConfig)."""
    bounded = functools.partial(BoundedH11, max_connections=connection_cap(serve.max_connections),
                                head_timeout_s=serve.read_timeout_s)
    # An idle kept-alive connection is closed after 5 s (uvicorn's default, stated so it stays bounded).
    return {"http": bounded, "timeout_keep_alive": 5}


def _refusal(message: str) -> bytes:
    """A whole HTTP response, written before any request is read: 503 in OpenAI's error shape."""
    body = json.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                 "code": "too_many_connections"}}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol, with `max_connections` and `head_timeout_s` (see the module doc).
    Passed to uvicorn as `http=functools.partial(BoundedH11, max_connections=..., head_timeout_s=...)`."""

    def __init__(self, *args: Any, max_connections: int, head_timeout_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_connections, self.head_timeout_s = max_connections, head_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("%s: %d connections open (serve.max_connections, or the open-file limit less %d); "
                        "new ones get 503 until some close", CAP_REACHED, self.max_connections, RESERVED_FDS)
            transport.write(_refusal(f"the server has {self.max_connections} connections open; retry in a moment"))
            transport.close()
            return
        self._expect_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._expect_head()  # the next request's head, on this kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _expect_head(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_overdue)

    def _head_overdue(self) -> None:
        # A request whose head arrived has a cycle still running (its body has the app's deadline,
        # its response takes what it takes); otherwise no head came in time: close.
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass  # h11 is mid-message (a head half received): closing is all that is left to do
            self.transport.close()


class OncePer(logging.Filter):
    """Let a record whose message starts with one of the `rules`' prefixes through once per
    `interval_s`, as one line without its traceback, with the rule's hint and how many like it were
    dropped since; other records pass untouched."""

    def __init__(self, rules: dict[str, str], interval_s: float = 60.0):
        super().__init__()
        self.rules, self.interval_s = rules, interval_s
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        prefix = next((p for p in self.rules if message.startswith(p)), None)
        if prefix is None:
            return True
        now = time.monotonic()
        if prefix in self._last and now - self._last[prefix] < self.interval_s:
            self._dropped[prefix] = self._dropped.get(prefix, 0) + 1
            return False
        dropped, self._last[prefix] = self._dropped.pop(prefix, 0), now
        cause = record.exc_info[1] if record.exc_info else None
        line = message.splitlines()[0] + (f" ({cause})" if cause else "") + self.rules[prefix]
        line += (f" [{dropped:,} more like it in the last {self.interval_s:g} s not logged]" if dropped else
                 f" [repeats are logged at most once every {self.interval_s:g} s]")
        record.msg, record.args, record.exc_info, record.exc_text = line, None, None, None
        return True


# What repeats under a connection flood, per logger: asyncio's failed accept (EMFILE: out of file
# descriptors; it retries each second, logging once per backlog slot) and the cap's own warning.
NOISY = {
    "asyncio": {"socket.accept() out of system resource":
                ": new connections wait in the listen queue until descriptors are free (raise `ulimit -n`, "
                "or lower serve.max_connections)"},
    "londinium.serve": {CAP_REACHED: ""},
}


def quiet_repeats(interval_s: float = 60.0) -> None:
    """Install `OncePer` on the loggers that repeat under a connection flood (idempotent)."""
    for name, rules in NOISY.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePer) for f in logger.filters):
            logger.addFilter(OncePer(rules, interval_s))


def listen(host: str, port: int, command: str) -> socket.socket:
    """A socket bound to `host`:`port` for uvicorn (`Server.run(sockets=[...])`); LondiniumError
    naming the address and what to change when it cannot be had. `command` names the flags' owner."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            fix = "another program listens there: choose another --port"
        elif isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
            fix = "that is no address of this machine: choose another --host (127.0.0.1, or 0.0.0.0 for every interface)"
        else:
            fix = "choose another --host or --port"
        raise LondiniumError(f"{command} cannot listen on {host}:{port} ({e.strerror or e}); {fix}") from None
    sock.set_inheritable(True)
    return sock
