"""Admission and prefill: requests wait in a queue, are admitted while slots are free, and have
their prompts prefilled within a step's token budget.

A long prompt is prefilled in chunks over several steps, so it never stalls the running sequences'
next token for long. Each prompt is prefilled once into a cache of its own (`KVCache`), starting
from the longest prefix the `PrefixCache` holds; the engine then copies it into a slot of the running
cache for every sample (`RunningBatch.join`).
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

import torch

from londinium.infer.requests import Request
from londinium.model.cache import PrefixCache


class Prefill:
    """The requests of an engine over `model` not yet running: `waiting` (queued) and `prefilling`
    (admitted, their prompts being cached). `counters` is the engine's."""

    def __init__(self, model: Any, prefixes: PrefixCache, counters: collections.Counter, device: torch.device):
        self.model, self.prefixes, self.counters, self.device = model, prefixes, counters, device
        self.waiting: collections.deque[Request] = collections.deque()
        self.prefilling: list[Request] = []

    def __bool__(self) -> bool:
        return bool(self.waiting or self.prefilling)

    def clear(self) -> None:
        self.waiting.clear()
        self.prefilling.clear()

    def admitted_samples(self) -> int:
        """Sequences admitted but not yet running (they hold slots already)."""
        return sum(r.params.samples for r in self.prefilling)

    def step(self, budget: int, free: int, fail: Callable[[Request, BaseException], None]) -> list[tuple[Request, torch.Tensor]]:
        """Admit waiting requests while `free` slots last, and prefill up to `budget` prompt tokens;
        the requests whose prompt is now fully cached, with the logits of its last token. A request
        whose prefill raises is handed to `fail` and the others go on."""
        while self.waiting and self.waiting[0].params.samples <= free:
            r = self.waiting.popleft()
            r.admitted_at = time.perf_counter()
            self.counters["prompt_tokens"] += len(r.prompt_ids)
            free -= r.params.samples
            self.prefilling.append(r)
        joining = []
        for r in list(self.prefilling):
            if budget <= 0:
                break
            try:
                n, logits = self._chunk(r, budget)
            except Exception as e:  # noqa: BLE001 - one request's failure must not stop the others
                self.prefilling.remove(r)
                fail(r, e)
                continue
            budget -= n
            if logits is not None:
                self.prefilling.remove(r)
                joining.append((r, logits))
        return joining

    def _chunk(self, r: Request, budget: int) -> tuple[int, torch.Tensor | None]:
        """Prefill up to `budget` more prompt tokens of `r`; the tokens used, and the last token's
        logits once the whole prompt is cached."""
        if r.prefill is None:
            r.prefill = self.model.new_kv_cache(1, len(r.prompt_ids))
            known, n = self.prefixes.lookup(r.prompt_ids)
            if known is not None:
                for layer in range(len(known.k)):
                    r.prefill.k[layer][:, :, :n] = known.k[layer][:, :, :n]
                    r.prefill.v[layer][:, :, :n] = known.v[layer][:, :, :n]
                r.prefill.length = n
                self.counters["prefix_hit_tokens"] += n
        start = r.prefill.length
        n = min(budget, len(r.prompt_ids) - start)
        chunk = torch.tensor([r.prompt_ids[start:start + n]], dtype=torch.long, device=self.device)
        logits = self.model(chunk, kv_cache=r.prefill, logits_to_keep=1)[0][:, -1].float()
        self.counters["prefill_tokens"] += n  # computed; prompt_tokens - prefill_tokens came from the prefix cache
        if r.prefill.length < len(r.prompt_ids):
            return n, None
        self.prefixes.insert(r.prompt_ids, r.prefill)
        return n, logits
