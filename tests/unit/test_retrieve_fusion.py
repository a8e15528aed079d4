"""Fusion, passages and the refusal threshold on values worked out by hand."""

from __future__ import annotations

import math

import pytest

from londinium.retrieve.evaluate import Query, first_gold_rank, ndcg10, separating_threshold
from londinium.retrieve.fusion import rrf, weighted
from londinium.retrieve.passages import passage_spans


def test_rrf_adds_weight_over_k_plus_rank():
    fused = dict(rrf([["a", "b", "c"], ["c", "a"]], weights=[1.0, 1.0], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [d for d, _ in rrf([["a", "b", "c"], ["c", "a"]], k=60)] == ["a", "c", "b"]


def test_rrf_weights_decide_between_rankings():
    # alone at rank 1 in each ranking: the heavier ranking's document wins
    assert [d for d, _ in rrf([["x"], ["y"]], weights=[0.8, 0.2], k=1)] == ["x", "y"]
    assert [d for d, _ in rrf([["x"], ["y"]], weights=[0.2, 0.8], k=1)] == ["y", "x"]
    with pytest.raises(ValueError):
        rrf([["x"]], weights=[0.5, 0.5])


def test_weighted_fusion_min_max_normalises_each_ranking():
    fused = dict(weighted([{"a": 12.0, "b": 3.0, "c": 6.0}, {"b": 0.9, "c": 0.4}], [0.5, 0.5]))
    # bm25: a 1, c 1/3, b 0; cosine: b 1, c 0
    assert fused["a"] == pytest.approx(0.5)
    assert fused["b"] == pytest.approx(0.5)
    assert fused["c"] == pytest.approx(0.5 / 3)
    assert dict(weighted([{"a": 2.0, "b": 2.0}], [1.0])) == {"a": 1.0, "b": 1.0}  # all equal: each gets 1


def test_passages_cover_the_text_with_exact_offsets():
    text = "First paragraph, short.\n\n" + "A long line of verse that goes on. " * 20 + "\n\nLast one."
    spans = passage_spans(text, 100)
    assert all(0 < e - s <= 100 for s, e in spans)
    assert all(text[s:e] == text[s:e].strip() for s, e in spans)  # no span starts or ends in whitespace
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # in order, not overlapping
    covered = " ".join(text[s:e] for s, e in spans)
    assert covered.split() == text.split()  # every word once
    assert text[spans[-1][0]:spans[-1][1]].endswith("Last one.")
    assert passage_spans("   \n\n  ", 100) == []


def test_threshold_separates_and_sits_in_the_middle_of_the_gap():
    rows = [(True, 0.9), (True, 0.8), (True, 0.7), (False, 0.3), (False, 0.1)]
    assert separating_threshold(rows) == pytest.approx(0.5)  # between 0.3 and 0.7
    # overlapping: one answerable below the unanswerable; the best cut still refuses both unanswerable
    rows = [(True, 0.9), (True, 0.2), (False, 0.4), (False, 0.3)]
    t = separating_threshold(rows)
    assert 0.4 < t <= 0.9


def test_ranks_and_ndcg_leave_out_the_excluded_document():
    q = Query("spelling", "a line", gold={"folio"}, exclude={"modern"})
    assert first_gold_rank(["modern", "other", "folio"], q) == 2
    assert ndcg10(["modern", "other", "folio"], q) == pytest.approx(1 / math.log2(3))
    assert first_gold_rank(["other"], q) is None
