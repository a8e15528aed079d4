"""The chain's small steps: who is asking (`auth`), may they (`limits`), and where it goes (`route`).
`usage` (the ledger) and `upstream` (the call, with fallback) have their own modules."""

from __future__ import annotations

import math
from typing import Any

from londinium.gateway.chain import Exchange, Next, Reply
from londinium.serve.errors import APIError


class Auth:
    """The virtual key the bearer token names: 401 when it is missing, unknown or revoked (with
    gateway.keys_required off, such a request goes on without a key: clients such as the openai SDK
    always send one). Looked up in the database each time, so a revocation holds at once in
    every gateway sharing it."""

    name = "auth"

    def __init__(self, gateway: Any):
        self.store, self.required = gateway.store, gateway.settings.gateway.keys_required

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        key = await self.store.run(self.store.find_key, ex.authorization) if ex.authorization else None
        if key is not None and key.revoked is None:
            ex.key = key
        elif self.required and ex.authorization:
            raise APIError(401, "Incorrect API key provided: it is unknown or revoked "
                                "(`londinium gateway keys list` shows the keys)", code="invalid_api_key")
        elif self.required:
            raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>' with a key from "
                                "`londinium gateway keys create`", code="invalid_api_key")
        return await call_next(ex)


def _too_many(message: str, wait_s: float, code: str = "rate_limit_exceeded") -> APIError:
    wait = max(1, math.ceil(wait_s))
    return APIError(429, f"{message}; retry after {wait} s", code=code, headers={"Retry-After": str(wait)})


class Limits:
    """The key's model allow-list (403), dollar budget (429 insufficient_quota, from the spend the
    ledger keeps), tokens per minute and requests per minute (429 rate_limit_exceeded with
    Retry-After; token buckets in the database, shared by every gateway on it). Tokens are debited
    by `usage` when the answer is complete; a request is admitted while the bucket is positive."""

    name = "limits"

    def __init__(self, gateway: Any):
        self.store = gateway.store

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        key = ex.key
        if key is not None:
            if key.models and ex.model not in key.models:
                raise APIError(403, f"key {key.name!r} may not use model {ex.model!r}; it may use: {', '.join(key.models)}",
                               param="model", code="model_not_allowed")
            if key.budget and key.spend >= key.budget:
                raise APIError(429, f"key {key.name!r} has spent ${key.spend:.6f} of its ${key.budget:g} budget",
                               code="insufficient_quota", type="insufficient_quota")
            buckets = [(kind, limit) for kind, limit in (("tpm", key.tpm), ("rpm", key.rpm)) if limit]
            if buckets:
                wait, kind = await self.store.run(self.store.take_all, key.id, buckets)
                if wait:
                    what = "tokens" if kind == "tpm" else "requests"
                    raise _too_many(f"key {key.name!r} used its {dict(buckets)[kind]:,} {what} per minute", wait)
        return await call_next(ex)


class Route:
    """The model alias -> the backends to try, in order, and why (`router.Router.decide`)."""

    name = "route"

    def __init__(self, gateway: Any):
        self.routers = gateway.routers

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        router = self.routers.get(ex.model)
        if router is None:
            raise APIError(404, f"The model `{ex.model}` does not exist on this gateway; it routes: "
                                f"{', '.join(self.routers)} (see GET /v1/models)", param="model", code="model_not_found")
        ex.route = router.route
        ex.candidates, ex.reason = router.decide(ex.body, ex.endpoint)
        return await call_next(ex)
