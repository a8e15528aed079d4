"""Two rankings of documents made one: reciprocal-rank fusion, or a weighted sum of normalised scores.

    rrf([["a", "b"], ["b", "c"]], weights=[0.5, 0.5], k=60)     -> [("b", ...), ("a", ...), ("c", ...)]
    weighted([{"a": 12.0, "b": 3.0}, {"b": 0.9, "c": 0.4}], [0.5, 0.5])

RRF (Cormack, Clarke and Buettcher 2009) adds w / (k + rank) for each ranking a document is in: it
needs no score scale, which BM25 (unbounded) and cosine similarity (-1..1) do not share. The
weighted option min-max normalises each ranking's scores to 0..1 first (a document a ranking did
not return counts 0 there). Ties keep the order in which documents were first seen, rankings in order.
"""

from __future__ import annotations

from typing import Hashable, Sequence


def rrf(rankings: Sequence[Sequence[Hashable]], weights: Sequence[float] | None = None, k: int = 60) -> list[tuple[Hashable, float]]:
    """(document, fused score) best first; rank 1 of a ranking with weight w adds w / (k + 1)."""
    weights = weights if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[Hashable, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, doc in enumerate(ranking, 1):
            fused[doc] = fused.get(doc, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def weighted(scored: Sequence[dict[Hashable, float]], weights: Sequence[float]) -> list[tuple[Hashable, float]]:
    """(document, fused score) best first: the weighted sum of each ranking's min-max normalised scores
    (a ranking whose scores are all equal gives each of its documents 1)."""
    if len(weights) != len(scored):
        raise ValueError(f"{len(weights)} weights for {len(scored)} rankings")
    fused: dict[Hashable, float] = {}
    for scores, w in zip(scored, weights):
        if not scores:
            continue
        lo, hi = min(scores.values()), max(scores.values())
        for doc, s in scores.items():
            fused[doc] = fused.get(doc, 0.0) + w * ((s - lo) / (hi - lo) if hi > lo else 1.0)
    return sorted(fused.items(), key=lambda item: -item[1])
