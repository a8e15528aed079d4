"""The `token_limits` step: how long a request may be and how many tokens a route may serve a minute.

- **Length**: `max_prompt_tokens` (the prompt, counted with the tokenizer of the backend the route
  would try first, else estimated at 4 bytes a token, as routing counts it) and `max_completion_tokens`
  (the `max_tokens` / `max_completion_tokens` asked for), per route (`[[routes]]`) and per virtual key
  (`[token_limits.keys.NAME]`); the smaller applies. Over it: 400 naming the limit, whose it is and the
  count (`prompt_too_long`, `max_tokens_too_large`). A request that asks no `max_tokens` under a
  completion limit is given the limit, so the bound holds.
- **Rate of tokens**: a route's `tpm` is a token bucket shared by every key on the route (a key's own
  `--tpm` is checked by `limits`): a request is admitted while the bucket is positive and its tokens
  (the backend's usage, else counted) are taken when the answer is complete; empty: 429
  `rate_limit_exceeded` naming the route's limit, with Retry-After. The bucket lives in the gateway's
  database, so gateways sharing one share it.

**Every refusal** is `outcome.token_limit` (the limit's name) in the ledger and the request log, and
`londinium_gateway_token_limit_total{model, limit}` in /metrics.
"""

from __future__ import annotations

import math
from typing import Any, AsyncIterator

from prometheus_client import Counter

from londinium.gateway.accounting import reported_usage
from londinium.gateway.chain import Exchange, Next, Reply
from londinium.gateway.router import max_tokens, prompt_text
from londinium.serve.errors import APIError


class TokenLimits:
    name = "token_limits"

    def __init__(self, gateway: Any):
        s = gateway.settings
        self.store = gateway.store
        self.keys = s.token_limits.keys
        self.routes = {r.alias: r for r in s.routes}
        self.refusals = Counter("londinium_gateway_token_limit", "Requests refused by a token limit, by model alias and limit "
                                "(max_prompt_tokens, max_completion_tokens, route_tpm).", ["model", "limit"],
                                registry=gateway.telemetry.metrics.registry)

    def _limit(self, ex: Exchange, name: str) -> tuple[int, str]:
        """The smaller nonzero of the route's and the key's limit `name`, and whose it is ("" if none)."""
        found = []
        route = self.routes.get(ex.model)
        if route is not None and getattr(route, name):
            found.append((getattr(route, name), f"route {ex.model!r}"))
        if ex.key is not None and (mine := (self.keys.get(ex.key.name) or {}).get(name)):
            found.append((int(mine), f"key {ex.key.name!r}"))
        return min(found) if found else (0, "")

    def _refuse(self, ex: Exchange, limit: str, error: APIError) -> APIError:
        ex.outcome["token_limit"] = limit
        self.refusals.labels(ex.model if ex.model in self.routes else "-", limit).inc()
        return error

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        counter = ex.candidates[0] if ex.candidates else None  # `route` ran: the backend tried first counts
        limit, whose = self._limit(ex, "max_prompt_tokens")
        if limit and counter is not None:
            n = counter.count(prompt_text(ex.body, ex.endpoint))
            if n > limit:
                how = "counted with its tokenizer" if counter.tokenizer is not None else "estimated at 4 bytes a token"
                raise self._refuse(ex, "max_prompt_tokens", APIError(
                    400, f"the prompt has {n:,} tokens ({how}); max_prompt_tokens of {whose} is {limit:,}: shorten it",
                    param="messages" if ex.endpoint == "chat" else "prompt", code="prompt_too_long"))
        limit, whose = self._limit(ex, "max_completion_tokens")
        if limit:
            wanted = max_tokens(ex.body)
            if wanted > limit:
                field = "max_completion_tokens" if "max_completion_tokens" in ex.body else "max_tokens"
                raise self._refuse(ex, "max_completion_tokens", APIError(
                    400, f"{field} = {wanted:,} is more than max_completion_tokens of {whose} ({limit:,}): ask for at most {limit:,}",
                    param=field, code="max_tokens_too_large"))
            if not wanted:
                ex.body = {**ex.body, "max_tokens": limit}
        route = self.routes.get(ex.model)
        tpm = route.tpm if route is not None else 0
        if not tpm:
            return await call_next(ex)
        bucket = f"route:{ex.model}"
        wait = await self.store.run(self.store.take, bucket, "tpm", tpm, tpm / 60.0, 1.0, 0.0)
        if wait:
            seconds = max(1, math.ceil(wait))
            raise self._refuse(ex, "route_tpm", APIError(
                429, f"route {ex.model!r} used its {tpm:,} tokens per minute (its tpm); retry after {seconds} s",
                code="rate_limit_exceeded", headers={"Retry-After": str(seconds)}))
        reply = await call_next(ex)
        if reply.events is not None:
            reply.events = self._debit_stream(ex, bucket, tpm, counter, reply.events)
        elif reply.status == 200 and reply.body is not None:
            await self._debit(ex, bucket, tpm, counter, reported_usage(reply.body.get("usage")), [])
        return reply

    async def _debit_stream(self, ex: Exchange, bucket: str, tpm: int, counter: Any, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
        usage, texts = None, []
        try:
            async for chunk in events:
                usage = reported_usage(chunk.get("usage")) or usage
                texts += [str((c.get("delta") or {}).get("content") or c.get("text") or "") for c in chunk.get("choices") or [] if isinstance(c, dict)]
                yield chunk
        finally:  # what was served counts, a stream cut short too
            await self._debit(ex, bucket, tpm, counter, usage, texts)

    async def _debit(self, ex: Exchange, bucket: str, tpm: int, counter: Any, usage: dict | None, texts: list[str]) -> None:
        if usage is not None:
            tokens = usage["prompt_tokens"] + usage["completion_tokens"]
        elif counter is not None:
            tokens = counter.count(prompt_text(ex.body, ex.endpoint)) + counter.count("".join(texts))
        else:
            return
        await self.store.run(self.store.debit, bucket, "tpm", tpm, tokens)
