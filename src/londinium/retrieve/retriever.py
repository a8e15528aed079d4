"""`retrieve()`: the one way search, MCP and `ask` find passages: BM25, vectors, or both fused.

    retriever = Retriever.load(ws, cfg)                       # mode from retrieve.mode
    for p in retriever.retrieve("vpon this blasted heath", k=5, source="shakespeare"):
        p.id, p.start, p.end, p.text, p.score, p.support

Each retriever ranks documents (BM25 over the search index's documents; the vector index by each
document's best passage), `fusion.py` makes one ranking of them, and each of the k best documents
is cited by one span: the BM25 snippet (where the query's words cluster) or the best vector passage,
whichever holds more of the query's words. A passage's `support` (0..1) is what `ask` refuses on: the
share of the query's words, weighted by their rarity in the corpus (BM25's idf; a word the corpus
never uses weighs most), that its document holds. On the retrieval eval it separated answerable from
unanswerable questions far better than the span's share, BM25's score per word or the cosine
similarity (docs/LOG.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from londinium.config import Config, RetrieveConfig
from londinium.retrieve.vectors import RetrieveError
from londinium.workspace import Workspace

MAX_K = 100
MODES = ("bm25", "vector", "hybrid")
FUSIONS = ("rrf", "weighted")


@dataclass
class Passage:
    """One retrieved passage: the document, the cited span and how it was found."""

    rank: int
    id: str
    source: str
    title: str
    period: list[int]
    split: str
    license: str
    start: int  # character offsets of the span in the document text
    end: int
    text: str  # == document text[start:end]
    score: float  # the fused score (BM25 score or cosine similarity in a single mode)
    support: float  # 0..1: how well the span supports the query (see the module docstring)
    bm25_rank: int | None = None
    vector_rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retriever:
    """The search index, and the vector index with its embedder when the mode needs them."""

    def __init__(self, index: Any, settings: RetrieveConfig, vectors: Any = None, embedder: Any = None):
        self.index, self.settings, self.vectors, self.embedder = index, settings, vectors, embedder
        # Words become the search index's terms as the index folds them (the corpus profile's folding per
        # source: none for a user's texts, early-modern for the default corpus); a term of another
        # folding is not in the index's vocabulary and would count as missing from every passage.
        self.fold = index.query_terms
        n = len(index.documents)
        df = np.diff(np.asarray(index.retriever.scores["indptr"]))
        self._vocab = index.retriever.vocab_dict
        self._idf = np.log(1 + (n - df + 0.5) / (df + 0.5))  # BM25's idf, per term column
        self._unknown_idf = math.log(1 + (n + 0.5) / 0.5)  # a word the corpus never uses weighs most
        self._source = np.array([d.source for d in index.documents], dtype=object)
        self._split = np.array([d.split for d in index.documents], dtype=object)

    @classmethod
    def load(cls, ws: Workspace, cfg: Config, mode: str | None = None) -> Retriever:
        """The search index, plus the vector index and its embedder unless the mode is 'bm25'."""
        from londinium.index.search import CorpusIndex
        from londinium.retrieve.embedders import open_embedder
        from londinium.retrieve.vectors import VectorIndex

        mode = check_mode(mode or cfg.retrieve.mode)
        index = CorpusIndex.load(ws, cfg.index.snippet_chars)
        if mode == "bm25":
            return cls(index, cfg.retrieve)
        vectors = VectorIndex.load(ws)
        vectors.check_against(index.documents)
        embedder = open_embedder(ws, cfg)
        if embedder.name != vectors.embedder_name:
            raise RetrieveError(f"the vector index was embedded with {vectors.embedder_name}, retrieve.embedder is now {embedder.name}: "
                                f"run `londinium index vectors -w {ws.root}`")
        return cls(index, cfg.retrieve, vectors, embedder)

    # ---- filters -------------------------------------------------------------------------------

    def _keep(self, source: str | None, split: str | None, period_from: int | None, period_to: int | None) -> np.ndarray | None:
        """A boolean per document, or None without filters; unknown values are errors listing the known ones."""
        from londinium.index.search import period_overlaps

        if source is not None and source not in self.index.sources:
            raise RetrieveError(f"source filter {source!r}: no such source in the index; sources: {', '.join(self.index.sources)}")
        if split is not None and split not in self.index.splits:
            raise RetrieveError(f"split filter {split!r}: not indexed; indexed splits: {', '.join(self.index.splits)}")
        if period_from is not None and period_to is not None and period_from > period_to:
            raise RetrieveError(f"period filter: period_from ({period_from}) is after period_to ({period_to})")
        if source is None and split is None and period_from is None and period_to is None:
            return None
        keep = np.ones(len(self.index.documents), dtype=bool)
        if source is not None:
            keep &= self._source == source
        if split is not None:
            keep &= self._split == split
        if period_from is not None or period_to is not None:
            keep &= np.array([period_overlaps(d.period, period_from, period_to) for d in self.index.documents])
        if not keep.any():
            raise RetrieveError("no indexed document passes the filters (source, split, period); widen them")
        return keep

    # ---- support -------------------------------------------------------------------------------

    def _weights(self, query_terms: set[str]) -> dict[str, float]:
        return {t: float(self._idf[self._vocab[t]]) if self._vocab.get(t, len(self._idf)) < len(self._idf) else self._unknown_idf
                for t in query_terms}

    def supports(self, query_terms: set[str], numbers: list[int]) -> list[float]:
        """Each document's support for the query: the idf-weighted share of the query's terms it holds,
        read from the BM25 index's postings (each term's column lists its documents) -- folding the
        documents' text instead was most of a query's time."""
        weights = self._weights(query_terms)
        total = sum(weights.values())
        if not numbers or total <= 0:
            return [0.0] * len(numbers)
        scores = self.index.retriever.scores
        indptr, indices = scores["indptr"], scores["indices"]
        docs = np.asarray(numbers)
        held = np.zeros(len(docs))
        for t, w in weights.items():
            col = self._vocab.get(t)
            if col is not None and col < len(indptr) - 1:
                held += w * np.isin(docs, indices[indptr[col]:indptr[col + 1]])
        return (held / total).tolist()

    def coverage(self, query_terms: set[str], text: str) -> float:
        """The idf-weighted share of the query's distinct terms that occur in `text`."""
        if not query_terms:
            return 0.0
        found = set(self.fold(text))
        weight = self._weights(query_terms)
        total = sum(weight.values())
        return float(sum(w for t, w in weight.items() if t in found) / total) if total > 0 else 0.0

    # ---- retrieval -----------------------------------------------------------------------------

    def retrieve(self, query: str, k: int | None = None, mode: str | None = None, fusion: str | None = None,
                 source: str | None = None, split: str | None = None, period_from: int | None = None,
                 period_to: int | None = None) -> list[Passage]:
        """The k best passages for `query`, best first (fewer when fewer documents match)."""
        s = self.settings
        k = s.k if k is None else k
        mode, fusion = check_mode(mode or s.mode), fusion or s.fusion
        if fusion not in FUSIONS:
            raise RetrieveError(f"fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
        if not isinstance(query, str) or not query.strip():
            raise RetrieveError("the query is empty; give some words to look for")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RetrieveError(f"k = {k!r}: ask for 1 to {MAX_K} passages")
        if mode != "bm25" and self.vectors is None:
            raise RetrieveError(f"mode {mode!r} needs the vector index: load the retriever with that mode (run `londinium index vectors` first)")
        keep = self._keep(source, split, period_from, period_to)
        terms = set(self.fold(query))
        depth = k if mode == "bm25" else max(k, s.depth)  # alone, BM25 needs no candidates beyond k
        bm25_hits = []
        if mode != "vector" and terms:
            bm25_hits = self.index.search(query, k=min(depth, MAX_K), source=source, split=split,
                                          period_from=period_from, period_to=period_to)
        vector_hits = None
        if mode != "bm25":
            query_vector = self.embedder.embed([query])[0]
            vector_hits = self.vectors.search(query_vector, depth, keep) if np.any(query_vector) else []
        if mode == "bm25" and not terms:
            raise RetrieveError(f"query {query!r} has no words to search for")
        by_id = self.index.by_id
        bm25 = {by_id[h.id]: h for h in bm25_hits}
        vec = {h.document: h for h in vector_hits or []}
        if mode == "bm25":
            ranked = [(by_id[h.id], h.score) for h in bm25_hits]
        elif mode == "vector":
            ranked = [(h.document, h.score) for h in vector_hits]
        elif fusion == "rrf":
            ranked = _fuse_rrf(list(bm25), list(vec), s)
        else:
            from londinium.retrieve.fusion import weighted

            ranked = weighted([{d: h.score for d, h in bm25.items()}, {d: h.score for d, h in vec.items()}],
                              [1 - s.vector_weight, s.vector_weight])
        bm25_rank = {d: r for r, d in enumerate(bm25, 1)}
        vector_rank = {d: r for r, d in enumerate(vec, 1)}
        out = []
        ranked = ranked[:k]
        support_of = dict(zip((n for n, _ in ranked), self.supports(terms, [n for n, _ in ranked])))
        for number, score in ranked:
            doc = self.index.documents[number]
            spans = []
            if number in bm25:
                spans.append((bm25[number].snippet_start, bm25[number].snippet_end))
            if number in vec:
                spans.append((vec[number].start, vec[number].end))
            start, end = spans[0]
            if len(spans) > 1:  # the span that holds more of the query
                _, start, end = max((self.coverage(terms, doc.text[a:b]), a, b) for a, b in spans)
            support = support_of[number]
            out.append(Passage(len(out) + 1, doc.id, doc.source, doc.title, doc.period, doc.split, doc.license, start, end,
                               doc.text[start:end], round(float(score), 6), round(support, 4),
                               bm25_rank.get(number), vector_rank.get(number)))
        return out


def _fuse_rrf(bm25: list[int], vectors: list[int], s: RetrieveConfig) -> list[tuple[int, float]]:
    from londinium.retrieve.fusion import rrf

    return rrf([bm25, vectors], [1 - s.vector_weight, s.vector_weight], s.rrf_k)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise RetrieveError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    return mode
