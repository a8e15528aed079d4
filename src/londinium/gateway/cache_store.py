"""Where the exact cache keeps answers: an LRU inside the gateway process, or Redis.

Both hold opaque bytes under a hex key for a number of seconds and answer `get`/`put`; the `cache`
step (cache.py) decides what goes in. The in-process store is bounded by entries and by bytes, the
least recently used answer going first; a Redis store is bounded by the server's own `maxmemory`
policy (set `maxmemory-policy allkeys-lru` on a Redis used only as a cache), and every entry carries
its TTL (`SET ... PX`), so Redis drops it on time whatever the gateways do.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Protocol

from londinium.errors import ConfigError
from londinium.gateway.settings import CacheSection


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """An LRU of at most `max_entries` answers and `max_bytes` bytes; an entry past its TTL is a miss
    (and is dropped when met). One event loop touches it, so it needs no lock."""

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic):
        self.max_entries, self.max_bytes, self.clock = max_entries, max_bytes, clock
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expires, value)
        self.bytes = 0

    async def get(self, key: str) -> bytes | None:
        found = self.entries.get(key)
        if found is None:
            return None
        expires, value = found
        if self.clock() >= expires:
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (self.clock() + ttl_s, value)
        self.bytes += len(value)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))  # the least recently used

    def _drop(self, key: str) -> None:
        _, value = self.entries.pop(key)
        self.bytes -= len(value)

    def __len__(self) -> int:
        return len(self.entries)

    async def close(self) -> None:
        self.entries.clear()
        self.bytes = 0


class RedisStore:
    """Entries in Redis under `prefix + key`, shared by every gateway pointed at that server."""

    def __init__(self, url: str, prefix: str):
        try:
            import redis.asyncio as redis
        except ImportError:
            raise ConfigError("cache.store = 'redis' needs redis-py: pip install 'londinium[redis]'") from None
        # Short timeouts: a slow or absent Redis turns into cache bypasses, never into stuck requests.
        self.client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = prefix

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(self.prefix + key)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.client.set(self.prefix + key, value, px=max(1, int(ttl_s * 1000)))

    async def close(self) -> None:
        await self.client.aclose()


def open_store(cfg: CacheSection) -> CacheStore:
    if cfg.store == "redis":
        return RedisStore(cfg.redis_url, cfg.prefix)
    return MemoryStore(cfg.max_entries, int(cfg.max_mb * 1024 * 1024))
