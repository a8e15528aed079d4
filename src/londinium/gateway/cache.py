"""The `cache` step: the exact cache. An answer is kept under the hash of everything that could change
it, and a request with the same hash is answered from the cache without calling a backend.

- **The key** is the sha256 of a canonical JSON of the endpoint (chat or completion), the tenant (the
  virtual key's id; "" without keys) and the request body as the backend gets it: the model alias,
  every message, every sampling parameter, tools, response_format, n, stream, and any field this code
  does not know (unknown fields are in the key, so a new parameter can never cause a wrong hit).
  Left out: `stream_options` only, which changes the framing the client gets, not the answer (the
  usage chunk is stored and the app drops it for a client that did not ask). The request's fields
  are sorted; nested objects keep the order the client sent, since a JSON schema's property order
  can steer what the model writes: the same schema with its properties reordered is a miss, not a
  wrong hit.
- **What is cached**: deterministic requests only (temperature 0, or a `seed` given), unless the
  route sets `cache_sampled`; 200 answers only; a stream only when it ran to its end.
- **Streams** are stored as their chunk objects and replayed as a stream: the app frames them as it
  framed the original, so the client gets the same bytes (the original's id and created included).
- **Accounting**: a hit is a ledger row with `outcome.cache = "hit"`, usage_source "cache", 0 tokens
  and $0 (no backend was called: the tokens were counted once, on the miss that filled the entry);
  the client still sees the original answer's `usage`.
- **Every decision** is the `x-londinium-cache` header (hit, miss or bypass), `outcome` in the ledger
  and the request log (`cache`, `cache_reason`), and `londinium_gateway_cache_total{model, decision,
  reason}` in /metrics.

A store that fails (Redis down) turns hits into bypasses (`store-unavailable`): the cache never
takes the gateway down with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from prometheus_client import Counter

from londinium.gateway.cache_store import open_store
from londinium.gateway.chain import Exchange, Next, Reply
from londinium.serve.errors import APIError

log = logging.getLogger("londinium.gateway")

HEADER = "x-londinium-cache"
# Request fields that change how the answer is framed, not what it says.
OUTSIDE_KEY = frozenset({"stream_options"})
# The store's failures that make the cache step stand aside (redis-py's errors derive from these or RedisError).
STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)
try:
    from redis.exceptions import RedisError

    STORE_ERRORS += (RedisError,)
except ImportError:  # the in-process store needs no redis
    pass


def cache_key(endpoint: str, body: dict[str, Any], tenant: str) -> str:
    """The entry's name: sha256 of the canonical JSON of what could change the answer (module docstring)."""
    request = {k: body[k] for k in sorted(body) if k not in OUTSIDE_KEY}
    canonical = json.dumps({"endpoint": endpoint, "tenant": tenant, "request": request},
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bypass_reason(ex: Exchange, route: Any, switch: str, bypass_keys: list[str]) -> str | None:
    """Why a cache (`switch`: the route's field that turns it on) stands aside for this request, or None:
    the route turned it off, the key is in bypass_keys, or the request samples (unless the route
    caches sampled requests too)."""
    if route is not None and not getattr(route, switch):
        return "route-off"
    if ex.key is not None and ex.key.name in bypass_keys:
        return "key-off"
    if not deterministic(ex.body) and not (route is not None and route.cache_sampled):
        return "sampled"
    return None


def deterministic(body: dict[str, Any]) -> bool:
    """Temperature 0 (greedy), or a seed: the same request gets the same answer. No temperature means
    the API's default of 1, which samples."""
    temperature = body.get("temperature")
    return (_number(temperature) and temperature == 0) or (isinstance(body.get("seed"), int) and not isinstance(body.get("seed"), bool))


class Cache:
    name = "cache"

    def __init__(self, gateway: Any):
        self.cfg = gateway.settings.cache
        self.store = open_store(self.cfg)
        self.routes = {r.alias: r for r in gateway.settings.routes}
        self.max_entry = int(self.cfg.max_entry_kb * 1024)
        self.decisions = Counter("londinium_gateway_cache", "Exact-cache decisions, by model alias, decision (hit, miss, bypass) and reason.",
                                 ["model", "decision", "reason"], registry=gateway.telemetry.metrics.registry)

    def _decide(self, ex: Exchange, decision: str, reason: str) -> None:
        ex.outcome["cache"], ex.outcome["cache_reason"] = decision, reason
        # Only configured aliases become labels (an unknown one was refused by `route`, or is "-").
        self.decisions.labels(ex.model if ex.model in self.routes else "-", decision, reason).inc()

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        reason = bypass_reason(ex, self.routes.get(ex.model), "cache", self.cfg.bypass_keys)
        key = cache_key(ex.endpoint, ex.body, ex.key.id if ex.key is not None else "") if reason is None else ""
        if reason is None:
            try:
                found = await self.store.get(key)
            except STORE_ERRORS as e:
                log.warning("gateway: the cache store failed on get (%s); answering without it", type(e).__name__)
                reason, found = "store-unavailable", None
            if found is not None:
                self._decide(ex, "hit", "found")
                return replay(json.loads(found))
        if reason is not None:
            self._decide(ex, "bypass", reason)
            return await call_on(ex, call_next, "bypass")
        ex.outcome["cache"] = "miss"  # the reason (stored or why not) once the answer is complete
        try:
            reply = await call_on(ex, call_next, "miss")
        except BaseException:
            self._decide(ex, "miss", "not-ok")
            raise
        if reply.events is not None:
            reply.events = collect(reply.events, self.max_entry, lambda entry: self._kept(ex, key, entry),
                                   lambda: self._decide(ex, "miss", "not-ok"))
        elif reply.status == 200 and reply.body is not None:
            await self._put(ex, key, {"body": reply.body})
        else:
            self._decide(ex, "miss", "not-ok")
        return reply

    async def _kept(self, ex: Exchange, key: str, entry: str | None) -> None:
        if entry is None:
            self._decide(ex, "miss", "too-large")
        else:
            await self._put(ex, key, entry)

    async def _put(self, ex: Exchange, key: str, entry: dict[str, Any] | str) -> None:
        value = (entry if isinstance(entry, str) else json_text(entry)).encode("utf-8", "surrogatepass")
        if len(value) > self.max_entry:
            self._decide(ex, "miss", "too-large")
            return
        route = self.routes.get(ex.model)
        ttl = route.cache_ttl_s if route is not None and route.cache_ttl_s else self.cfg.ttl_s
        try:
            await self.store.put(key, value, ttl)
        except STORE_ERRORS as e:
            log.warning("gateway: the cache store failed on put (%s); the answer was not kept", type(e).__name__)
            self._decide(ex, "miss", "store-unavailable")
            return
        self._decide(ex, "miss", "stored")

    async def close(self) -> None:
        await self.store.close()


async def collect(events: AsyncIterator[dict], max_bytes: int, kept: Callable[[str | None], Awaitable[None]],
                  failed: Callable[[], None]) -> AsyncIterator[dict]:
    """Pass a stream's chunks on as they come and keep them; once it ended well, `kept` gets the entry
    (`{"chunks": [...]}` as JSON text), or None when it grew past max_bytes; `failed()` when it broke
    (an error event, or the client went away). Each chunk is kept as JSON text when it passes, so a
    step outside the cache that rewrites chunks in place cannot change what was stored."""
    chunks: list[str] | None = []
    size = 0
    try:
        async for chunk in events:
            if chunks is not None:
                chunks.append(json_text(chunk))
                size += len(chunks[-1])
                if size > max_bytes:  # too large to keep: stop collecting
                    chunks = None
            yield chunk
    except BaseException:
        failed()
        raise
    await kept(None if chunks is None else '{"chunks":[' + ",".join(chunks) + "]}")


def json_text(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def call_on(ex: Exchange, call_next: Next, decision: str, header: str = HEADER) -> Reply:
    """The rest of the chain, its answer (an error too) carrying the decision's header."""
    try:
        reply = await call_next(ex)
    except APIError as e:
        e.headers = {**(e.headers or {}), header: decision}
        raise
    reply.headers[header] = decision
    return reply


def replay(entry: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    """A stored answer as a reply: a stream's chunks as a stream again, else the body."""
    headers = headers or {HEADER: "hit"}
    if "chunks" in entry:
        return Reply(200, events=_events(entry["chunks"]), headers=headers)
    return Reply(200, body=entry["body"], headers=headers)


async def _events(chunks: list[dict]) -> AsyncIterator[dict]:
    for chunk in chunks:
        yield chunk
