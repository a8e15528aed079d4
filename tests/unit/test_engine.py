"""The generation engine against the plainest possible reference: re-running the whole sequence.

Models are small GPTs with random weights (what matters is that the engine computes what the model
says, not that the text is good) and a real byte-level BPE trained on period English.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from engine_fixtures import make_model, make_tokenizer

from londinium.config import ModelConfig
from londinium.infer import Engine, PromptError, SamplingError, SamplingParams
from londinium.model.gpt import GPT
from londinium.tokenizer.codec import decode, encode

# Tiny models are per-op overhead: one thread runs them faster, and leaves the other core free.
pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["Thou art", "In the beginning God created the heaven and the earth.", "To", "Shall I compare thee"]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def engine(tok) -> Engine:
    return Engine(make_model(tok), tok)


def naive_greedy(model: GPT, ids: list[int], steps: int) -> tuple[list[int], list[float]]:
    """Greedy decoding by re-running the full sequence every step: no cache, no engine."""
    ids, out, lps = list(ids), [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids]))[0][0, -1]
            t = int(logits.argmax())
            out.append(t)
            lps.append(float(logits.log_softmax(-1)[t]))
            ids.append(t)
    return out, lps


GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


# ---- the cache and batching compute what the model says ----------------------------------------------


@pytest.mark.parametrize("positions, n_kv_head", [("learned", 0), ("rope", 0), ("rope", 2)])
def test_greedy_with_kv_cache_equals_recomputing_the_full_sequence(tok, positions: str, n_kv_head: int) -> None:
    model = make_model(tok, positions, n_kv_head)
    engine = Engine(model, tok)
    for prompt in PROMPTS[:2]:
        [c] = engine.generate([prompt], GREEDY)
        want, want_lp = naive_greedy(model, encode(tok, prompt), GREEDY.max_tokens)
        assert c.token_ids == want
        assert c.choices[0].cumulative_logprob == pytest.approx(sum(want_lp), abs=1e-4)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_batched_prompts_of_different_lengths_equal_one_by_one(tok, positions: str) -> None:
    engine = Engine(make_model(tok, positions), tok)
    batched = engine.generate(PROMPTS, GREEDY.replace(logprobs=2))
    for prompt, b in zip(PROMPTS, batched):
        [alone] = engine.generate([prompt], GREEDY.replace(logprobs=2))
        assert b.token_ids == alone.token_ids
        assert [e.logprob for e in b.logprobs] == pytest.approx([e.logprob for e in alone.logprobs], abs=1e-4)


def test_the_greedy_fast_path_takes_the_tokens_and_logprobs_of_the_general_path(engine: Engine) -> None:
    # No processor and no alternatives: argmax and log-probability come out of the decode step itself.
    # Asking for alternatives (logprobs=1) sends the same rows through the sampler; nothing may differ.
    fast = engine.generate(PROMPTS, GREEDY.replace(max_tokens=20))
    general = engine.generate(PROMPTS, GREEDY.replace(max_tokens=20, logprobs=1))
    for f, g in zip(fast, general):
        assert f.token_ids == g.token_ids
        assert f.choices[0].cumulative_logprob == g.choices[0].cumulative_logprob  # bit for bit: the same ops


def test_rows_keep_their_own_parameters_and_seeds_in_a_mixed_batch(engine: Engine) -> None:
    params = [GREEDY, SamplingParams(max_tokens=12, seed=1, ignore_eos=True),
              SamplingParams(max_tokens=5, top_k=5, seed=2, ignore_eos=True), SamplingParams(max_tokens=9, top_p=0.5, temperature=0.7, seed=3, ignore_eos=True)]
    batched = engine.generate(PROMPTS, params)
    for prompt, p, b in zip(PROMPTS, params, batched):
        assert b.token_ids == engine.generate([prompt], p)[0].token_ids
        assert len(b.token_ids) == p.max_tokens and b.finish_reason == "length"


def test_prompts_that_cannot_share_a_cache_are_split_into_batches_and_still_match(tok) -> None:
    engine = Engine(make_model(tok, context=64), tok)
    long_prompt = list(range(10, 60))  # 50 tokens + 5 new fit in 64; with the short prompt's 40 new they would not
    prompts = [long_prompt, "To"]
    params = [GREEDY.replace(max_tokens=5), GREEDY.replace(max_tokens=40)]
    batched = engine.generate(prompts, params)
    assert [len(c.token_ids) for c in batched] == [5, 40]
    for prompt, p, b in zip(prompts, params, batched):
        assert b.token_ids == engine.generate([prompt], p)[0].token_ids


def test_the_same_seed_gives_the_same_sample_and_another_seed_does_not(engine: Engine) -> None:
    p = SamplingParams(max_tokens=16, seed=11, ignore_eos=True)
    a, b = engine.generate(["Thou art"], p)[0], engine.generate(["Thou art"], p)[0]
    c = engine.generate(["Thou art"], p.replace(seed=12))[0]
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.token_ids != c.token_ids


def test_unseeded_sampling_follows_torch_manual_seed(engine: Engine) -> None:
    p = SamplingParams(max_tokens=10, ignore_eos=True)
    torch.manual_seed(5)
    a = engine.generate(["Thou"], p)[0].token_ids
    torch.manual_seed(5)
    assert engine.generate(["Thou"], p)[0].token_ids == a


def test_n_samples_differ_and_best_of_returns_the_most_likely_of_them(engine: Engine) -> None:
    p = SamplingParams(max_tokens=8, seed=3, n=4, ignore_eos=True)
    [four] = engine.generate(["Thou art"], p)
    assert len({tuple(c.token_ids) for c in four.choices}) == 4
    [best] = engine.generate(["Thou art"], p.replace(n=2, best_of=4))
    ranked = sorted(four.choices, key=lambda c: c.mean_logprob, reverse=True)
    assert [c.token_ids for c in best.choices] == [c.token_ids for c in ranked[:2]]
    assert [c.index for c in best.choices] == [0, 1]


def test_logprobs_are_the_models_log_softmax_with_sorted_top_alternatives(tok) -> None:
    model = make_model(tok)
    [c] = Engine(model, tok).generate(["Thou art"], GREEDY.replace(max_tokens=5, logprobs=3))
    ids = encode(tok, "Thou art")
    with torch.no_grad():
        for step, entry in enumerate(c.logprobs):
            lp = model(torch.tensor([ids + c.token_ids[:step]]))[0][0, -1].log_softmax(-1)
            assert entry.logprob == pytest.approx(float(lp[entry.token_id]), abs=1e-4)
            values, indices = lp.topk(3)
            assert [t.token_id for t in entry.top] == indices.tolist()
            assert [t.logprob for t in entry.top] == pytest.approx(values.tolist(), abs=1e-4)
            assert entry.top[0].token_id == entry.token_id  # greedy takes the top alternative


def test_penalised_greedy_matches_a_full_recompute_with_transformers_processors(tok) -> None:
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    model = make_model(tok)
    prompt = encode(tok, "Thou art more lovely and more")
    [c] = Engine(model, tok).generate([prompt], GREEDY.replace(max_tokens=15, repetition_penalty=1.5, no_repeat_ngram_size=2))
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(15):
            scores = model(ids)[0][:, -1]
            scores = RepetitionPenaltyLogitsProcessor(1.5)(ids, scores)
            scores = NoRepeatNGramLogitsProcessor(2)(ids, scores)
            ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], dim=1)
    assert c.token_ids == ids[0, len(prompt):].tolist()


# ---- how sequences end -------------------------------------------------------------------------------


def test_end_of_text_stops_with_reason_stop_and_is_not_in_the_text(engine: Engine) -> None:
    eos = engine.eos_id
    [c] = engine.generate(["Thou"], SamplingParams(max_tokens=10, logit_bias={eos: 100.0}, seed=0))
    assert (c.token_ids, c.text, c.finish_reason) == ([eos], "", "stop")
    [c] = engine.generate(["Thou"], SamplingParams(max_tokens=10, logit_bias={eos: 100.0}, seed=0, ignore_eos=True))
    assert c.token_ids == [eos] * 10 and c.finish_reason == "length"


def test_stop_token_ids_stop_and_max_tokens_gives_reason_length(engine: Engine) -> None:
    [free] = engine.generate(["Thou"], GREEDY)
    assert free.finish_reason == "length" and len(free.token_ids) == GREEDY.max_tokens
    stop_at = free.token_ids[3]
    [c] = engine.generate(["Thou"], GREEDY.replace(stop_token_ids=[stop_at]))
    first = free.token_ids.index(stop_at)
    assert c.token_ids == free.token_ids[:first + 1] and c.finish_reason == "stop"
    assert c.text == decode(tok_of(engine), free.token_ids[:first])


def tok_of(engine: Engine):
    return engine.tokenizer


def _boundary_stop(tok, ids: list[int]) -> tuple[str, int]:
    """A two-character stop string made of the last character of token i-1 and the first of token i."""
    for i in range(2, len(ids)):
        before, upto = decode(tok, ids[:i - 1]), decode(tok, ids[:i])
        nxt = decode(tok, ids[:i + 1])
        ok = "\ufffd" not in nxt and len(upto) > len(before) and len(nxt) > len(upto)
        if ok and not upto[-1].isspace() and not nxt[len(upto)].isspace():
            return upto[-1] + nxt[len(upto)], i
    raise AssertionError("no clean token boundary in the sample")


def whole_character_tokens_only(engine: Engine) -> dict[int, float]:
    """A logit bias that bans tokens that are not whole UTF-8 text on their own (and control tokens),
    so that a random model's sample is readable text with clean token boundaries."""
    def clean(b: bytes) -> bool:
        try:
            return bool(b.decode("utf-8")) and not b.startswith(b"<|")
        except UnicodeDecodeError:
            return False
    return {i: -100.0 for i, b in enumerate(engine.token_bytes) if not clean(b)}


def test_a_stop_string_split_across_tokens_stops_and_is_not_returned(engine: Engine) -> None:
    p = SamplingParams(max_tokens=40, seed=4, ignore_eos=True, logit_bias=whole_character_tokens_only(engine))
    [free] = engine.generate(["Thou art"], p)
    stop, i = _boundary_stop(engine.tokenizer, free.token_ids)
    [c] = engine.generate(["Thou art"], p.replace(stop=["never-appears", stop]))
    assert c.finish_reason == "stop"
    assert c.text == free.text[:free.text.index(stop)]
    assert len(c.token_ids) <= i + 1  # it stopped at the token that completed the stop string
    streamed = "".join(d.text for d in engine.stream("Thou art", p.replace(stop=[stop])))
    assert streamed == c.text  # no part of the stop string was ever shown


def test_streaming_gives_the_text_of_generate_piece_by_piece(engine: Engine) -> None:
    p = SamplingParams(max_tokens=30, seed=9, ignore_eos=True, logprobs=1)
    [c] = engine.generate(["Thou art"], p)
    deltas = list(engine.stream("Thou art", p))
    assert "".join(d.text for d in deltas) == c.text
    assert [t for d in deltas for t in d.token_ids] == c.token_ids
    assert [d.finish_reason for d in deltas] == [None] * 29 + ["length"]
    assert [d.logprobs[0].token_id for d in deltas] == c.token_ids


def test_stream_batch_labels_deltas_by_prompt_and_choice(engine: Engine) -> None:
    deltas = list(engine.stream_batch(["Thou", "To be"], SamplingParams(max_tokens=4, n=2, seed=1, ignore_eos=True)))
    pieces = {k: [d.token_ids[0] for d in g] for k, g in itertools.groupby(sorted(deltas, key=lambda d: (d.index, d.choice)), key=lambda d: (d.index, d.choice))}
    assert sorted(pieces) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    done = engine.generate(["Thou", "To be"], SamplingParams(max_tokens=4, n=2, seed=1, ignore_eos=True))
    assert pieces[(1, 1)] == done[1].choices[1].token_ids


def test_streaming_refuses_what_only_a_finished_sequence_can_decide(engine: Engine) -> None:
    with pytest.raises(SamplingError, match="beam"):
        list(engine.stream("Thou", SamplingParams(num_beams=2)))
    with pytest.raises(SamplingError, match="best_of"):
        list(engine.stream("Thou", SamplingParams(best_of=3)))


# ---- prompts -----------------------------------------------------------------------------------------


def test_a_prompt_longer_than_the_context_is_refused_or_truncated_from_the_left(engine: Engine) -> None:
    long_ids = list(range(5, 65))  # 60 tokens; context 64
    with pytest.raises(PromptError, match=r"prompt 1 has 60 tokens.*max_tokens = 12.*context of 64.*truncate"):
        engine.generate(["Thou", long_ids], GREEDY)
    [c] = engine.generate([long_ids], GREEDY.replace(truncate=True))
    assert c.prompt_token_ids == long_ids[-(64 - 12):]
    assert c.token_ids == engine.generate([long_ids[-(64 - 12):]], GREEDY)[0].token_ids
    with pytest.raises(PromptError, match="max_tokens = 64"):
        engine.generate(["Thou"], GREEDY.replace(max_tokens=64))


def test_an_empty_prompt_starts_from_end_of_text(engine: Engine) -> None:
    [c] = engine.generate([""], GREEDY)
    assert c.prompt_token_ids == [engine.eos_id]


def test_token_id_prompts_are_checked_against_the_vocabulary(engine: Engine) -> None:
    assert engine.generate([encode(engine.tokenizer, "Thou")], GREEDY)[0].token_ids == engine.generate(["Thou"], GREEDY)[0].token_ids
    with pytest.raises(PromptError, match="not in the vocabulary"):
        engine.generate([[1, 99999]], GREEDY)


def test_one_params_per_prompt_or_one_for_all(engine: Engine) -> None:
    with pytest.raises(SamplingError, match="2 prompts but 3"):
        engine.generate(["a", "b"], [GREEDY] * 3)


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tok) -> None:
    torch.manual_seed(0)
    small = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, context=16, vocab_size=100))
    with pytest.raises(Exception, match="do not belong together"):
        Engine(small, tok)


# ---- beam search -------------------------------------------------------------------------------------


def test_one_beam_equals_greedy(engine: Engine) -> None:
    from londinium.infer.beam import beam_search

    prompt = encode(engine.tokenizer, "Thou art")
    choices, _ = beam_search(engine, prompt, GREEDY.replace(num_beams=1))
    assert choices[0].token_ids == engine.generate([prompt], GREEDY)[0].token_ids


def test_enough_beams_find_the_exhaustively_best_sequence(tok) -> None:
    model = make_model(tok, seed=3)
    engine = Engine(model, tok)
    allowed = [40, 41, 42, 43]
    bias = {t: -100.0 for t in range(tok.get_vocab_size()) if t not in allowed}
    prompt = encode(tok, "Thou art")
    with torch.no_grad():
        def score(seq: tuple[int, ...]) -> float:
            lp = model(torch.tensor([prompt + list(seq)]))[0][0]
            total = 0.0
            for j, t in enumerate(seq):
                scores = lp[len(prompt) - 1 + j].clone()
                scores[list(bias)] -= 100.0
                total += float(scores.log_softmax(-1)[t])
            return total
        ranked = sorted(itertools.product(allowed, repeat=3), key=score, reverse=True)
    [c] = engine.generate([prompt], SamplingParams(max_tokens=3, num_beams=16, n=3, logit_bias=bias, ignore_eos=True))
    assert [tuple(ch.token_ids) for ch in c.choices] == ranked[:3]


@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 2.0])
def test_beams_are_ranked_by_length_normalised_score(engine: Engine, length_penalty: float) -> None:
    [free] = engine.generate(["Thou art"], GREEDY)
    stop_ids = list(dict.fromkeys(free.token_ids))[:3]  # likely tokens end hypotheses at different lengths
    [c] = engine.generate(["Thou art"], GREEDY.replace(num_beams=4, n=4, stop_token_ids=stop_ids, length_penalty=length_penalty))
    scores = [ch.cumulative_logprob / len(ch.token_ids) ** length_penalty for ch in c.choices]
    assert scores == sorted(scores, reverse=True)
    assert all(ch.finish_reason in ("stop", "length") for ch in c.choices)
