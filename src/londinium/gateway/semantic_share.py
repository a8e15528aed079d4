"""The semantic cache shared by several gateway processes through Redis: every entry a gateway stores is
appended to one Redis stream, and every gateway reads what the others appended into its own index
before it looks a question up.

    feed = SemanticFeed("redis://127.0.0.1:6379/0", "londinium:semantic", embedder="corpus", dim=256, max_entries=10_000)
    await feed.catch_up(index)                       # the entries other gateways added since the last call
    await feed.publish(scope, vector, value, question, ttl_s)

Why a stream and a local copy, not a search in Redis: Debian's Redis (7.0) has no vector search
(RediSearch 1.2 has none), and fetching a scope's vectors for every lookup would move megabytes a
request. A stream is Redis's own replicated log: reading what is new is one `XREAD` that returns at once
(nothing new: a round trip of well under a millisecond), and the search stays the exact NumPy one of
`semantic_index.py`. The stream is trimmed to about `max_entries` entries (`XADD MAXLEN ~`), each entry
carries its expiry (wall clock) and the embedder it was embedded with, so a gateway skips what expired
and what another embedder wrote. A gateway that starts reads the whole stream: with Redis, the stream
is the cache's memory, not the local `.npz`.

Redis unreachable or failing: the gateway goes on with its own index and logs a warning (a cache must
not fail requests); what it stored meanwhile is not shared.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np

from londinium.errors import ConfigError
from londinium.gateway.semantic_index import SemanticIndex

log = logging.getLogger("londinium.gateway")
READ_BATCH = 1000  # entries per XREAD when catching up


class SemanticFeed:
    def __init__(self, url: str, key: str, embedder: str, dim: int, max_entries: int):
        try:
            import redis.asyncio as redis
        except ImportError:
            raise ConfigError("semantic_cache.redis_url needs redis-py: pip install 'londinium[redis]'") from None
        # Short timeouts, as the exact cache's store: a slow Redis means unshared entries, never stuck requests.
        self.client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.errors = (redis.RedisError, OSError)
        self.key, self.embedder, self.dim, self.max_entries = key, embedder, dim, max_entries
        self.origin = uuid.uuid4().hex  # this gateway's own entries are in its index already
        self.last = "0-0"

    async def publish(self, scope: str, vector: np.ndarray, value: bytes, question: str, ttl_s: float) -> None:
        fields = {"scope": scope, "vector": np.asarray(vector, np.float32).tobytes(), "answer": value, "question": question,
                  "expires": repr(time.time() + ttl_s), "embedder": f"{self.embedder}/{self.dim}", "origin": self.origin}
        try:
            await self.client.xadd(self.key, fields, maxlen=self.max_entries, approximate=True)
        except self.errors as e:
            log.warning("gateway: the semantic cache entry was not shared through Redis (%s)", e)

    async def catch_up(self, index: SemanticIndex) -> int:
        """Add to `index` the live entries other gateways appended since the last call; how many."""
        added = 0
        try:
            while True:
                got = await self.client.xread({self.key: self.last}, count=READ_BATCH)
                entries = got[0][1] if got else []
                for entry_id, fields in entries:
                    self.last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    added += self._add(index, fields)
                if len(entries) < READ_BATCH:
                    return added
        except self.errors as e:
            log.warning("gateway: the shared semantic cache could not be read from Redis (%s)", e)
            return added

    def _add(self, index: SemanticIndex, fields: dict[bytes, bytes]) -> int:
        try:
            if fields[b"origin"].decode() == self.origin or fields[b"embedder"].decode() != f"{self.embedder}/{self.dim}":
                return 0
            ttl_s = float(fields[b"expires"]) - time.time()
            vector = np.frombuffer(fields[b"vector"], np.float32)
            if ttl_s <= 0 or vector.shape != (self.dim,):
                return 0
            index.add(fields[b"scope"].decode(), vector, fields[b"answer"], ttl_s, question=fields[b"question"].decode())
            return 1
        except (KeyError, ValueError, UnicodeDecodeError):
            return 0  # not an entry of ours: another program's stream under the same key

    async def close(self) -> None:
        await self.client.aclose()
