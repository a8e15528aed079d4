"""The `usage` step: one ledger row per request, with the tokens the client was served and their cost.

Where the counts come from, in order: the backend's own `usage` (a stream always asks for it, see
`upstream`); else the backend's tokenizer over the prompt and the text that was sent (`usage_source`
"tokenizer"); else the byte estimate ("estimate"). The row is written before the answer's last
byte: for a JSON answer before it is returned, for a stream before `[DONE]`, so a client that sends
its next request at once is already charged for the last one (budgets and tokens-per-minute are
checked against exactly what was served). A stream the client drops is recorded with what it was
sent (status 499), in the background, since its task is being cancelled. An answer from the exact
cache is a row with 0 tokens and usage_source "cache" (gateway/cache.py).
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

from londinium.gateway.chain import Exchange, Next, Reply
from londinium.gateway.router import prompt_text
from londinium.gateway.store import LedgerRow
from londinium.serve.errors import APIError


def reported_usage(usage: Any) -> dict[str, int] | None:
    """prompt_tokens and completion_tokens of a backend's usage object, if it is one."""
    if not isinstance(usage, dict):
        return None
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(p) is int and type(c) is int and p >= 0 and c >= 0:
        return {"prompt_tokens": p, "completion_tokens": c}
    return None


def choice_text(choice: Any) -> str:
    if not isinstance(choice, dict):
        return ""
    for holder in (choice.get("delta"), choice.get("message"), choice):
        if isinstance(holder, dict):
            text = holder.get("content") if "content" in holder else holder.get("text")
            if isinstance(text, str):
                return text
    return ""


class Usage:
    name = "usage"

    def __init__(self, gateway: Any):
        self.gateway, self.store = gateway, gateway.store

    async def __call__(self, ex: Exchange, call_next: Next) -> Reply:
        try:
            reply = await call_next(ex)
        except APIError as e:
            ex.status, ex.error = e.status, e.message
            await self.record(ex, [])
            raise
        if reply.events is None:
            ex.status = reply.status
            body = reply.body or {}
            ex.usage = reported_usage(body.get("usage"))
            ex.finish_reasons = [c.get("finish_reason") for c in body.get("choices") or [] if isinstance(c, dict)]
            if ex.status >= 400:
                ex.error = str((body.get("error") or {}).get("message", ""))[:500] or None
            await self.record(ex, [choice_text(c) for c in body.get("choices") or []])
            return reply
        reply.events = self._watch(ex, reply.events)
        return reply

    async def _watch(self, ex: Exchange, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
        texts: list[str] = []
        done = False
        try:
            async for chunk in events:
                if chunk.get("usage") is not None:
                    ex.usage = reported_usage(chunk["usage"]) or ex.usage
                for c in chunk.get("choices") or []:
                    texts.append(choice_text(c))
                    if isinstance(c, dict) and c.get("finish_reason"):
                        ex.finish_reasons.append(c["finish_reason"])
                yield chunk
            ex.status = 200
            done = True
        except APIError as e:
            ex.status, ex.error, done = e.status, e.message, True
            raise
        except Exception as e:  # a bug: recorded as the 500 the client's error event says
            ex.status, ex.error, done = 500, f"internal error ({type(e).__name__})", True
            raise
        finally:
            if done:
                await self.record(ex, texts)
            else:  # the client went away (the task is being cancelled): record what it was sent
                ex.status, ex.error = 499, "client disconnected"
                self.gateway.spawn(self.record(ex, texts))

    async def record(self, ex: Exchange, texts: list[str]) -> None:
        backend, usage = ex.backend, ex.usage
        if "hit" in (ex.outcome.get("cache"), ex.outcome.get("semantic_cache")):  # no backend ran: the tokens were counted on the miss that filled the entry
            usage, ex.usage_source = {"prompt_tokens": 0, "completion_tokens": 0}, "cache"
        elif usage is not None:
            ex.usage_source = "upstream"
        elif backend is not None and ((ex.status or 500) < 400 or any(texts)):
            usage = {"prompt_tokens": backend.count(prompt_text(ex.body, ex.endpoint)),
                     "completion_tokens": sum(backend.count(t) for t in texts if t)}
            ex.usage_source = "tokenizer" if backend.tokenizer is not None else "estimate"
        ex.usage = usage or {"prompt_tokens": 0, "completion_tokens": 0}
        ex.cost = backend.cost(ex.usage["prompt_tokens"], ex.usage["completion_tokens"]) if backend is not None else 0.0
        row = LedgerRow(request_id=ex.id, key_id=ex.key.id if ex.key else None, model=ex.model,
                        backend=backend.name if backend else None, backend_model=backend.cfg.model if backend else None,
                        stream=ex.stream, status=ex.status or 500, prompt_tokens=ex.usage["prompt_tokens"],
                        completion_tokens=ex.usage["completion_tokens"], cost=ex.cost,
                        latency_s=round(time.perf_counter() - ex.arrived, 6), usage_source=ex.usage_source,
                        attempts=ex.attempts, outcome=dict(ex.outcome), error=ex.error)
        await self.store.run(self.store.record, row, ex.key)
