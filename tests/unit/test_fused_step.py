"""The engine's decode step written out op by op (`infer/fused.py`) gives GPT.decode's logits and
cache writes bit for bit, alone and for rows of different lengths, and is used only where its
layout applies."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import make_model, make_tokenizer

from londinium.config import ModelConfig
from londinium.infer.engine import Engine
from londinium.infer.fused import fused_step
from londinium.infer.sampling import SamplingParams
from londinium.model.gpt import GPT
from londinium.model.quantize import quantize_weights


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def llama(tok, bias: bool, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=32, context=64, vocab_size=tok.get_vocab_size(), positions="rope",
                      norm="rmsnorm", mlp="swiglu", bias=bias)
    return GPT(cfg).eval()


def prefilled(model: GPT, *prompts: list[int]):
    slots = model.new_slot_cache(max(2, len(prompts)))
    for ids in prompts:
        kv = model.new_kv_cache(1, len(ids))
        model(torch.tensor([ids]), kv_cache=kv)
        slots.append(kv)
    return slots


@pytest.mark.parametrize("bias, lengths", [(False, [17]), (True, [17]), (False, [17, 4, 9]), (True, [6, 6])])
@torch.inference_mode()
def test_fused_step_gives_the_logits_and_cache_of_gpt_decode_bit_for_bit(tok, bias, lengths) -> None:
    model = llama(tok, bias)
    step = fused_step(model)
    assert step is not None
    prompts = [list(range(3 + i, 3 + i + n)) for i, n in enumerate(lengths)]
    a, b = prefilled(model, *prompts), prefilled(model, *prompts)
    for token in (5, 9, 2, 11):  # several steps, each after the last one's key and value
        t = torch.tensor([token + i for i in range(len(lengths))])
        masked = min(a.lengths) != max(a.lengths)
        want = model.decode(t, a.positions(), a.view_type(a.buffers(), a.positions(), max(a.lengths) + 1, masked))
        got = step(t, b)
        assert got.shape == (len(lengths), model.config.vocab_size)
        assert torch.equal(got, want)
        a.advance()
        b.advance()
    for layer in range(model.config.n_layer):
        assert torch.equal(a.k[layer], b.k[layer]) and torch.equal(a.v[layer], b.v[layer])


def test_fused_step_is_used_only_where_its_layout_applies(tok) -> None:
    assert fused_step(make_model(tok, positions="learned")) is None  # GPT-2 style
    assert fused_step(make_model(tok, positions="rope", n_kv_head=2)) is None  # grouped-query attention
    torch.manual_seed(0)
    experts = ModelConfig(n_layer=2, n_head=4, n_embd=32, context=64, vocab_size=tok.get_vocab_size(), positions="rope",
                          norm="rmsnorm", mlp="swiglu", n_experts=4, top_k=2)
    assert fused_step(GPT(experts).eval()) is None  # a mixture of experts (it has no dense MLP to write out)
    assert fused_step(quantize_weights(llama(tok, False), "int8")) is None  # packed weights
    model = llama(tok, False)
    step = fused_step(model)
    assert step.applies(model.new_slot_cache(2)) is False  # no row yet
    assert step.applies(prefilled(model, [3, 4])) is True
    assert step.applies(model.new_slot_cache(2, kv_dtype="int8")) is False
    model.train()
    assert step.applies(prefilled(model, [3, 4])) is False  # GPT.decode would apply dropout
    assert Engine(llama(tok, False), tok, compile=False).decoder.fused is not None


def test_a_sequence_decodes_the_same_with_the_fused_step_as_without(tok) -> None:
    engine = Engine(llama(tok, False), tok)
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, logprobs=2)
    prompts = ("Thou art", "To be")
    fused = engine.generate(list(prompts), params)  # together, then each alone: the fused step
    alone = [engine.generate([p], params)[0] for p in prompts]
    engine.decoder.fused = None  # GPT.decode
    plain = engine.generate(list(prompts), params)
    plain_alone = [engine.generate([p], params)[0] for p in prompts]
    for f, a, p, pa in zip(fused, alone, plain, plain_alone):
        assert f.token_ids == a.token_ids == p.token_ids == pa.token_ids
        assert [lp.logprob for lp in a.choices[0].logprobs] == [lp.logprob for lp in pa.choices[0].logprobs]
        assert [lp.logprob for lp in f.choices[0].logprobs] == [lp.logprob for lp in p.choices[0].logprobs]
        assert [lp.logprob for lp in f.choices[0].logprobs] == pytest.approx([lp.logprob for lp in a.choices[0].logprobs], abs=1e-5)


@torch.inference_mode()
def test_the_static_step_gives_the_logits_and_cache_of_the_fused_step_over_a_fixed_span(tok) -> None:
    # What `generate.compile` compiles at batch 1 (the position a tensor, the keys read to a fixed
    # span and masked past it), run eagerly here: the same values as the exact-shape step to rounding.
    model = llama(tok, True)
    step = fused_step(model)
    a, b = prefilled(model, list(range(3, 20))), prefilled(model, list(range(3, 20)))
    for buffer in (*b.k, *b.v):
        buffer[:, :, 17:] = 7.0  # what a longer sequence left in the slot: overwritten as tokens come, masked past them
    for token in (5, 9, 2, 11):
        want = step(torch.tensor([token]), a)
        got = step.static(torch.tensor([token]), b.positions(), *b.buffers(), 32)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        a.advance()
        b.advance()
    for layer in range(model.config.n_layer):
        assert torch.allclose(a.k[layer][:1, :, :21], b.k[layer][:1, :, :21], atol=1e-5)
        assert torch.allclose(a.v[layer][:1, :, :21], b.v[layer][:1, :, :21], atol=1e-5)


@pytest.mark.slow  # Inductor compiles C++ for each shape: about a minute each on 2 busy cores, seconds once cached
def test_a_compiled_batch_1_step_gives_the_greedy_tokens_of_the_eager_one_and_follows_its_weights(tok) -> None:
    model = llama(tok, False)
    eager, compiled = Engine(model, tok), Engine(model, tok, compile=True)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, logprobs=1)
    for prompt in ("Thou art", "In the beginning God created"):
        [want], [got] = eager.generate([prompt], params), compiled.generate([prompt], params)
        assert got.token_ids == want.token_ids
        assert [lp.logprob for lp in got.choices[0].logprobs] == pytest.approx([lp.logprob for lp in want.choices[0].logprobs], abs=1e-4)
    assert compiled.decoder.shapes == {(1, 64)}  # one row, the fused static step: one library for the span of 64
    with torch.no_grad():
        model.transformer.h[0].mlp.c_proj.weight.mul_(3.0)  # trained in place: the compiled copy must follow
    for engine in (eager, compiled):
        engine.prefixes.clear()
    [want], [got] = eager.generate(["Thou art"], params), compiled.generate(["Thou art"], params)
    assert got.token_ids == want.token_ids
    assert [lp.logprob for lp in got.choices[0].logprobs] == pytest.approx([lp.logprob for lp in want.choices[0].logprobs], abs=1e-4)
