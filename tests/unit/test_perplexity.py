"""Perplexity and bits-per-byte: equal to the hand computation from the model's logits, every token
scored exactly once by the sliding window, and batching/padding never changing a number."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import one_thread_no_grad  # noqa: F401  (autouse)
from eval_fixtures import bos, enc, enc_batch, tiny_gpt
from hypothesis import given, settings
from hypothesis import strategies as st

from londinium.errors import ConfigError
from londinium.eval.perplexity import (
    evaluate_documents,
    period_label,
    score_rows,
    sequence_nll,
    sliding_windows,
)

VERSE = "The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures."


LONG = ("To be, or not to be: that is the question: Whether 'tis nobler in the mind to suffer "
        "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles.")


def _hand_nll(model, ids: list[int]) -> torch.Tensor:
    """NLL of ids[1:] from one forward pass: log_softmax of the logits, gathered at the targets."""
    logits, _ = model(torch.tensor([ids[:-1]]))
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    return -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def test_perplexity_equals_the_value_computed_by_hand_from_logits():
    model = tiny_gpt(context=64)
    ids = enc(VERSE)
    assert len(ids) + 1 <= 64
    doc = {"text": VERSE, "source": "kjv", "period": [1611, 1611]}
    got = evaluate_documents(model, enc_batch, [doc], bos(), context=64, show_progress=False)["total"]

    nll = _hand_nll(model, [bos(), *ids])
    assert got["tokens"] == len(ids)
    assert got["nll"] == pytest.approx(float(nll.sum()), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(float(nll.mean())), rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(float(nll.sum()) / math.log(2) / len(VERSE.encode()), rel=1e-5)
    # and the model's own mean cross-entropy agrees
    _, loss = model(torch.tensor([[bos(), *ids][:-1]]), torch.tensor([ids]))
    assert got["loss"] == pytest.approx(float(loss), rel=1e-5)


def test_sliding_window_equals_plain_computation_when_text_fits_one_window():
    model = tiny_gpt(context=64)
    ids = [bos(), *enc(VERSE)]
    plain = float(_hand_nll(model, ids).sum())
    for stride in (1, 7, 32, 64):
        rows = sliding_windows(ids, 64, stride)
        assert len(rows) == 1
        nll, n = sequence_nll(model, ids, context=64, stride=stride)
        assert n == len(ids) - 1
        assert nll == pytest.approx(plain, rel=1e-6)


def test_sliding_window_with_stride_one_gives_each_token_its_full_context():
    """Against an independent computation: each token scored from the last `context` tokens before it."""
    context = 16
    model = tiny_gpt(context=context)
    ids = [bos(), *enc(LONG)]
    assert len(ids) > 2 * context
    expected = 0.0
    for j in range(1, len(ids)):
        window = ids[max(0, j - context):j]
        logits, _ = model(torch.tensor([window]))
        expected -= float(torch.log_softmax(logits[0, -1].double(), -1)[ids[j]])
    got, n = sequence_nll(model, ids, context=context, stride=1)
    assert n == len(ids) - 1
    assert got == pytest.approx(expected, rel=1e-5)


def test_long_text_uses_more_context_than_disjoint_chunks_and_scores_every_token():
    context = 16
    model = tiny_gpt(context=context)
    ids = [bos(), *enc(LONG)]
    half, n_half = sequence_nll(model, ids, context=context, stride=context // 2)
    disjoint, n_disjoint = sequence_nll(model, ids, context=context, stride=context)
    assert n_half == n_disjoint == len(ids) - 1
    assert half != pytest.approx(disjoint, rel=1e-9)  # the overlap changes what tokens are conditioned on


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 200), context=st.integers(1, 40), data=st.data())
def test_sliding_windows_score_every_target_exactly_once_within_the_context(length, context, data):
    stride = data.draw(st.integers(1, context))
    ids = list(range(1000, 1000 + length))  # distinct ids: a target's value tells its position
    rows = sliding_windows(ids, context, stride)
    scored = []
    for inputs, targets in rows:
        assert 1 <= len(inputs) <= context and len(targets) == len(inputs)
        for pos, (x, t) in enumerate(zip(inputs, targets)):
            if t != -1:
                assert t == x + 1  # the target is the id that follows its input
                scored.append(t)
                # every scored token sees at least context - stride tokens (or all before it)
                assert pos + 1 >= min(context - stride + 1, t - 1000)
    assert scored == ids[1:]


def test_sliding_window_rejects_a_stride_larger_than_the_context():
    with pytest.raises(ConfigError, match="stride"):
        sliding_windows([1, 2, 3], context=4, stride=5)


def test_batching_and_padding_do_not_change_any_score():
    model = tiny_gpt(context=32)
    rows = []
    for text in (VERSE, LONG, "Jesus wept.", "O"):
        rows.extend(sliding_windows([bos(), *enc(text)], 32, 16))
    one = score_rows(model, rows, batch_size=1)
    many = score_rows(model, rows, batch_size=7, pad_id=bos())
    for a, b in zip(one, many):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_breakdown_by_source_and_period_adds_up_to_the_total():
    model = tiny_gpt(context=32)
    docs = [
        {"text": VERSE, "source": "kjv", "period": [1611, 1611]},
        {"text": LONG, "source": "shakespeare", "period": [1590, 1623]},
        {"text": "Of Mans First Disobedience, and the Fruit", "source": "milton", "period": [1632, 1671]},
        {"text": "And God said, Let there be light: and there was light.", "source": "kjv", "period": [1611, 1611]},
        {"text": "", "source": "empty"},  # nothing to score: left out, not a division by zero
    ]
    r = evaluate_documents(model, enc_batch, docs, bos(), context=32, stride=16, show_progress=False)
    assert set(r["by_source"]) == {"kjv", "shakespeare", "milton"}
    assert set(r["by_period"]) == {"1611", "1590-1623", "1632-1671"}
    for key in ("docs", "tokens", "bytes"):
        assert sum(v[key] for v in r["by_source"].values()) == r["total"][key]
    assert sum(v["nll"] for v in r["by_period"].values()) == pytest.approx(r["total"]["nll"])
    assert r["by_source"]["kjv"]["docs"] == 2
    # each document alone gives the same sums as inside the batch
    alone = evaluate_documents(model, enc_batch, docs[1:2], bos(), context=32, stride=16, show_progress=False)["total"]
    assert alone["nll"] == pytest.approx(r["by_source"]["shakespeare"]["nll"], rel=1e-6)


def test_bits_per_byte_counts_utf8_bytes_not_characters():
    model = tiny_gpt(context=64)
    text = "Thy ſweet ſelfe, café — naïve"
    r = evaluate_documents(model, enc_batch, [{"text": text, "source": "x"}], bos(), context=64, show_progress=False)["total"]
    assert r["bytes"] == len(text.encode("utf-8")) > len(text)
    assert r["bits_per_byte"] == pytest.approx(r["nll"] / math.log(2) / r["bytes"])


def test_period_labels():
    assert period_label([1590, 1623]) == "1590-1623"
    assert period_label([1611, 1611]) == "1611"
    assert period_label([0, 0]) == "unknown"
    assert period_label(None) == "unknown"
    assert period_label("Jacobean") == "Jacobean"


def test_model_loss_matches_cross_entropy_over_positions():
    """The helper's per-position NLL is F.cross_entropy's, so the trainer's loss and ours agree."""
    model = tiny_gpt(context=32)
    ids = [bos(), *enc(VERSE)][:33]
    (nll,) = score_rows(model, [(ids[:-1], ids[1:])])
    logits, _ = model(torch.tensor([ids[:-1]]))
    ref = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="none")
    assert torch.allclose(nll.float(), ref, rtol=1e-5, atol=1e-6)
