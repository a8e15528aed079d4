"""The retrieval eval: queries with known gold documents cut from the held-out splits, scored per mode.

    queries = make_queries(index, per_kind=60)
    table = score_modes(retriever, queries, modes=("bm25", "vector", "hybrid"))
    refusal = calibrate(retriever, queries)       # threshold from one half, rates on the other

Kinds of query (each from a val/test document, so no tuning ever saw them):
- `line`: a line or sentence (8-40 words) -> its document (a Bible verse -> its chapter's document);
- `spelling`: a line -> a document holding the same words in another spelling (a modern line -> its
  First Folio passage), the document the line was cut from left out of the ranking;
- `misquote`: 6-12 consecutive words with one dropped and one replaced by another corpus word -> its document;
- `keyword`: "Which passage speaks of A, B and C?" with three words of the document that few others use;
- `unanswerable`: questions on topics absent from the corpus (data_files/unanswerable.txt).
Gold is every document that holds the cut text exactly (the Bible repeats verses, and copies of
a text repeat lines), so a retriever is not punished for finding the other copy.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from londinium.retrieve.retriever import Retriever

KINDS = ("line", "spelling", "misquote", "keyword", "unanswerable")


@dataclass
class Query:
    kind: str
    text: str
    gold: set[str] = field(default_factory=set)  # document ids that answer it (empty: unanswerable)
    exclude: set[str] = field(default_factory=set)  # ids left out of the ranking (the spelling query's own document)


def unanswerable_questions(path: Path | None = None) -> list[str]:
    from importlib.resources import files

    text = Path(path).read_text(encoding="utf-8") if path else files("londinium").joinpath("data_files/unanswerable.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def make_queries(index: Any, per_kind: int = 60, seed: int = 0, splits: Iterable[str] = ("val", "test")) -> list[Query]:
    """Queries of every kind (up to `per_kind` each) from the documents of `splits` (all documents when those hold none)."""
    from londinium.index.build import TermFolder

    rng = random.Random(seed)
    docs = index.documents
    held = [d for d in docs if d.split in set(splits)] or list(docs)
    fold = index.term_folder() or TermFolder()  # the index's own folding (none on a user's texts)
    folded_text = {}  # lazily: " ".join(folded words) per document, for the spelling kind

    def folded(d: Any) -> str:
        if d.id not in folded_text:
            folded_text[d.id] = " " + " ".join(fold(d.text)) + " "
        return folded_text[d.id]

    def holders(text: str) -> set[str]:
        return {d.id for d in docs if text in d.text}

    lines = [(d, ln.strip()) for d in held for ln in d.text.splitlines() if 8 <= len(ln.split()) <= 40]
    rng.shuffle(lines)
    queries: list[Query] = []
    for d, ln in lines[:per_kind]:
        queries.append(Query("line", ln, holders(ln)))
    # spelling: a line whose folded words recur in another document that spells them differently
    spelling = 0
    for d, ln in lines[per_kind:]:
        if spelling >= per_kind:
            break
        key = " " + " ".join(fold(ln)) + " "
        if len(key.split()) < 6:
            continue
        others = {e.id for e in index.search(ln, k=10) if e.id != d.id} if key.strip() else set()
        gold = {i for i in others if ln not in docs[index.by_id[i]].text and key in folded(docs[index.by_id[i]])}
        if gold:
            queries.append(Query("spelling", ln, gold, holders(ln)))
            spelling += 1
    vocab = [w for d, ln in lines[:500] for w in ln.split() if w.isalpha()]
    for d, ln in lines[-per_kind:]:
        words = ln.split()
        n = rng.randint(6, min(12, len(words)))
        start = rng.randrange(0, len(words) - n + 1)
        span = words[start:start + n]
        span.pop(rng.randrange(len(span)))
        span[rng.randrange(len(span))] = rng.choice(vocab) if vocab else ""
        queries.append(Query("misquote", " ".join(span), holders(" ".join(words[start:start + n])) or {d.id}))
    df = np.diff(np.asarray(index.retriever.scores["indptr"]))
    vocab_ids = index.retriever.vocab_dict
    for d in rng.sample(held, min(len(held), per_kind * 3)):
        if sum(q.kind == "keyword" for q in queries) >= per_kind:
            break
        words = {}
        for w in d.text.split():
            w = w.strip(".,;:!?'\"()[]").lower()
            t = fold.fold(w) if w.isalpha() and len(w) > 3 else ""
            if t in vocab_ids and vocab_ids[t] < len(df) and 2 <= df[vocab_ids[t]] <= 30:
                words.setdefault(t, w)
        if len(words) >= 3:
            picked = rng.sample(sorted(words.values()), 3)
            queries.append(Query("keyword", f"Which passage speaks of {picked[0]}, {picked[1]} and {picked[2]}?", {d.id}))
    queries += [Query("unanswerable", q) for q in unanswerable_questions()]
    return queries


def first_gold_rank(ids: list[str], q: Query) -> int | None:
    ranked = [i for i in ids if i not in q.exclude]
    return next((r for r, i in enumerate(ranked, 1) if i in q.gold), None)


def ndcg10(ids: list[str], q: Query) -> float:
    ranked = [i for i in ids if i not in q.exclude][:10]
    dcg = sum(1 / math.log2(r + 1) for r, i in enumerate(ranked, 1) if i in q.gold)
    ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(q.gold), 10) + 1))
    return dcg / ideal if ideal else 0.0


def score_modes(retriever: Retriever, queries: list[Query], modes: Iterable[str] = ("bm25", "vector", "hybrid"),
                fusions: Iterable[str] = ("rrf",)) -> dict[str, Any]:
    """Recall@1/5/10, MRR and nDCG@10 per mode (and per kind), with the query latency percentiles."""
    answerable = [q for q in queries if q.gold]
    table: dict[str, Any] = {}
    for mode in modes:
        for fusion in (fusions if mode == "hybrid" else ("rrf",)):
            label = mode if mode != "hybrid" or len(tuple(fusions)) == 1 else f"hybrid-{fusion}"
            rows, times = [], []
            for q in answerable:
                t0 = time.perf_counter()
                hits = retriever.retrieve(q.text, k=10 + len(q.exclude), mode=mode, fusion=fusion)
                times.append(time.perf_counter() - t0)
                ids = [h.id for h in hits]
                r = first_gold_rank(ids, q)
                rows.append((q.kind, r, ndcg10(ids, q)))
            table[label] = {"all": _metrics(rows), **{k: _metrics([x for x in rows if x[0] == k]) for k in KINDS[:-1]},
                            "p50_ms": round(float(np.percentile(times, 50)) * 1000, 2),
                            "p95_ms": round(float(np.percentile(times, 95)) * 1000, 2)}
    return table


def _metrics(rows: list[tuple[str, int | None, float]]) -> dict[str, float]:
    n = len(rows)
    if not n:
        return {"queries": 0}
    within = lambda k: sum(1 for _, r, _ in rows if r is not None and r <= k) / n  # noqa: E731
    return {"queries": n, "recall@1": round(within(1), 4), "recall@5": round(within(5), 4), "recall@10": round(within(10), 4),
            "mrr": round(sum(1 / r for _, r, _ in rows if r) / n, 4), "ndcg@10": round(sum(x for _, _, x in rows) / n, 4)}


def calibrate(retriever: Retriever, queries: list[Query], seed: int = 0, mode: str | None = None) -> dict[str, Any]:
    """The refusal threshold chosen on one half of the queries (`separating_threshold`), and its refusal
    and false-refusal rates on the other half."""
    rng = random.Random(seed)
    supports = []
    for q in queries:
        hits = retriever.retrieve(q.text, k=1, mode=mode)
        supports.append((bool(q.gold), hits[0].support if hits else 0.0))
    order = list(range(len(supports)))
    rng.shuffle(order)
    half = [supports[i] for i in order[: len(order) // 2]], [supports[i] for i in order[len(order) // 2:]]
    threshold = separating_threshold(half[0])

    def rates(rows: list[tuple[bool, float]]) -> dict[str, float]:
        ok = [s for a, s in rows if a]
        bad = [s for a, s in rows if not a]
        return {"answerable": len(ok), "unanswerable": len(bad),
                "refusal": round(sum(s < threshold for s in bad) / max(1, len(bad)), 4),
                "false_refusal": round(sum(s < threshold for s in ok) / max(1, len(ok)), 4)}

    return {"threshold": threshold, "calibration": rates(half[0]), "held_out": rates(half[1])}


def separating_threshold(rows: list[tuple[bool, float]]) -> float:
    """The support below which to refuse that best separates unanswerable from answerable queries
    (the most refusals less false refusals, Youden's J); where a range does equally well, its middle,
    as far from both sides as the data allow."""
    values = sorted({s for _, s in rows} | {0.0, 1.0001})
    ok = np.array([s for a, s in rows if a])
    bad = np.array([s for a, s in rows if not a])

    def j(t: float) -> float:
        return (float((bad < t).mean()) if len(bad) else 0.0) - (float((ok < t).mean()) if len(ok) else 0.0)

    # between two neighbouring observed values every threshold does the same: try one in each gap
    cuts = [(lo + hi) / 2 for lo, hi in zip(values, values[1:])]
    scores = [j(t) for t in cuts]
    best = max(scores)
    tied = [t for t, sc in zip(cuts, scores) if sc >= best - 1e-12]
    lo = max(v for v in values if v < tied[0])
    hi = min(v for v in values if v > tied[-1])
    middle = (lo + hi) / 2
    if j(middle) < best - 1e-12:  # the best gaps are not contiguous: the middle one of them
        middle = tied[len(tied) // 2]
    return round(min(1.0, middle), 4)
