"""The policy loss's forward pass with each group's prompt run once (`rl/shared_prompt.py`) gives the
whole-row pass's log-probabilities, entropies and gradients: prompts of different lengths, answers
of different lengths (one-token answers included), RoPE and learned positions, grouped-query heads."""

from __future__ import annotations

import random

import pytest
import torch

from londinium.config import ModelConfig
from londinium.model.gpt import GPT
from londinium.rl.loss import token_logprobs
from londinium.rl.shared_prompt import answer_form, answer_logprobs

PAD, G, TEMPERATURE = 0, 3, 0.7


def rollout_rows(prompts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows as `Rollouts._tensors` builds them: G samples of each prompt, consecutive."""
    rng = random.Random(seed)
    seqs = []
    for _ in range(prompts):
        prompt = [rng.randrange(1, 50) for _ in range(rng.randint(3, 9))]
        seqs += [(prompt, [rng.randrange(1, 50) for _ in range(rng.choice([1, 2, 5]))]) for _ in range(G)]
    width = max(len(p) + len(a) for p, a in seqs) - 1
    x, y = torch.full((len(seqs), width), PAD), torch.full((len(seqs), width), -1)
    for i, (p, a) in enumerate(seqs):
        full = torch.tensor(p + a)
        x[i, :len(full) - 1], y[i, len(p) - 1:len(full) - 1] = full[:-1], full[len(p):]
    return x, y


@pytest.mark.parametrize("positions, kv_heads", [("rope", 0), ("rope", 2), ("learned", 0)])
def test_shared_prompts_give_the_whole_rows_logprobs_and_gradients(positions: str, kv_heads: int) -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=4, n_kv_head=kv_heads, n_embd=32, context=32, vocab_size=50,
                            positions=positions)).eval()
    x, y = rollout_rows(4, seed=1)
    weights = torch.randn(x.size(0), 1)  # a loss that weighs every answer token differently

    logits, _ = model(x)
    whole, whole_entropy = token_logprobs(logits, y, TEMPERATURE)
    (whole * (y != -1) * weights).sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    logp, entropy, mask = answer_logprobs(model, model, x, y, G, TEMPERATURE, PAD)
    assert mask.sum() == (y != -1).sum() and mask[:, 0].all()
    torch.testing.assert_close(logp[mask], whole[y != -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[mask], whole_entropy[y != -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(logp, answer_form(whole, y))  # the same layout as old/ref log-probs
    (logp * mask * weights).sum().backward()
    for got, ref in zip((p.grad for p in model.parameters()), want):
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_rows_that_do_not_share_their_groups_prompt_are_refused() -> None:
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, context=32, vocab_size=50))
    x, y = rollout_rows(2, seed=2)
    with pytest.raises(ValueError, match="share their prompt"):
        answer_logprobs(model, model, x, y, 2, TEMPERATURE, PAD)  # 3 groups of 2: the middle one mixes prompts
