"""Continuous batching: what a request gets does not depend on who else is in the batch, or when.

The guard is the engine's own answer for the request alone; every test here decodes the same request
while the scheduler is busy with other things (requests joining and leaving at random steps, long
prompts prefilled in chunks, cancellations, a failing neighbour) and asks for the same tokens and
the same log-probabilities.
"""

from __future__ import annotations

import random

import pytest
import torch
from engine_fixtures import make_model, make_tokenizer

from londinium.infer import Engine, SamplingParams
from londinium.infer.engine import EngineRequestError, Request
from londinium.model.cache import compaction
from londinium.tokenizer.codec import encode

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "In the beginning God created the heaven and the earth. And the earth was without form"
TARGETS = {
    "greedy": SamplingParams(max_tokens=14, temperature=0.0, ignore_eos=True, logprobs=2),
    "sampled": SamplingParams(max_tokens=14, temperature=0.8, top_p=0.9, top_k=20, seed=7, ignore_eos=True, logprobs=1,
                              repetition_penalty=1.2, frequency_penalty=0.5, no_repeat_ngram_size=2),
}


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def random_params(rng: random.Random) -> SamplingParams:
    kind = rng.choice(["greedy", "plain", "warped", "penalised", "n2", "biased"])
    base = SamplingParams(max_tokens=rng.randint(1, 15), seed=rng.randint(0, 99), ignore_eos=rng.random() < 0.7)
    return {
        "greedy": base.replace(temperature=0.0),
        "plain": base,
        "warped": base.replace(temperature=1.3, top_k=5, min_p=0.05),
        "penalised": base.replace(presence_penalty=1.0, repetition_penalty=1.5, logprobs=3),
        "n2": base.replace(n=2, top_p=0.5),
        "biased": base.replace(logit_bias={5: 5.0, 6: -100.0}, temperature=0.0),
    }[kind]


def assert_same(got, want) -> None:
    assert got.token_ids == want.token_ids
    assert got.finish_reason == want.finish_reason
    for a, b in zip(got.logprobs, want.logprobs):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert [t.token_id for t in a.top] == [t.token_id for t in b.top]


@pytest.mark.parametrize("positions, n_kv_head", [("learned", 0), ("rope", 2)])
@pytest.mark.parametrize("kind", sorted(TARGETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_a_request_decoded_while_others_join_and_leave_at_random_steps_equals_it_alone(tok, positions, n_kv_head, kind, seed) -> None:
    # max_step_tokens 24 < the 30-odd-token prompt: the target itself is prefilled in chunks, while
    # others decode; others' prompts up to 40 tokens are chunked too.
    engine = Engine(make_model(tok, positions, n_kv_head), tok, max_running=6, max_step_tokens=24)
    params = TARGETS[kind]
    ids = encode(tok, PROMPT)
    [alone] = engine.generate([ids], params)

    rng = random.Random(seed)
    others: list[Request] = []
    for _ in range(rng.randint(0, 3)):  # some already running before the target arrives
        others.append(Request([rng.randrange(tok.get_vocab_size()) for _ in range(rng.randint(1, 40))], random_params(rng)))
        engine.add_request(others[-1])
    for _ in range(rng.randint(0, 4)):
        engine.step()
    target = Request(ids, params)
    engine.add_request(target)
    result = None
    for _ in range(200):
        for ev in engine.step():
            assert ev.error is None
            if ev.request is target and ev.completion is not None:
                result = ev.completion
        if rng.random() < 0.5:
            p = random_params(rng)
            if engine.has_room(p.samples):
                others.append(Request([rng.randrange(tok.get_vocab_size()) for _ in range(rng.randint(1, 40))], p))
                engine.add_request(others[-1])
        live = [r for r in others if not r.done]
        if live and rng.random() < 0.1:
            engine.cancel(rng.choice(live))
        if result is not None:
            break
    assert result is not None
    assert_same(result, alone)
    while engine.has_work():
        engine.step()
    assert engine.batch.slots.rows == 0


def test_chunked_prefill_equals_prefill_in_one_pass(tok) -> None:
    model = make_model(tok, "rope")
    ids = encode(tok, PROMPT)
    assert len(ids) > 20
    whole = Engine(model, tok).generate([ids], TARGETS["greedy"].replace(logprobs=3))[0]
    chunked = Engine(model, tok, max_running=2, max_step_tokens=5).generate([ids], TARGETS["greedy"].replace(logprobs=3))[0]
    assert_same(chunked, whole)


def test_a_long_prompt_is_prefilled_in_chunks_while_running_sequences_keep_decoding(tok) -> None:
    engine = Engine(make_model(tok), tok, max_running=4, max_step_tokens=10)
    running = Request(encode(tok, "Thou"), SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))
    engine.add_request(running)
    engine.step()
    long = Request(list(range(10, 60)), SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    engine.add_request(long)
    steps = 0
    while not long.seqs[0].ids:
        events = {ev.request.key: ev for ev in engine.step()}
        steps += 1
        assert len(events[running.key].deltas) == 1  # a token for the running sequence every step
    assert steps == 6  # 50 prompt tokens, 9 per step (10 minus the running sequence's one)


def test_cancellation_frees_the_slot_within_one_step(tok) -> None:
    engine = Engine(make_model(tok), tok, max_running=2, max_step_tokens=16)
    a, b = (Request(encode(tok, p), SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)) for p in ("Thou", "To be"))
    engine.add_request(a)
    engine.add_request(b)
    for _ in range(3):
        engine.step()
    assert not engine.has_room(1)
    engine.cancel(a)
    events = {ev.request.key: ev for ev in engine.step()}
    assert events[a.key].completion.finish_reason == "cancelled"
    assert len(events[a.key].completion.token_ids) == 3
    assert engine.has_room(1) and [s.request for s in engine.batch.rows] == [b]
    assert len(events[b.key].deltas) == 1  # b decoded in that same step


def test_an_exception_in_one_request_fails_only_that_request(tok, monkeypatch) -> None:
    engine = Engine(make_model(tok), tok)
    want = engine.generate(["Thou art", "To be"], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    advance = engine._advance

    def failing(s, *args):
        if s.request.index == 0 and len(s.ids) == 3:
            raise ValueError("injected")
        return advance(s, *args)

    monkeypatch.setattr(engine, "_advance", failing)
    p = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    bad, good = Request(encode(tok, "Thou art"), p, index=0), Request(encode(tok, "To be"), p, index=1)
    engine.add_request(bad)
    engine.add_request(good)
    outcome = {}
    while engine.has_work():
        for ev in engine.step():
            if ev.error is not None:
                outcome["bad"] = ev.error
            elif ev.completion is not None:
                outcome[ev.request.index] = ev.completion
    assert isinstance(outcome["bad"], ValueError) and 0 not in outcome
    assert outcome[1].token_ids == want[1].token_ids
    with pytest.raises(EngineRequestError, match="prompt 0 failed.*injected"):
        engine.generate(["Thou art", "To be"], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    assert not engine.has_work()  # generate cleaned up after itself; the engine serves the next call
    monkeypatch.setattr(engine, "_advance", advance)
    assert engine.generate(["To be"], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))[0].token_ids == want[1].token_ids


def test_more_prompts_than_slots_queue_and_match(tok) -> None:
    engine = Engine(make_model(tok), tok, max_running=2, max_step_tokens=16)
    prompts = ["Thou", "To be", "In the", "Shall I", "O"]
    p = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    together = engine.generate(prompts, p)
    assert [c.token_ids for c in together] == [engine.generate([q], p)[0].token_ids for q in prompts]


@pytest.mark.parametrize("rows, leaving", [(5, {1, 3}), (4, {3}), (4, {0, 1, 2, 3}), (6, {0, 5}), (3, set())])
def test_compaction_fills_holes_from_the_end_and_keeps_every_survivor(rows: int, leaving: set[int]) -> None:
    order = compaction(rows, leaving)
    assert sorted(order) == [r for r in range(rows) if r not in leaving]
    moved = [(new, old) for new, old in enumerate(order) if new != old]
    assert len(moved) <= len(leaving) and all(old > new for new, old in moved)


@pytest.mark.parametrize("lengths", [(3, 9, 5), (6, 6, 6)])  # per-row masks; one shared length (no mask)
def test_slot_cache_decoding_rows_of_different_lengths_equals_recomputing_each(tok, lengths) -> None:
    model = make_model(tok, "rope", n_kv_head=2)
    seqs = [torch.randint(0, 300, (n,)).tolist() for n in lengths]
    slots = model.new_slot_cache(3)
    with torch.no_grad():
        for s in seqs:
            c = model.new_kv_cache(1, len(s))
            model(torch.tensor([s]), kv_cache=c)
            slots.append(c)
        for step in range(6):
            if step == 3:  # the second sequence leaves; the third moves into its slot
                slots.keep([0, 2])
                seqs = [seqs[0], seqs[2]]
            nxt = [(7 * step + 11 * i) % 300 for i in range(len(seqs))]
            lengths = slots.lengths
            view = slots.view_type(slots.buffers(), slots.positions(), max(lengths) + 1, len(set(lengths)) > 1)
            got = model.decode(torch.tensor(nxt), slots.positions(), view)
            slots.advance()
            for i, s in enumerate(seqs):
                s.append(nxt[i])
                want = model(torch.tensor([s]))[0][0, -1]
                torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-5)


# ---- prefix reuse ----------------------------------------------------------------------------------


def test_prompts_sharing_a_prefix_reuse_its_keys_and_values_and_get_the_same_tokens(tok) -> None:
    model = make_model(tok, "rope", n_kv_head=2)
    system = list(range(20, 60))  # 40 tokens: two whole blocks of 16 are shared
    prompts = [system + [100 + i, 200 + i] for i in range(4)]
    p = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=1)
    plain = Engine(model, tok, max_running=4, max_step_tokens=64, prefix_cache_tokens=0)
    reusing = Engine(model, tok, max_running=4, max_step_tokens=64, prefix_cache_tokens=1000)
    want = plain.generate(prompts, p)
    got = reusing.generate(prompts, p)
    for a, b in zip(got, want):
        assert_same(a, b)
    # The first prompt computed everything; each later one copied 32 tokens (all four start in one
    # step: the first's prefill is remembered before the second's begins).
    assert reusing.counters["prefix_hit_tokens"] == 3 * 32
    assert reusing.counters["prefill_tokens"] == plain.counters["prefill_tokens"] - 3 * 32
    assert plain.counters["prefix_hit_tokens"] == 0


def test_the_prefix_cache_never_matches_a_different_prefix_and_forgets_the_oldest(tok) -> None:
    from londinium.model.cache import PrefixCache

    model = make_model(tok)
    cache = PrefixCache(capacity=40, block=4)

    def prefilled(ids):
        c = model.new_kv_cache(1, len(ids))
        model(torch.tensor([ids]), kv_cache=c)
        return c

    a = list(range(1, 21))
    cache.insert(a, prefilled(a))
    assert cache.lookup(a + [7])[1] == 20
    assert cache.lookup(a)[1] == 16  # one token must be left to compute
    assert cache.lookup(a[:9] + [99] + a[10:])[1] == 8  # diverges in the third block
    assert cache.lookup([99] + a)[1] == 0
    b = list(range(30, 55))
    cache.insert(b, prefilled(b))  # 20 + 25 > 40: a goes
    assert cache.lookup(a + [7])[1] == 0 and cache.lookup(b + [1])[1] == 24 and len(cache) == 1


def test_more_samples_than_slots_are_refused_not_queued_forever(tok) -> None:
    from londinium.infer import SamplingError

    engine = Engine(make_model(tok), tok, max_running=2, max_step_tokens=16)
    with pytest.raises(SamplingError, match="n = 3 samples exceed the engine's max_running = 2"):
        engine.generate(["Thou", "To"], [SamplingParams(max_tokens=2), SamplingParams(max_tokens=2, n=3)])
    assert not engine.has_work()


def test_slots_are_allocated_as_sequences_need_them_and_rows_survive_the_growth(tok) -> None:
    engine = Engine(make_model(tok), tok, max_running=16, max_step_tokens=64)
    p = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    [one] = engine.generate(["Thou"], p)
    assert engine.batch.slots.slots == 4  # one sequence ran: no room for 16 contexts was taken
    first = Request(encode(tok, "Thou"), p)
    engine.add_request(first)
    engine.step()
    engine.step()  # `first` is mid-decode when nine more join: the cache grows under it
    for q in ["To be", "In the", "Shall I", "O", "The king", "Of", "And", "But", "So"]:
        engine.add_request(Request(encode(tok, q), p))
    done = {}
    while engine.has_work():
        done.update({ev.request.key: ev.completion for ev in engine.step() if ev.completion})
    assert engine.batch.slots.slots == 10 and done[first.key].token_ids == one.token_ids  # 10 ran together


# ---- the compiled decode step ------------------------------------------------------------------------


@pytest.mark.slow  # Inductor compiles C++ for each shape: about a minute each on 2 busy cores, seconds once cached
def test_a_compiled_decode_step_gives_what_the_eager_one_gives(tok) -> None:
    model = make_model(tok, "rope", n_kv_head=2)
    eager, compiled = Engine(model, tok), Engine(model, tok, compile=True)
    prompts = ["Thou art", "In the beginning God created", "To"]  # 3 rows of different lengths, run padded to 4
    for params in (SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True),  # the fused greedy step
                   SamplingParams(max_tokens=8, temperature=0.8, seed=5, ignore_eos=True)):  # logits, then the sampler
        want, got = eager.generate(prompts, params), compiled.generate(prompts, params)
        for w, g in zip(want, got):
            assert g.token_ids == w.token_ids
            assert g.choices[0].cumulative_logprob == pytest.approx(w.choices[0].cumulative_logprob, abs=1e-4)
    assert compiled.decoder.shapes == {(4, 64)}  # rows padded to a power of two, keys to at least 64 columns
