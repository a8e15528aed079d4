"""Which requests an HTTP server of londinium answers: the Host and Origin checks against DNS
rebinding, and CORS for the browser origins a deployment allows.

DNS rebinding: a web page at `evil.example` re-resolves its own name to 127.0.0.1, so the visitor's
browser sends the page's requests to a keyless server on the visitor's loopback and, taking it for
the page's own origin, lets the page read the answers. Nothing in the connection shows the trick;
the Host header does, because it carries the page's name (`evil.example:8000`), which is not a name
of this server. So, as the `mcp` SDK's transport security does for `londinium mcp --http`:

- **Host** must name this server, on the port the connection came in on: a loopback address or
  `localhost` when it listens on loopback; any IP address or `localhost` when it listens elsewhere
  (a rebinding needs a DNS name, and an IP address is not one); or an entry of the allow-list (a
  name, `name:port`, or `*` for any), for names under which a proxy or DNS serves it. Else 421
  Misdirected Request.
- **Origin**, which browsers send on cross-site requests, must be the server's own (`http://` or
  `https://` and the Host) or an entry of the origin allow-list (`*` for any). Else 403, before the
  request reaches anything that does work.
- **CORS** headers go only to the allowed origins, so by default a page on another site cannot read
  an answer even from a server it is allowed to reach.

`guard(app, ...)` adds both to a Starlette or FastAPI app; `londinium serve` uses it, and so will the
gateway and the playground. `londinium mcp --http` puts `HostCheck` in front of the SDK's app: the
SDK's own check takes any Host that starts with `127.0.0.1:` (`127.0.0.1:1`, `127.0.0.1:8000@evil`)
and none at all when it listens on another address. The refusal's body is the caller's (`londinium serve`: OpenAI's error).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from starlette.middleware.cors import CORSMiddleware

from londinium.errors import LondiniumError

# (status, message, code) -> an ASGI response
Refusal = Callable[[int, str, str], Any]


def is_loopback(host: str) -> bool:
    """A bind address or Host name that only this machine reaches."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None]:
    """`"Example.com:8000"` -> `("example.com", 8000)`, `"[::1]:80"` -> `("[::1]", 80)`; no port: None.
    A malformed port is a ValueError."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise ValueError(value)
    else:
        name, colon, port = value.partition(":")
        port = port if colon else None
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(value)
    return name, int(port) if port is not None else None


@dataclass(frozen=True)
class TrustedHosts:
    """What a server listening on `bind` answers to. `setting` names the config section the
    allow-lists come from, so a refusal can say what to set."""

    bind: str
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    setting: str = "serve"

    def host_refusal(self, host: str | None, port: int | None, scheme: str) -> str | None:
        """Why a request with this Host header, on a connection to local `port`, is refused; None if it is not."""
        if not host:
            return "the request has no Host header; send one naming this server"
        try:
            name, given = split_host(host)
        except ValueError:
            return f"Host header {host!r} is not a host name with an optional port"
        for entry in self.allowed_hosts:
            if entry == "*":
                return None
            allowed, allowed_port = split_host(entry)
            if name == allowed and allowed_port in (None, given if given is not None else _default_port(scheme)):
                return None
        ours = is_loopback(name) if is_loopback(self.bind) else (name == "localhost" or _is_ip(name))
        same_port = port is None or (given if given is not None else _default_port(scheme)) == port
        if ours and same_port:
            return None
        answers = "a loopback address or localhost" if is_loopback(self.bind) else "an IP address or localhost"
        return (f"Host header {host!r} does not name this server, which answers to {answers}"
                f"{f' on port {port}' if port else ''}; to serve it under that name (behind a proxy, or by DNS), "
                f"add it to {self.setting}.allowed_hosts")

    def origin_refusal(self, origin: str | None, host: str | None) -> str | None:
        """Why a request from this browser Origin is refused; None if it is not (or sent none)."""
        if origin is None or "*" in self.allowed_origins or origin in self.allowed_origins:
            return None
        scheme, sep, rest = origin.partition("://")
        if sep and scheme in ("http", "https") and host is not None and rest.lower() == host.strip().lower():
            return None  # the server's own pages (/docs): same origin
        return (f"Origin {origin!r} is not allowed: a web page on another site may not use this server; "
                f"to let it, add it to {self.setting}.allowed_origins")


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


class HostCheck:
    """ASGI middleware: refuse a request whose Host or Origin `TrustedHosts` refuses (421, 403)."""

    def __init__(self, app: Any, trusted: TrustedHosts, refuse: Refusal):
        self.app, self.trusted, self.refuse = app, trusted, refuse

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in (b"host", b"origin")}
        host, server = headers.get("host"), scope.get("server")
        why = self.trusted.host_refusal(host, server[1] if server else None, scope.get("scheme", "http"))
        if why is not None:
            return await self.refuse(421, why, "misdirected_request")(scope, receive, send)
        why = self.trusted.origin_refusal(headers.get("origin"), host)
        if why is not None:
            return await self.refuse(403, why, "origin_not_allowed")(scope, receive, send)
        await self.app(scope, receive, send)


def trusted_hosts(bind: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str],
                  setting: str = "serve") -> TrustedHosts:
    """The allow-lists checked and lower-cased (a bad entry is a LondiniumError naming the setting)."""
    hosts, origins = tuple(h.lower() for h in allowed_hosts), tuple(o.lower() for o in allowed_origins)
    for entry in (h for h in hosts if h != "*"):
        try:
            split_host(entry)
        except ValueError:
            raise LondiniumError(f"{setting}.allowed_hosts: {entry!r} is not a host name with an optional port "
                                 "(1-65535), nor '*'") from None
    return TrustedHosts(bind, hosts, origins, setting)


def guard(app: Any, bind: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str], refuse: Refusal,
          setting: str = "serve") -> None:
    """Add the Host/Origin check, and CORS for the allowed origins (none: no CORS headers), to a
    Starlette app. Call it after the middlewares that must run behind it (an API key: a browser's
    CORS preflight carries none), before those that must see every request (metrics)."""
    trusted = trusted_hosts(bind, allowed_hosts, allowed_origins, setting)
    if trusted.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(trusted.allowed_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(HostCheck, trusted=trusted, refuse=refuse)
