"""The chain every request passes through: ordered steps, each a small object with one job.

A step is called with the exchange and the rest of the chain, as ASGI middlewares are:

    class Step:
        name = "cache"
        async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
            ...                                    # look at or change ex.body (the request)
            reply = await call_next(ex)            # or answer without calling on (a cache hit)
            ...                                    # look at or change the reply
            return reply

so a step can refuse a request (raise `APIError`), rewrite it (mask PII, add retrieved context),
answer it itself (a cache hit), or transform the answer, a stream included: `Reply.events` is an
async iterator of chunk objects, which a step wraps to see or rewrite each chunk as it passes,
without buffering. The default chain is `auth, usage, limits, route, upstream` (outermost
first); `gateway.chain` in gateway.toml lists the steps by name, so another step (part 2's
guardrails and caches, retrieval) is added by naming it: a built-in name, or
`package.module:factory` for one of your own, where `factory(gateway) -> Step`.

Every step is timed into the exchange's trace and becomes a span named `gateway.<name>`.
"""

from __future__ import annotations

import importlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from londinium.errors import ConfigError


@dataclass
class Reply:
    """What goes back to the client: a JSON body, or a stream of chunk objects (framed as SSE by the app)."""

    status: int = 200
    body: dict[str, Any] | None = None
    events: AsyncIterator[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Exchange:
    """One request on its way through the chain, and what the steps learnt about it."""

    endpoint: str  # "chat" or "completion"
    body: dict[str, Any]  # the request as the backend will get it; steps may rewrite it
    log_body: dict[str, Any] | None = None  # the request as logs may show it, when a step redacted it (PII: `pii`)
    authorization: str = ""  # the bearer token the client sent
    id: str = field(default_factory=lambda: f"gw-{uuid.uuid4().hex}")
    arrived: float = field(default_factory=time.perf_counter)
    key: Any = None  # store.Key, once `auth` found it
    route: Any = None  # settings.RouteSection
    candidates: list[Any] = field(default_factory=list)  # backends.Backend, in the order to try them
    reason: str = ""  # why that order (a response header and the log say it)
    backend: Any = None  # the backend that answered
    attempts: int = 0
    upstream_s: float = 0.0  # time spent waiting for the backend (to its first event for a stream)
    first_chunk_s: float | None = None  # arrival to the first chunk handed to the server, for a stream
    usage: dict[str, int] | None = None  # prompt_tokens, completion_tokens
    usage_source: str = "none"
    cost: float = 0.0  # dollars, at the answering backend's prices
    finish_reasons: list[str] = field(default_factory=list)
    status: int | None = None
    error: str | None = None
    outcome: dict[str, str] = field(default_factory=dict)  # decisions of steps for the ledger ({"cache": "hit"})
    trace: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds inside it, callees included)

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def client_wants_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True


Next = Callable[[Exchange], Awaitable[Reply]]


class Step(Protocol):
    name: str

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply: ...


def resolve(name: str, builtins: dict[str, Callable[[Any], Step]]) -> Callable[[Any], Step]:
    """A step factory by name: a built-in, or `package.module:factory`."""
    if name in builtins:
        return builtins[name]
    if ":" not in name:
        raise ConfigError(f"gateway.chain: unknown step {name!r}; built-in steps: {', '.join(builtins)}, "
                          "or 'package.module:factory' for your own")
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"gateway.chain: step {name!r} cannot be imported ({e})") from None


class Chain:
    """The steps in order; `await chain(ex)` runs them."""

    def __init__(self, steps: list[Step], tracer: Any = None):
        self.steps, self.tracer = steps, tracer

    def __call__(self, ex: Exchange) -> Awaitable[Reply]:
        return self._at(0, ex)

    async def _at(self, i: int, ex: Exchange) -> Reply:
        if i == len(self.steps):
            raise RuntimeError("the chain ended without an answer: its last step must be 'upstream'")
        step = self.steps[i]
        start = time.perf_counter()
        try:
            if self.tracer is None:
                return await step(ex, lambda e: self._at(i + 1, e))
            with self.tracer.start_as_current_span(f"gateway.{step.name}"):
                return await step(ex, lambda e: self._at(i + 1, e))
        finally:
            ex.trace.append((step.name, time.perf_counter() - start))
