"""The running batch: the sequences being decoded, one per row of the slot cache, and what their
next step needs (each row's input token, the rows' logits processors, the token chooser).

Rows in use are always 0 .. B-1: a prefilled request's samples are appended (`join`), and finished
sequences leave by moving the last rows into the holes (`evict`), so a step reads views of the cache,
never a gather. `choose` turns a step's logits into each row's token: the grammar's mask, the
processors the rows ask for, one sampling op, and one transfer of B token ids to Python.
"""

from __future__ import annotations

from typing import Any

import torch

from londinium.infer.requests import Request, RunningSequence
from londinium.infer.sampling import LogitsPipeline, TokenChooser
from londinium.model.cache import SlotCache, compaction


class RunningBatch:
    """The running sequences of an engine over `model`, at most `max_running` of them."""

    def __init__(self, model: Any, max_running: int, kv_dtype: str, vocab_size: int, device: torch.device):
        self.model, self.max_running, self.kv_dtype = model, max_running, kv_dtype
        self.vocab_size, self.device = vocab_size, device
        self.clear()

    def clear(self) -> None:
        """No rows; the cache is allocated again when the next step needs it."""
        self.rows: list[RunningSequence] = []  # in slot order
        self.tokens = torch.zeros(0, dtype=torch.long, device=self.device)  # each row's next input token
        self.slots: SlotCache | None = None
        self.pipeline = LogitsPipeline([], [], self.vocab_size, self.device)
        self._chooser: TokenChooser | None = None
        self._fast = False

    def __len__(self) -> int:
        return len(self.rows)

    def resize(self, max_running: int) -> None:
        """A new limit (only while no row runs: the cache is sized by it)."""
        if self.slots is not None and self.slots.slots > max_running:
            self.slots = None
        self.max_running = max_running

    def cache(self) -> SlotCache:
        """The slot cache, allocated small and grown as sequences join (see `join`)."""
        if self.slots is None:
            self.slots = self.model.new_slot_cache(min(self.max_running, 4), kv_dtype=self.kv_dtype)
        return self.slots

    def greedy_only(self) -> bool:
        """Whether the rows can take the fast path: all greedy, no processor, no alternatives."""
        if self._chooser is None:
            self._chooser = TokenChooser([s.params.greedy for s in self.rows], [s.generator for s in self.rows], self.device)
            self._fast = (self._chooser.all_greedy and not len(self.pipeline)
                          and not any(s.params.logprobs or s.matcher for s in self.rows))
        return self._fast

    def join(self, joining: list[tuple[Request, torch.Tensor]], logits: torch.Tensor | None) -> torch.Tensor:
        """Prefilled requests join the rows: each sample gets a slot with a copy of the prompt's
        cache. The logits of every row, the running ones' (`logits`) then the joining ones'."""
        slots = self.cache()
        needed = len(self.rows) + sum(len(r.seqs) for r, _ in joining)
        if needed > slots.slots:
            # Slots are allocated as sequences need them (a slot holds a full context of keys and
            # values: ~75 MB for the slm preset), doubling up to max_running.
            slots = self.slots = slots.grown(min(self.max_running, max(needed, 2 * slots.slots)))
        parts = [] if logits is None else [logits]
        for r, last in joining:
            for s in r.seqs:
                slots.append(r.prefill)
                self.rows.append(s)
            r.prefill = None
            self.pipeline.add_rows([s.params for s in r.seqs], [r.prompt_ids] * len(r.seqs))
            parts.append(last.expand(len(r.seqs), -1))
        self._chooser = None
        return torch.cat(parts)

    def choose(self, logits: torch.Tensor, grammars: Any) -> tuple[torch.Tensor, list[float], tuple[list, list] | None]:
        """Each row's token from `[B, V]` logits, its log-probability, and the top alternatives when
        a row asks for them (`grammars`: a callable giving `constrain.Grammars`, asked only when a
        row is constrained)."""
        rows = self.rows
        self.greedy_only()  # builds the chooser for these rows
        pipeline = self.pipeline
        constrained = [b for b, s in enumerate(rows) if s.matcher is not None]
        # The grammar's mask comes first, so top-k, top-p and min-p choose among allowed tokens only.
        allowed = grammars().mask(logits, constrained, [rows[b].matcher for b in constrained]) if constrained else logits
        processed = pipeline(allowed.clone() if allowed is logits else allowed) if len(pipeline) else allowed
        assert self._chooser is not None
        tokens = self._chooser(processed)
        pipeline.observe(tokens)
        # Log-probabilities of the model's own distribution, before any mask (as vLLM reports them;
        # log_softmax is vectorised on CPU: ~2x faster than logsumexp there), then gathers.
        logp = logits.log_softmax(dim=-1)
        chosen_lp = logp.gather(1, tokens[:, None])[:, 0].tolist()
        top_k = max((s.params.logprobs for s in rows if s.params.logprobs), default=0)
        top = None
        if top_k:
            values, indices = logp.topk(top_k, dim=-1)
            top = (values.tolist(), indices.tolist())
        return tokens, chosen_lp, top

    def evict(self, leaving: set[int]) -> None:
        """Finished, failed or cancelled rows leave; the survivors stay at rows 0 .. B-1."""
        assert self.slots is not None
        order = compaction(len(self.rows), leaving)
        self.slots.keep(order)
        self.pipeline.keep_rows(order)
        self.rows = [self.rows[i] for i in order]
        self.tokens = self.tokens[torch.tensor(order, dtype=torch.long, device=self.device)] if order else self.tokens[:0]
        self._chooser = None
