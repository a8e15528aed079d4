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

p and q are the laws the engine samples from: the logits after the request's temperature, top-k,
top-p and min-p (the same warpers on both models). Processors that depend on the tokens before
(repetition, frequency and presence penalties, no-repeat n-grams), logit biases and grammars are
not speculated: such a sequence decodes one token a step as without a draft (`speculable`).

Both models keep a cache of every token but the last emitted one; a rejection rolls a cache back
by setting its length (the keys past it are overwritten later). The draft, which never saw the
last proposal when all k are accepted, catches up at the start of the next round.

`Speculator` is what the engine runs when one sequence is running (`Engine(draft=...)`,
`generate.draft_run`); `SpeculativeDecoder` is the same round on its own, for one prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from londinium.errors import ConfigError
from londinium.infer.fused import fused_step
from londinium.infer.sampling import SamplingParams, build_pipeline
from londinium.model.cache import KVCache


def speculable(p: SamplingParams) -> bool:
    """Whether a draft may propose this sequence's tokens: sampling warpers only (see the module docstring)."""
    return (p.repetition_penalty == 1.0 and not p.frequency_penalty and not p.presence_penalty
            and not p.no_repeat_ngram_size and not p.logit_bias and p.constraint is None)


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


@dataclass
class Round:
    """What one round emitted, and the target's raw logits `[len(emitted), V]` at each emitted token
    (for log-probabilities: those of the model's own distribution, as the engine reports them)."""

    emitted: list[int]
    logits: torch.Tensor


class Speculator:
    """A draft model proposing `k` tokens a round for one sequence at a time (the one it follows:
    its cache is kept between rounds, and rebuilt when another sequence comes)."""

    def __init__(self, draft: torch.nn.Module, target_config: Any, k: int = 2):
        t, d = target_config, draft.config
        if t.vocab_size != d.vocab_size:
            raise ConfigError(f"the draft model's vocabulary ({d.vocab_size:,}) is not the target's ({t.vocab_size:,}): "
                              "a draft must be trained with the same tokenizer")
        if k < 1:
            raise ConfigError(f"speculative decoding needs k >= 1 proposals a round (generate.draft_tokens), not {k}")
        self.draft, self.k = draft.eval(), k
        self.cache: KVCache = draft.new_kv_cache(1)
        # A draft step is one token at batch 1, the case `infer/fused.py` writes out (1.7-2x cheaper
        # than a pass through the modules on the tiny preset); None for layouts it does not cover.
        self.fused = fused_step(self.draft) if type(self.cache) is KVCache else None
        self.following: object = None
        self._target: Any = None  # the target model whose fused step `_target_step` is (see _fused_target)
        self._target_step: Any = None
        self.rounds = self.drafted = self.accepted = 0

    def _fused_target(self, target: torch.nn.Module) -> Any:
        """The target's fused step (`infer/fused.py`) for its check of k + 1 tokens, made once per
        target; None where its layout is not covered or it is training."""
        if self._target is not target:
            self._target, self._target_step = target, fused_step(target)
        return None if target.training else self._target_step

    def follow(self, key: object) -> None:
        """From now on the rounds continue sequence `key` (a new one: the draft starts from its prompt)."""
        if key is not self.following:
            self.following, self.cache.length = key, 0

    def room(self, tokens: int) -> int:
        """Proposals the draft can make after `tokens` tokens within its context."""
        return self.draft.config.context - tokens

    @torch.inference_mode()
    def round(self, target: torch.nn.Module, tcache: KVCache, tokens: list[int], params: SamplingParams,
              generator: torch.Generator | None, k: int) -> Round:
        """One round after `tokens` (every token of the sequence; the target's cache `tcache` holds
        all but the last, as does the draft's or a prefix of them): k proposals, one target pass.
        The draft's cache is rolled back to the tokens kept; the target's is the caller's to roll
        back (to len(tokens) - 1 + len(emitted): the last emitted token is not in it)."""
        greedy = params.greedy
        V, device = self.draft.config.vocab_size, tcache.k[0].device
        # The warpers hold a parameter per row: one row for a draft step, k + 1 for the target's pass.
        warp_one, warp = (None, None) if greedy else (build_pipeline([params], [[]], V, device),
                                                      build_pipeline([params] * (k + 1), [[]] * (k + 1), V, device))
        dcache = self.cache
        feed = tokens[dcache.length:]  # catch up: the prompt the first time, then 1 or 2 tokens
        proposals, q = [], []
        for _ in range(k):
            if len(feed) == 1 and self.fused is not None:
                logits = self.fused.draft_step(torch.tensor(feed, device=device), dcache).float()
            else:  # the prompt, or two tokens to catch up
                logits = self.draft(torch.tensor([feed], device=device), kv_cache=dcache, logits_to_keep=1)[0][0, -1:].float()
            if greedy:
                x = int(logits.argmax())
            else:
                q.append(torch.softmax(warp_one(logits), dim=-1)[0])
                x = int(torch.multinomial(q[-1], 1, generator=generator))
            proposals.append(x)
            feed = [x]
        check = [tokens[-1], *proposals]
        fused = self._fused_target(target) if type(tcache) is KVCache else None
        if fused is not None:
            logits = fused.check(torch.tensor(check, device=device), tcache).float()
        else:
            logits = target(torch.tensor([check], device=device), kv_cache=tcache, logits_to_keep=k + 1)[0][0].float()
        if greedy:
            emitted = verify_greedy(logits, proposals)
        else:
            emitted = verify(torch.softmax(warp(logits), dim=-1), torch.stack(q), proposals, generator)
        self.rounds, self.drafted, self.accepted = self.rounds + 1, self.drafted + k, self.accepted + len(emitted) - 1
        dcache.length = min(dcache.length, len(tokens) + len(emitted) - 1)
        return Round(emitted, logits[:len(emitted)])


@dataclass
class SpeculativeOutput:
    token_ids: list[int]
    drafted: int  # proposals the draft made
    accepted: int  # of them, accepted by the target
    target_passes: int  # forward passes of the target after the prompt

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class SpeculativeDecoder:
    """`target` (a GPT) decoded with proposals from `draft` (a GPT over the same tokenizer), `k` a
    round, for one prompt at a time (the engine runs the same rounds: `Engine(draft=...)`)."""

    def __init__(self, target: torch.nn.Module, draft: torch.nn.Module, k: int = 4):
        self.target, self.speculator = target.eval(), Speculator(draft, target.config, k)
        self.context = min(target.config.context, draft.config.context)

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], max_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None, top_k: int = 0) -> SpeculativeOutput:
        """Up to `max_tokens` new tokens after `prompt_ids` (no stop: the caller cuts at EOS), sampled
        at `temperature` among the `top_k` most likely tokens (0: all)."""
        if not prompt_ids:
            raise ConfigError("speculative decoding needs a prompt of at least one token")
        if len(prompt_ids) + max_tokens > self.context:
            raise ConfigError(f"prompt ({len(prompt_ids)} tokens) + max_tokens {max_tokens} exceed the context "
                              f"{self.context} of the target or draft model")
        spec = self.speculator
        spec.follow(object())
        params = SamplingParams(temperature=temperature, top_p=1.0, top_k=top_k)
        tokens = list(prompt_ids)
        end = len(tokens) + max_tokens
        tcache = self.target.new_kv_cache(1, end + spec.k + 1)
        if len(tokens) > 1:
            self.target(torch.tensor([tokens[:-1]]), kv_cache=tcache, logits_to_keep=1)
        out = SpeculativeOutput([], 0, 0, 0)
        while len(tokens) < end:
            before = spec.drafted, spec.accepted
            emitted = spec.round(self.target, tcache, tokens, params, generator, min(spec.k, end - len(tokens))).emitted
            out.target_passes += 1
            out.drafted += spec.drafted - before[0]
            out.accepted += spec.accepted - before[1]
            emitted = emitted[:end - len(tokens)]
            tokens += emitted
            out.token_ids += emitted
            tcache.length = len(tokens) - 1  # every token but the last emitted one is in the cache
        return out


def load_draft(ws: Any, gen: Any, tokenizer: Any, device: str | torch.device = "cpu") -> torch.nn.Module | None:
    """The draft model `gen.draft_run` names in workspace `ws` (None when it is empty), checked to
    share `tokenizer`, the served model's."""
    if not gen.draft_run:
        return None
    from londinium.model.load import load_run

    trained = load_run(ws, run=gen.draft_run, checkpoint=gen.draft_checkpoint, device=device, device_setting="generate.device")
    if trained.tokenizer.to_str() != tokenizer.to_str():
        raise ConfigError(f"generate.draft_run = {gen.draft_run!r} was trained with another tokenizer than the model it would "
                          "draft for: a draft must share the target's tokenizer (train it in the same workspace)")
    return trained.model
