"""Sampling controls on small hand-computed cases, and against `transformers`' own processors.

Each processor works on a batch `[B, V]` with a setting per row; the hand-computed cases pin the
published formulas, and the comparisons with `transformers.generation.logits_process` pin the
conventions (what counts as "seen", where the nucleus boundary falls) on random logits.
"""

from __future__ import annotations

import math

import pytest
import torch

from londinium.infer.sampling import (
    FrequencyPresencePenalty,
    LogitBias,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    SamplingError,
    SamplingParams,
    Temperature,
    TokenChooser,
    TopK,
    TopP,
    build_pipeline,
    make_generator,
    sample_seed,
)

# Tiny models are per-op overhead: one thread runs them faster, and leaves the other core free.
pytestmark = pytest.mark.usefixtures("one_thread")

INF = math.inf


def kept(logits: torch.Tensor) -> list[list[int]]:
    """Indices of the tokens a filter left (finite logits), per row."""
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in logits]


# ---- temperature -----------------------------------------------------------------------------------


@pytest.mark.parametrize("t, expected", [(1.0, [0.12, 0.88]), (0.5, [0.02, 0.98]), (2.0, [0.27, 0.73])])
def test_temperature_reshapes_probabilities_as_hand_computed(t: float, expected: list[float]) -> None:
    probs = Temperature([t])(torch.tensor([[1.0, 3.0]])).softmax(-1)
    assert [round(p, 2) for p in probs[0].tolist()] == expected


def test_temperature_is_per_row_and_leaves_greedy_rows_alone() -> None:
    logits = torch.tensor([[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]])
    out = Temperature([0.5, 0.0, 2.0])(logits)
    assert out.tolist() == [[2.0, 6.0], [1.0, 3.0], [0.5, 1.5]]


# ---- top-k, top-p, min-p -----------------------------------------------------------------------------


def test_top_k_keeps_the_k_largest_per_row_and_zero_keeps_all() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]] * 3)
    assert kept(TopK([2, 1, 0], vocab_size=4)(logits)) == [[1, 3], [1], [0, 1, 2, 3]]


PROBS = [0.5, 0.3, 0.15, 0.05]  # in an order the filters must not rely on: shuffled below
ORDER = [2, 0, 3, 1]


@pytest.mark.parametrize("p, n_kept", [(0.4, 1), (0.79, 2), (0.81, 3), (0.96, 4), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_whose_probability_reaches_p(p: float, n_kept: int) -> None:
    logits = torch.tensor([[math.log(PROBS[i]) for i in ORDER]])  # token j has probability PROBS[ORDER[j]]
    want = sorted(j for j in range(4) if ORDER[j] < n_kept)  # the n_kept most likely tokens
    assert kept(TopP([p])(logits)) == [want]


@pytest.mark.parametrize("min_p, n_kept", [(0.0, 4), (0.09, 4), (0.2, 3), (0.5, 2), (0.7, 1)])
def test_min_p_keeps_tokens_at_least_min_p_times_the_top_probability(min_p: float, n_kept: int) -> None:
    # thresholds: 0.2 * 0.5 = 0.1 keeps 0.5, 0.3, 0.15; 0.5 * 0.5 = 0.25 keeps 0.5, 0.3; 0.7 * 0.5 = 0.35 keeps 0.5
    logits = torch.tensor([[math.log(PROBS[i]) for i in ORDER]])
    want = sorted(j for j in range(4) if ORDER[j] < n_kept)
    assert kept(MinP([min_p])(logits)) == [want]


def test_filters_match_transformers_warpers_on_random_logits() -> None:
    from transformers.generation.logits_process import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 300, generator=g) * 3
    ids = torch.zeros(6, 1, dtype=torch.long)
    for p in (0.3, 0.9, 0.99):
        assert kept(TopP([p] * 6)(logits.clone())) == kept(TopPLogitsWarper(p)(ids, logits.clone()))
    for k in (1, 7, 50):
        assert kept(TopK([k] * 6, 300)(logits.clone())) == kept(TopKLogitsWarper(k)(ids, logits.clone()))
    for m in (0.05, 0.3):
        assert kept(MinP([m] * 6)(logits.clone())) == kept(MinPLogitsWarper(m)(ids, logits.clone()))


# ---- penalties ---------------------------------------------------------------------------------------


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens() -> None:
    rp = RepetitionPenalty([2.0], histories=[[0, 1]], vocab_size=4)
    out = rp(torch.tensor([[2.0, -2.0, 1.0, -1.0]]))
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]  # tokens 2 and 3 were never seen
    rp.observe(torch.tensor([3]))
    assert rp(torch.tensor([[2.0, -2.0, 1.0, -1.0]])).tolist() == [[1.0, -4.0, 1.0, -2.0]]


def test_repetition_penalty_matches_transformers_over_prompt_and_output() -> None:
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(1)
    history = torch.randint(0, 50, (3, 12), generator=g)
    logits = torch.randn(3, 50, generator=g)
    ours = RepetitionPenalty([1.3] * 3, history[:, :8].tolist(), 50)
    for t in range(8, 12):
        ours.observe(history[:, t])
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone())
    torch.testing.assert_close(ours(logits.clone()), theirs)


def test_frequency_and_presence_penalties_follow_openai_on_generated_counts_only() -> None:
    # logit -= count * frequency + (count > 0) * presence, counting generated tokens (not the prompt)
    fp = FrequencyPresencePenalty([0.5, 0.0], [1.0, 0.25], vocab_size=4)
    for t in ([0, 3], [0, 3], [2, 3]):
        fp.observe(torch.tensor(t))
    out = fp(torch.zeros(2, 4))
    assert out.tolist() == [[-2.0, 0.0, -1.5, 0.0], [0.0, 0.0, 0.0, -0.25]]


@pytest.mark.parametrize("history, n, banned", [
    ([1, 2, 3, 1, 2], 3, [3]),      # "1 2" was followed by 3
    ([1, 2, 3, 1, 2], 2, [3]),      # "2" was followed by 3
    ([1, 2, 1], 2, [2]),            # "1" was followed by 2
    ([5, 6, 7], 1, [5, 6, 7]),      # unigrams: nothing seen may come again
    ([1, 2, 3], 3, []),             # "2 3" never had a follower
    ([4], 3, []),                   # too short for any trigram
])
def test_no_repeat_ngram_bans_tokens_that_would_repeat_an_ngram(history: list[int], n: int, banned: list[int]) -> None:
    out = NoRepeatNGram([n], [history])(torch.zeros(1, 8))
    assert [i for i in range(8) if out[0, i] == -INF] == banned


def test_no_repeat_ngram_matches_transformers_as_tokens_arrive() -> None:
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    g = torch.Generator().manual_seed(2)
    seq = torch.randint(0, 6, (2, 30), generator=g)  # a small vocabulary makes repeats common
    ours = NoRepeatNGram([3, 3], seq[:, :4].tolist())
    for t in range(4, 30):
        logits = torch.randn(2, 6, generator=g)
        want = NoRepeatNGramLogitsProcessor(3)(seq[:, :t], logits.clone())
        assert torch.equal(ours(logits.clone()), want), t
        ours.observe(seq[:, t])


def test_logit_bias_adds_to_the_named_tokens_of_each_row() -> None:
    out = LogitBias([{1: -100.0, 2: 5.0}, {}], vocab_size=3)(torch.zeros(2, 3))
    assert out.tolist() == [[0.0, -100.0, 5.0], [0.0, 0.0, 0.0]]


# ---- pipeline and choosing ---------------------------------------------------------------------------


def test_pipeline_holds_only_the_processors_some_row_asks_for() -> None:
    names = lambda ps: [type(p).__name__ for p in build_pipeline(ps, [[1]] * len(ps), 10).processors]  # noqa: E731
    assert names([SamplingParams(temperature=0.0)]) == []
    assert names([SamplingParams()]) == []  # temperature 1, no filters: plain sampling
    assert names([SamplingParams(temperature=0.0, top_k=5, top_p=0.5)]) == []  # warpers cannot change an argmax
    assert names([SamplingParams(temperature=0.7, top_k=5), SamplingParams(repetition_penalty=1.2, logit_bias={1: 2.0})]) == [
        "RepetitionPenalty", "LogitBias", "Temperature", "TopK"]


def test_penalties_apply_before_temperature_and_filters() -> None:
    # Token 0 leads (3 vs 2) until the repetition penalty halves it (1.5 < 2); top_k=1 must then keep token 1.
    pipe = build_pipeline([SamplingParams(repetition_penalty=2.0, top_k=1, temperature=0.5)], [[0]], 2)
    assert kept(pipe(torch.tensor([[3.0, 2.0]]))) == [[1]]


def test_greedy_rows_take_the_argmax_and_sampling_rows_follow_the_distribution() -> None:
    probs = torch.tensor([0.12, 0.88])
    logits = probs.log().expand(4000, 2)
    g = make_generator(7)
    chooser = TokenChooser([False] * 4000, [g] * 4000)
    share = chooser(logits).float().mean().item()
    assert abs(share - 0.88) < 0.02  # 4000 draws: the standard error is 0.005
    mixed = TokenChooser([True, False], [None, make_generator(1)])
    assert mixed(torch.tensor([[0.0, -50.0], [0.0, -50.0]])).tolist()[0] == 0


def test_sampling_never_picks_a_token_a_filter_removed() -> None:
    logits = torch.full((3, 50), -INF)
    logits[:, 7], logits[:, 31], logits[2, 49] = 0.0, 1.0, 0.5  # row 2 also allows the last token
    chooser = TokenChooser([False] * 3, [make_generator(s) for s in range(3)])
    seen = {int(t) for _ in range(300) for t in chooser(logits)[:2]} | {int(chooser(logits)[2]) for _ in range(300)}
    assert seen == {7, 31, 49}


def test_a_seeded_generator_repeats_its_samples_and_other_seeds_differ() -> None:
    logits = torch.zeros(1, 1000)

    def draws(seed: int) -> list[int]:
        chooser = TokenChooser([False], [make_generator(seed)])
        return [chooser(logits).item() for _ in range(20)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_samples_of_one_seeded_request_get_distinct_repeatable_seeds() -> None:
    seeds = [sample_seed(5, i) for i in range(4)]
    assert seeds[0] == 5 and len(set(seeds)) == 4 and seeds == [sample_seed(5, i) for i in range(4)]
    assert sample_seed(None, 2) is None


# ---- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1), ("min_p", 2.0), ("max_tokens", 0),
    ("repetition_penalty", 0.0), ("frequency_penalty", 3.0), ("presence_penalty", -2.5), ("n", 0),
    ("logprobs", 21), ("num_beams", 0), ("no_repeat_ngram_size", -1), ("temperature", float("nan")),
])
def test_out_of_range_parameters_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(SamplingError, match=field):
        SamplingParams(**{field: value}).validate(100)


def test_token_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(SamplingError, match="logit_bias.*100"):
        SamplingParams(logit_bias={100: 1.0}).validate(100)
    with pytest.raises(SamplingError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=[-1]).validate(100)
    with pytest.raises(SamplingError, match="best_of"):
        SamplingParams(n=3, best_of=2).validate(100)


def test_top_p_with_a_value_per_row_and_banned_tokens_matches_transformers_row_by_row() -> None:
    from transformers.generation.logits_process import TopPLogitsWarper

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 8192, generator=g) * 2
    logits[:, :100] = -math.inf  # banned (no-repeat n-gram, say): probability 0, never kept
    ps = [0.1, 0.5, 0.95, 0.999, 1.0]
    ours = kept(TopP(ps)(logits.clone()))
    ids = torch.zeros(1, 1, dtype=torch.long)
    for b, p in enumerate(ps):
        want = kept(TopPLogitsWarper(p)(ids, logits[b:b + 1].clone())) if p < 1.0 else [list(range(100, 8192))]
        assert ours[b] == want[0]
