"""Speculative decoding: a small draft model proposes tokens, the target model checks them in one pass.

Leviathan et al. (2023) and Chen et al. (2023). Each round the draft proposes `k` tokens one at a
time (its distributions q_1 .. q_k); the target runs once over the last accepted token and the k
proposals (its distributions p_1 .. p_{k+1}). Proposal i is accepted with probability
min(1, p_i(x) / q_i(x)); at the first rejection a token is drawn from max(0, p_i - q_i),
renormalised, and the round ends; if all k are accepted a (k+1)-th token is drawn from p_{k+1}.
Every token so emitted is distributed exactly as the target's own sample would be (the papers'
theorem; `tests/unit/test_speculative.py` checks it by counting on a small vocabulary). At
temperature 0 a proposal is accepted when it is the target's argmax and a rejection emits that
argmax, so the output is the target's greedy output, token for token.

Both models keep a `KVCache` of every token but the last emitted one; a rejection rolls a cache
back by setting its length (the keys past it are overwritten later). The draft, which never saw
the last proposal when all k are accepted, catches up at the start of the next round.

It is one sequence at a time, with temperature only (no top-k/p, penalties or stop strings): the
engine's batched scheduler is a separate path. Whether it is faster depends on the cost of a draft
step against a target step and on how often they agree; `benchmarks/speculative.py` measures both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from londinium.errors import ConfigError


@dataclass
class SpeculativeOutput:
    token_ids: list[int]
    drafted: int  # proposals the draft made
    accepted: int  # of them, accepted by the target
    target_passes: int  # forward passes of the target after the prompt

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.float() / temperature, dim=-1)


def verify(p: torch.Tensor, q: torch.Tensor, proposals: list[int], generator: torch.Generator | None = None) -> list[int]:
    """The tokens a round emits: `proposals` (k of them) drawn from the draft's laws `q` `[k, V]`,
    checked against the target's laws `p` `[k + 1, V]` (row i given the proposals before i).
    Proposal i is kept with probability min(1, p_i(x) / q_i(x)); the first one rejected is replaced
    by a draw from max(0, p_i - q_i), renormalised, and the round ends; if all are kept, one more
    token is drawn from p_k. Each emitted token is distributed as p given the ones before it."""
    emitted = []
    for i, x in enumerate(proposals):
        if float(torch.rand((), generator=generator)) >= min(1.0, float(p[i, x] / q[i, x])):
            residual = (p[i] - q[i]).clamp_(min=0)
            # p's mass all under q's (p == q up to rounding): the residual is empty and p is the law.
            law = residual / residual.sum() if residual.sum() > 0 else p[i]
            return [*emitted, int(torch.multinomial(law, 1, generator=generator))]
        emitted.append(x)
    return [*emitted, int(torch.multinomial(p[len(proposals)], 1, generator=generator))]


def verify_greedy(logits: torch.Tensor, proposals: list[int]) -> list[int]:
    """`verify` at temperature 0: proposals are kept while they are the target's argmax; the first
    that is not is replaced by it (or, all kept, the argmax after the last is added)."""
    best = logits.argmax(dim=-1).tolist()
    for i, x in enumerate(proposals):
        if best[i] != x:
            return [*proposals[:i], best[i]]
    return [*proposals, best[len(proposals)]]


class SpeculativeDecoder:
    """`target` (a GPT) decoded with proposals from `draft` (a GPT over the same tokenizer), `k` a round."""

    def __init__(self, target: torch.nn.Module, draft: torch.nn.Module, k: int = 4):
        t, d = target.config, draft.config
        if t.vocab_size != d.vocab_size:
            raise ConfigError(f"the draft model's vocabulary ({d.vocab_size:,}) is not the target's ({t.vocab_size:,}): "
                              "a draft must be trained with the same tokenizer")
        if k < 1:
            raise ConfigError(f"speculative decoding needs k >= 1 proposals a round, not {k}")
        self.target, self.draft, self.k = target.eval(), draft.eval(), k
        self.context = min(t.context, d.context)

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], max_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> SpeculativeOutput:
        """Up to `max_tokens` new tokens after `prompt_ids` (no stop: the caller cuts at EOS)."""
        if not prompt_ids:
            raise ConfigError("speculative decoding needs a prompt of at least one token")
        if len(prompt_ids) + max_tokens > self.context:
            raise ConfigError(f"prompt ({len(prompt_ids)} tokens) + max_tokens {max_tokens} exceed the context "
                              f"{self.context} of the target or draft model")
        greedy = temperature <= 0
        tokens = list(prompt_ids)
        end = len(tokens) + max_tokens
        # One cache each (the draft may be the target itself: a test of the accept path).
        tcache, dcache = (m.new_kv_cache(1, end + self.k + 1) for m in (self.target, self.draft))
        if len(tokens) > 1:
            self.target(torch.tensor([tokens[:-1]]), kv_cache=tcache, logits_to_keep=1)
            self.draft(torch.tensor([tokens[:-1]]), kv_cache=dcache, logits_to_keep=1)
        out = SpeculativeOutput([], 0, 0, 0)

        while len(tokens) < end:
            k = min(self.k, end - len(tokens))
            # The draft catches up (1 or 2 tokens: it may not have seen the last proposal) and proposes k.
            feed = tokens[dcache.length:]
            proposals, q = [], []
            for _ in range(k):
                logits = self.draft(torch.tensor([feed]), kv_cache=dcache, logits_to_keep=1)[0][0, -1]
                if greedy:
                    x = int(logits.argmax())
                else:
                    q.append(_probs(logits, temperature))
                    x = int(torch.multinomial(q[-1], 1, generator=generator))
                proposals.append(x)
                feed = [x]
            # The target scores the last token and every proposal in one pass.
            logits = self.target(torch.tensor([[tokens[-1], *proposals]]), kv_cache=tcache, logits_to_keep=k + 1)[0][0]
            out.target_passes += 1
            out.drafted += k
            if greedy:
                emitted = verify_greedy(logits, proposals)
            else:
                emitted = verify(_probs(logits, temperature), torch.stack(q), proposals, generator)
            out.accepted += len(emitted) - 1
            emitted = emitted[:end - len(tokens)]
            tokens += emitted
            out.token_ids += emitted
            # Every token but the last emitted one is in the caches; what follows it is rolled back.
            tcache.length = min(tcache.length, len(tokens) - 1)
            dcache.length = min(dcache.length, len(tokens) - 1)
        return out
