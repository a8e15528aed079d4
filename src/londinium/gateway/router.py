"""Which backends of a route to try, in which order, and the reason in words.

    router = Router(route, backends, rng, classifier)
    order, reason = router.decide(body, "chat")

1. **Context**: a backend whose context length cannot hold the prompt plus `max_tokens` is left
   out (the prompt counted with its tokenizer, else estimated; a backend's own
   context_length_exceeded still falls back). None fits: 400 context_length_exceeded.
2. **Availability**: an open circuit breaker leaves a backend out (all open: 503 with
   Retry-After); one at its concurrency cap too (all full: 429); one failing its health check goes last.
3. **Strategy** orders the rest: `weighted` (random, by weight), `least-busy` (fewest in flight),
   `latency` (lowest smoothed time to first byte; untried first), `cost` (cheapest for this
   request's prompt and max_tokens, weight breaking ties).
4. **Classifier**: with one, the backends of the predicted label's class come first.
"""

from __future__ import annotations

import math
import random
from typing import Any

from londinium.gateway.backends import Backend
from londinium.gateway.breaker import OPEN
from londinium.gateway.settings import RouteSection
from londinium.serve.errors import APIError


def prompt_text(body: dict[str, Any], endpoint: str) -> str:
    """The text of a request that counts against context: the prompt(s), or every message's text."""
    if endpoint == "chat":
        parts = []
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(parts)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


def max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Router:
    def __init__(self, route: RouteSection, backends: dict[str, Backend], rng: random.Random, classifier: Any = None):
        self.route, self.rng, self.classifier = route, rng, classifier
        self.group = [backends[name] for name in route.backends]

    def decide(self, body: dict[str, Any], endpoint: str) -> tuple[list[Backend], str]:
        text = prompt_text(body, endpoint)
        wanted = max_tokens(body)
        notes: list[str] = []
        fits = []
        for b in self.group:
            need = b.count(text) + max(1, wanted)
            if b.context is not None and need > b.context:
                notes.append(f"{b.name} left out: ~{need} tokens > its context {b.context}")
            else:
                fits.append(b)
        if not fits:
            biggest = max(b.context or 0 for b in self.group)
            raise APIError(400, f"This model's maximum context length is {biggest} tokens; the request needs more "
                                f"({'; '.join(notes)})", param="messages" if endpoint == "chat" else "prompt",
                           code="context_length_exceeded")
        ready = [b for b in fits if b.breaker.allows() and not b.full]
        for b in fits:
            if b not in ready:
                notes.append(f"{b.name} left out: {'breaker ' + b.breaker.state if not b.breaker.allows() else 'at its concurrency cap'}")
        if not ready:
            if all(b.breaker.state == OPEN for b in fits):
                wait = min(b.breaker.cooldown_s - (b.breaker.clock() - (b.breaker.opened_at or 0)) for b in fits)
                raise APIError(503, f"every backend of {self.route.alias!r} is failing (circuit breakers open: "
                                    f"{', '.join(b.name for b in fits)}); retry later", code="backends_unavailable",
                               headers={"Retry-After": str(max(1, math.ceil(wait)))})
            raise APIError(429, f"every backend of {self.route.alias!r} is busy; retry in a moment",
                           code="rate_limit_exceeded", headers={"Retry-After": "1"})
        order = self._order(ready, text, wanted)
        reason = self.route.strategy
        if self.classifier is not None:
            label, p = self.classifier.predict(text)
            preferred = self.route.classes.get(label, [])
            order = [b for b in order if b.name in preferred] + [b for b in order if b.name not in preferred]
            reason += f"; classifier: {label} (p={p:.2f})"
        order = [b for b in order if b.healthy] + [b for b in order if not b.healthy]
        notes += [f"{b.name} last: failing its health check" for b in order if not b.healthy]
        return order, "; ".join([reason, *notes])

    def _order(self, ready: list[Backend], text: str, wanted: int) -> list[Backend]:
        strategy = self.route.strategy
        if strategy == "least-busy":
            return sorted(ready, key=lambda b: b.in_flight / (b.cfg.max_concurrency or 1))
        if strategy == "latency":
            return sorted(ready, key=lambda b: -1.0 if b.ttfb_s is None else b.ttfb_s)
        if strategy == "cost":
            return sorted(ready, key=lambda b: (b.cost(b.count(text), max(1, wanted)), -b.cfg.weight))
        # weighted: draw without replacement, each pick with probability proportional to weight
        left, order = list(ready), []
        while left:
            pick = self.rng.choices(left, weights=[b.cfg.weight for b in left])[0]
            order.append(pick)
            left.remove(pick)
        return order
