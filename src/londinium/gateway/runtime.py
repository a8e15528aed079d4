"""`Gateway`: everything one gateway process holds, built from its settings, owned by its app.

No state lives at module level: two gateways in one process (the tests run several) share nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Callable, Coroutine

import httpx

from londinium.gateway.accounting import Usage
from londinium.gateway.backends import Backend
from londinium.gateway.cache import Cache
from londinium.gateway.chain import Chain, Step, resolve
from londinium.gateway.output_filter import OutputFilter
from londinium.gateway.pii import Pii
from londinium.gateway.response_schema import ResponseSchema  # Presidio itself is imported only when the chain names `pii`
from londinium.gateway.router import Router
from londinium.gateway.semantic_cache import SemanticCache
from londinium.gateway.settings import GatewaySettings
from londinium.gateway.steps import Auth, Limits, Route
from londinium.gateway.store import Store
from londinium.gateway.telemetry import Telemetry
from londinium.gateway.token_limits import TokenLimits
from londinium.gateway.upstream import Upstream

# The built-in steps by the name gateway.chain uses, in the order they go in a chain (docs/gateway.md):
# each a factory `(gateway) -> Step`.
BUILTIN_STEPS: dict[str, Callable[[Any], Step]] = {"auth": Auth, "usage": Usage, "limits": Limits, "route": Route,
                                                   "token_limits": TokenLimits, "pii": Pii, "output_filter": OutputFilter, "cache": Cache,
                                                   "semantic_cache": SemanticCache, "response_schema": ResponseSchema,
                                                   "upstream": Upstream}


class Gateway:
    def __init__(self, settings: GatewaySettings, store: Store | None = None):
        from londinium.gateway.classifier import Classifier

        g = settings.gateway
        self.settings = settings
        self.rng = random.Random(g.seed if g.seed >= 0 else None)
        self.backends = {b.name: Backend(b, g) for b in settings.backends}
        classifiers = {path: Classifier.load(path) for path in {r.classifier for r in settings.routes if r.classifier}}
        self.routers = {r.alias: Router(r, self.backends, self.rng, classifiers.get(r.classifier)) for r in settings.routes}
        self.telemetry = Telemetry(settings.telemetry, list(self.backends.values()), g.request_log, g.log_prompts)
        factories = [resolve(name, BUILTIN_STEPS) for name in g.chain]
        self.store = store or Store(settings.database_url())
        # No pool limit below the backends' own caps; keep-alive connections are reused across requests.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30.0),
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
        self.chain = Chain([factory(self) for factory in factories], self.telemetry.tracer)
        self.draining = False
        self.in_flight = 0
        self._pending: set[asyncio.Task] = set()
        self._health: asyncio.Task | None = None

    def spawn(self, coroutine: Coroutine) -> None:
        """Run work that must finish even though its request is gone (a dropped stream's ledger row);
        `close` waits for it."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def start(self) -> None:
        from londinium.gateway.backends import watch_health

        self._health = asyncio.create_task(watch_health(list(self.backends.values()), self.client,
                                                        self.settings.gateway.health_interval_s))

    def drain(self, timeout_s: float) -> None:
        """Stop admitting (503); wait up to timeout_s for requests in flight. Called on a thread at SIGTERM."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=self.settings.gateway.shutdown_timeout_s)
        await self.client.aclose()
        for step in self.chain.steps:  # steps holding connections of their own (the cache's Redis)
            if hasattr(step, "close"):
                await step.close()
        await asyncio.to_thread(self.store.close)
        self.telemetry.close()
