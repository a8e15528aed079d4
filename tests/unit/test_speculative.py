"""Speculative decoding (infer/speculative.py): greedy output is the target's own, token for token;
sampled output is distributed as the target's, counted on a small vocabulary."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_fixtures import make_model, make_tokenizer
from scipy.stats import chisquare

from londinium.config import ModelConfig
from londinium.errors import ConfigError
from londinium.infer import Engine, SamplingParams
from londinium.infer.fused import fused_step
from londinium.infer.speculative import SpeculativeDecoder, verify
from londinium.model.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def varied_model(tok, seed: int = 0, n_kv_head: int = 2) -> GPT:
    """A random GPT whose greedy output varies (the fixtures' models, weights tied, repeat one token)."""
    model = make_model(tok, "rope", n_kv_head=n_kv_head, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "wte" not in name:
                p.normal_(0, 2 / p.shape[1] ** 0.5, generator=g)
    return model


def perturbed(model: GPT, noise: float) -> GPT:
    """A copy of `model` with every weight moved by `noise` of its spread: a draft that sometimes agrees."""
    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(noise * p.std() * torch.randn(p.shape, generator=g))
    return draft


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("draft", ["the target", "close", "unrelated"])
def test_greedy_output_is_the_targets_own(tok, k: int, draft: str) -> None:
    target = varied_model(tok)
    drafts = {"the target": target, "close": perturbed(target, 0.05), "unrelated": varied_model(tok, seed=1)}
    prompt = tok.encode("Shall I compare thee").ids
    [alone] = Engine(target, tok).generate([prompt], SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    assert len(set(alone.token_ids)) > 10
    out = SpeculativeDecoder(target, drafts[draft], k=k).generate(alone.prompt_token_ids, 40)
    assert out.token_ids == alone.token_ids
    if draft == "the target":
        assert out.accepted == out.drafted and out.target_passes == -(-40 // (k + 1))
    elif draft == "close":
        assert 0 < out.accepted < out.drafted  # both the accept and the reject path ran
    else:
        assert out.accepted < out.drafted / 4


def test_the_engine_drafts_for_a_sequence_left_alone_and_gives_its_greedy_tokens_and_logprobs(tok) -> None:
    """Two prompts in one engine: together they decode a token a step; once the shorter ends, the
    draft catches up on the other's tokens and proposes. Tokens equal the engine's without a draft,
    log-probabilities too (to float rounding: a pass of k + 1 tokens against k + 1 one-token steps)."""
    target = varied_model(tok)
    prompts = [tok.encode("Shall I compare thee").ids, tok.encode("To be").ids]
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, logprobs=2) for n in (6, 40)]
    want = Engine(target, tok).generate(prompts, params)
    engine = Engine(target, tok, draft=perturbed(target, 0.05), draft_tokens=3)
    got = engine.generate(prompts, params)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    for g, w in zip(got, want):
        for a, b in zip(g.choices[0].logprobs, w.choices[0].logprobs):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert [t.token_id for t in a.top] == [t.token_id for t in b.top]
    assert 0 < engine.counters["accepted"] < engine.counters["drafted"]
    # Decoded alone, the long one takes fewer steps than tokens: the proposals were taken several a step.
    assert engine.counters["steps"] < 6 + 40


@pytest.mark.parametrize("weight_dtype", ["float16", "int8"])
def test_a_packed_target_with_a_draft_gives_its_own_greedy_tokens(tok, weight_dtype: str) -> None:
    """Packed weights (model/quantize.py) scale each row on its own, so the target's pass over k + 1
    tokens gives each the logits its one-token step gives: greedy output is the packed model's own."""
    from londinium.model.quantize import quantize_weights

    target = quantize_weights(varied_model(tok), weight_dtype)
    prompt, params = tok.encode("Shall I compare thee").ids, SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    [want] = Engine(target, tok).generate([prompt], params)
    engine = Engine(target, tok, draft=perturbed(varied_model(tok), 0.05))
    [got] = engine.generate([prompt], params)
    assert got.token_ids == want.token_ids and 0 < engine.counters["accepted"] < engine.counters["drafted"]


def test_a_penalty_decodes_without_the_draft(tok) -> None:
    target = varied_model(tok)
    engine = Engine(target, tok, draft=target)
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, repetition_penalty=1.3)
    [c] = engine.generate([tok.encode("To be").ids], params)
    [want] = Engine(target, tok).generate([tok.encode("To be").ids], params)
    assert c.token_ids == want.token_ids and engine.counters["drafted"] == 0


def small_gpt(seed: int, sharpness: float) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, context=16, vocab_size=5, positions="rope", norm="rmsnorm", mlp="swiglu")
    model = GPT(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)  # peaked distributions, so target and draft really differ
    return model


def two_token_law(model: GPT, prompt: list[int], temperature: float, top_k: int = 0) -> torch.Tensor:
    """The exact probability of each pair of next tokens, `[V * V]`, from full forward passes
    (sampled at `temperature` among the `top_k` most likely, 0: all)."""
    V = model.config.vocab_size

    def law(ids: list[int]) -> torch.Tensor:
        logits = model(torch.tensor([ids]))[0][0, -1] / temperature
        if top_k:
            logits = logits.masked_fill(logits < logits.topk(top_k).values[-1], float("-inf"))
        return torch.softmax(logits, -1)

    with torch.no_grad():
        first = law(prompt)
        second = torch.stack([law([*prompt, a]) for a in range(V)])
    return (first[:, None] * second).reshape(-1)


def test_the_rule_emits_each_token_as_the_target_would() -> None:
    """verify() alone, with laws that depend on the tokens before (as the target's pass gives them):
    the first two emitted tokens of 5,000 rounds (k=2) against the target's exact two-token law."""
    V, n = 4, 5_000
    g = torch.Generator().manual_seed(0)
    law = lambda *shape: torch.softmax(3 * torch.randn(*shape, V, generator=g), -1)  # noqa: E731
    p1, p2, p3 = law(), law(V), law(V, V)  # target: first token; second given the first; third given both
    q1, q2 = law(), law(V)  # draft
    exact = (p1[:, None] * p2).reshape(-1)
    counts = torch.zeros(V * V)
    for _ in range(n):
        x1 = int(torch.multinomial(q1, 1, generator=g))
        x2 = int(torch.multinomial(q2[x1], 1, generator=g))
        out = verify(torch.stack([p1, p2[x1], p3[x1, x2]]), torch.stack([q1, q2[x1]]), [x1, x2], g)
        if len(out) == 1:  # the first proposal was rejected: the second token comes from the target given it
            out.append(int(torch.multinomial(p2[out[0]], 1, generator=g)))
        counts[out[0] * V + out[1]] += 1
    assert chisquare(counts.numpy(), (exact * n).numpy()).pvalue > 1e-3
    draft_law = (q1[:, None] * q2).reshape(-1)
    assert float(((draft_law - exact) ** 2 / exact).sum()) * n > 500  # always accepting would be seen


@pytest.mark.slow  # 3,000 decodes with real models: ~10 s on a quiet machine
@pytest.mark.parametrize("top_k", [0, 3])
def test_sampled_output_is_distributed_as_the_targets(tok, top_k: int) -> None:
    """The rounds the engine runs (`Speculator.round`), with the request's warpers on both laws."""
    target, draft = small_gpt(0, 30.0), small_gpt(1, 30.0)
    prompt, temperature, n = [1, 3], 0.9, 3000
    p, q = two_token_law(target, prompt, temperature, top_k), two_token_law(draft, prompt, temperature, top_k)
    assert 0.5 * float((p - q).abs().sum()) > 0.3  # the draft alone would be far off: the rule must correct it
    spec = SpeculativeDecoder(target, draft, k=2)
    gen = torch.Generator().manual_seed(0)
    V = target.config.vocab_size
    counts = torch.zeros(V * V)
    drafted = accepted = 0
    for _ in range(n):
        out = spec.generate(prompt, 2, temperature=temperature, generator=gen, top_k=top_k)
        counts[out.token_ids[0] * V + out.token_ids[1]] += 1
        drafted, accepted = drafted + out.drafted, accepted + out.accepted
    assert 0 < accepted < drafted  # both the accept and the reject branch ran
    seen = p > 1e-4  # cells the target gives (almost) nothing are pooled: chi-square needs expected counts
    expected = torch.cat([p[seen], p[~seen].sum()[None]]) * n
    observed = torch.cat([counts[seen], counts[~seen].sum()[None]])
    assert chisquare(observed.numpy(), expected.numpy() * observed.sum().item() / expected.sum().item()).pvalue > 1e-3
    # The test has the power to see a wrong rule: the draft's own law gives a chi-square far past any threshold.
    wrong = torch.cat([q[seen], q[~seen].sum()[None]]) * n
    assert float(((wrong - expected) ** 2 / expected).sum()) > 200


def test_a_draft_with_another_vocabulary_or_a_long_request_is_refused(tok) -> None:
    target = make_model(tok, "rope")
    with pytest.raises(ConfigError, match="same tokenizer"):
        SpeculativeDecoder(target, small_gpt(0, 1.0))
    with pytest.raises(ConfigError, match="exceed the context"):
        SpeculativeDecoder(target, make_model(tok, "rope", seed=1)).generate([1, 2, 3], 64)


def test_models_the_fused_step_covers_draft_and_check_through_it_and_the_output_is_still_the_targets(tok) -> None:
    target = varied_model(tok, n_kv_head=0)  # as many key/value heads as query heads: infer/fused.py's layout
    draft = make_model(tok, "rope", seed=3)
    spec = SpeculativeDecoder(target, draft, k=3)
    assert spec.speculator.fused is not None and spec.speculator._fused_target(target) is not None
    with torch.inference_mode():  # its step over a KVCache: GPT.forward's logits and keys, to rounding
        ids = tok.encode("Shall I compare thee").ids
        a, b = draft.new_kv_cache(1), draft.new_kv_cache(1)
        draft(torch.tensor([ids]), kv_cache=a)
        draft(torch.tensor([ids]), kv_cache=b)
        want = draft(torch.tensor([[7]]), kv_cache=a, logits_to_keep=1)[0][0, -1:]
        got = spec.speculator.fused.draft_step(torch.tensor([7]), b)
        assert b.length == a.length and torch.allclose(got, want, atol=1e-5)
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.k + a.v, b.k + b.v))
        # The target's check of k + 1 tokens: GPT.forward's logits of every position and its keys.
        want = draft(torch.tensor([[7, 9, 2]]), kv_cache=a, logits_to_keep=3)[0][0]
        got = fused_step(draft).check(torch.tensor([7, 9, 2]), b)
        assert b.length == a.length and torch.allclose(got, want, atol=1e-5)
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.k + a.v, b.k + b.v))
    prompt = tok.encode("Shall I compare thee").ids
    [alone] = Engine(target, tok).generate([prompt], SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    assert len(set(alone.token_ids)) > 10
    out = spec.generate(alone.prompt_token_ids, 40)
    assert out.token_ids == alone.token_ids and out.drafted > 0
