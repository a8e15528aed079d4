"""A backend at run time: its settings, its breaker, what is in flight, how fast it answers, whether
its health check passes, its context length and (when configured) its tokenizer."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import Any

import httpx

from londinium.errors import ConfigError
from londinium.gateway.breaker import Breaker
from londinium.gateway.settings import BackendSection, GatewaySection

log = logging.getLogger("londinium.gateway")

# Where a backend has no tokenizer, prompt length for context fitting is estimated at four UTF-8 bytes
# per token (BPE vocabularies of 32k-100k make 3.5-4.5 on English); an underestimate is caught by the
# backend's own context_length_exceeded, which falls back to the next backend.
BYTES_PER_TOKEN = 4


class Backend:
    def __init__(self, cfg: BackendSection, gw: GatewaySection):
        self.cfg, self.name = cfg, cfg.name
        self.breaker = Breaker(gw.breaker_failures, gw.breaker_cooldown_s)
        self.in_flight = 0
        self.ttfb_s: float | None = None  # smoothed time to the first byte (headers, or a stream's first event)
        self.healthy = True
        self.context: int | None = cfg.context or None
        key = cfg.api_key or (os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.tokenizer = _load_tokenizer(cfg) if cfg.tokenizer else None

    def url(self, path: str) -> str:
        return self.cfg.base_url.rstrip("/") + path

    @property
    def full(self) -> bool:
        return bool(self.cfg.max_concurrency) and self.in_flight >= self.cfg.max_concurrency

    def observe_ttfb(self, seconds: float) -> None:
        self.ttfb_s = seconds if self.ttfb_s is None else 0.8 * self.ttfb_s + 0.2 * seconds

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for a request's tokens at this backend's prices (per million tokens)."""
        return (prompt_tokens * self.cfg.input_price + completion_tokens * self.cfg.output_price) / 1e6

    def count(self, text: str) -> int:
        """Tokens of `text`: the backend's tokenizer's count, else the estimate (BYTES_PER_TOKEN)."""
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)

    async def check_health(self, client: httpx.AsyncClient) -> None:
        """GET /models: healthy on a 200; the context length from the model's max_model_len when not configured."""
        try:
            resp = await client.get(self.url("/models"), headers=self.headers, timeout=min(5.0, self.cfg.timeout_s))
            healthy = resp.status_code == 200
            if healthy and not self.cfg.context:
                data = resp.json().get("data", [])
                found = next((m.get("max_model_len") for m in data if isinstance(m, dict) and m.get("id") == self.cfg.model), None)
                if isinstance(found, int) and found > 0:
                    self.context = found
        except (httpx.HTTPError, ValueError, AttributeError):
            healthy = False
        if healthy != self.healthy:
            log.warning("londinium gateway: backend %s is %s", self.name, "healthy again" if healthy else "failing its health check")
        self.healthy = healthy


def _load_tokenizer(cfg: BackendSection) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(cfg.tokenizer)
    except Exception as e:  # tokenizers raises a bare Exception for a missing or malformed file
        raise ConfigError(f"backends {cfg.name!r}: tokenizer {cfg.tokenizer} cannot be read as a tokenizer.json ({e})") from None


async def watch_health(backends: list[Backend], client: httpx.AsyncClient, interval_s: float) -> None:
    """Check every backend now, then every `interval_s` (0: only now), until cancelled."""
    while True:
        await asyncio.gather(*(b.check_health(client) for b in backends))
        if not interval_s:
            return
        await asyncio.sleep(interval_s)
