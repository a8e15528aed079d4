"""The int8 KV cache (model/kv_int8.py): close to the float32 cache, and a sequence decodes the same
alone, batched, or while others join and leave."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import make_model, make_tokenizer

from londinium.infer import Engine, SamplingParams
from londinium.infer.decode import Decoder
from londinium.model.kv_int8 import GROUP, RING, Int8SlotCache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def teacher_forced_logits(model, ids: list[int], prompt: int, kv_dtype: str) -> torch.Tensor:
    """Logits of ids[prompt:] decoded one token at a time through a SlotCache of `kv_dtype`, after
    a float32 prefill of ids[:prompt]."""
    slots, decoder = model.new_slot_cache(1, kv_dtype=kv_dtype), Decoder(model)
    with torch.no_grad():
        first = model.new_kv_cache(1, prompt)
        model(torch.tensor([ids[:prompt]]), kv_cache=first)
        slots.append(first)
        out = []
        for t in ids[prompt:]:
            out.append(decoder.logits(torch.tensor([t]), slots)[0])
            slots.advance()
    return torch.stack(out)


@pytest.mark.parametrize("prompt", [1, GROUP - 1, GROUP, GROUP + 3])  # the prefill ends before, on and after a group's end
def test_int8_keys_and_values_give_logits_close_to_float32(tok, prompt: int) -> None:
    model = make_model(tok, "rope", n_kv_head=2)
    ids = torch.randint(0, tok.get_vocab_size(), (3 * GROUP + 5,), generator=torch.Generator().manual_seed(prompt)).tolist()
    want = teacher_forced_logits(model, ids, prompt, "float32")
    got = teacher_forced_logits(model, ids, prompt, "int8")
    error = (got - want).norm(dim=-1) / want.norm(dim=-1)
    assert float(error.max()) < 0.05
    assert float(error[-GROUP:].max()) > 0  # the older groups really are int8 by then


def test_a_quantized_group_holds_the_float_values_within_its_scale(tok) -> None:
    model = make_model(tok, "rope", n_kv_head=2)
    ids = list(range(1, 2 * GROUP + 4))
    float_cache, int8_cache = model.new_kv_cache(1, len(ids)), None
    with torch.no_grad():
        model(torch.tensor([ids]), kv_cache=float_cache)
    int8_cache = model.new_slot_cache(1, kv_dtype="int8")
    assert isinstance(int8_cache, Int8SlotCache)
    int8_cache.append(float_cache)
    k = float_cache.k[0][0, :, :2 * GROUP]
    keys = int8_cache.kq[0][0, :, :2 * GROUP].float().view(2, 2, GROUP, -1) * int8_cache.ks[0][0, :, :2, None].float()
    # Per channel: the error of each key is at most half a step of its channel's scale (and the float16 scale's rounding).
    step = int8_cache.ks[0][0, :, :2, None].float()
    assert ((keys.view_as(k) - k).abs().view(2, 2, GROUP, -1) <= 0.5 * step + 1e-3 * k.abs().amax()).all()
    # The unfinished group's keys wait in the ring, rounded to its 16-bit type only.
    assert torch.equal(int8_cache.kr[0][0, :, :3], float_cache.k[0][0, :, 2 * GROUP:].to(RING))
    # Values are int8 at every position at once, the ring's included: within half a step of their own scale.
    v = float_cache.v[0][0, :, :len(ids)]
    scale = int8_cache.vs[0][0, :, :len(ids)].float()
    values = int8_cache.vq[0][0, :, :len(ids)].float() * scale
    assert ((values - v).abs() <= 0.5 * scale + 1e-3 * v.abs().amax()).all()
    assert not torch.equal(values, v)


@pytest.mark.parametrize("max_running", [2, 8])  # queued and joining at different steps; all together
def test_with_an_int8_cache_each_request_decodes_as_it_does_alone(tok, max_running: int) -> None:
    engine = Engine(make_model(tok, "rope", n_kv_head=2), tok, max_running=max_running, max_step_tokens=64, kv_dtype="int8")
    prompts = ["Thou art", "In the beginning God created the heaven and the earth.", "To", "Shall I compare thee"]
    params = [SamplingParams(max_tokens=3 * GROUP, temperature=0.0, ignore_eos=True, logprobs=1),
              SamplingParams(max_tokens=GROUP + 2, temperature=0.8, seed=1, ignore_eos=True),
              SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=2 * GROUP, top_p=0.9, seed=2, ignore_eos=True)]
    together = engine.generate(prompts, params)
    for prompt, p, t in zip(prompts, params, together):
        [alone] = engine.generate([prompt], p)
        assert t.token_ids == alone.token_ids
        # Attention over a batch's longer span sums in another order: float32 rounding, as with a float32 cache.
        assert t.choices[0].cumulative_logprob == pytest.approx(alone.choices[0].cumulative_logprob, abs=1e-4)
