"""Hybrid retrieval against the stack a tutorial builds: LangChain's EnsembleRetriever of BM25Retriever
and a vector store, on the same passages with the same embedding model, in the same run.

    pip install -e '.[rag-peer]'
    .venv/bin/python benchmarks/retrieval_peer.py -w /tmp/rag-ws [--per-kind 30] [--quick]

The workspace needs its search index and vector index (benchmarks/retrieval.py builds both). The
peer gets londinium's passages (`vectors/passages.npy`, the chunks the vector index embedded) as
LangChain documents, `BM25Retriever` (rank_bm25's BM25Okapi over them) and `InMemoryVectorStore`
(exact cosine) with londinium's embedder wrapped as LangChain `Embeddings`, fused by
`EnsembleRetriever` (weighted reciprocal-rank fusion, its default c = 60) with the same weights as
`retrieve.vector_weight`. londinium runs `retrieve()` in hybrid mode with RRF (the same fusion), and
in its default mode. Both rank documents: a passage counts for its document, the first one wins.
Printed: recall@5 over the answerable queries of the retrieval eval, query latency p50/p95, and the
ratios. Build time is printed too, not compared (londinium's indexes are built by their stages).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from londinium.config import load_config  # noqa: E402
from londinium.retrieve.evaluate import first_gold_rank, make_queries  # noqa: E402
from londinium.retrieve.retriever import Retriever  # noqa: E402
from londinium.workspace import Workspace  # noqa: E402


def peer(retriever: Retriever, depth: int, vector_weight: float):
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    class Wrapped(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return retriever.embedder.embed(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return retriever.embedder.embed([text])[0].tolist()

    docs = retriever.index.documents
    chunks = [Document(page_content=docs[d].text[s:e], metadata={"id": docs[d].id}) for d, s, e in retriever.vectors.passages.tolist()]
    bm25 = BM25Retriever.from_documents(chunks, k=depth)
    store = InMemoryVectorStore(Wrapped())
    store.add_documents(chunks)
    return EnsembleRetriever(retrievers=[bm25, store.as_retriever(search_kwargs={"k": depth})],
                             weights=[1 - vector_weight, vector_weight])


def first_ids(passages: list, k: int) -> list[str]:
    seen: list[str] = []
    for p in passages:
        i = p.metadata["id"]
        if i not in seen:
            seen.append(i)
    return seen[:k]


def measure(queries: list, run) -> tuple[float, float, float]:
    hits, times = 0, []
    for q in queries:
        t0 = time.perf_counter()
        ids = run(q.text)
        times.append(time.perf_counter() - t0)
        r = first_gold_rank(ids, q)
        hits += r is not None and r <= 5
    return hits / len(queries), float(np.percentile(times, 50)) * 1000, float(np.percentile(times, 95)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--per-kind", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="4 queries of each kind")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    cfg = load_config(overrides=[*args.overrides, "retrieve.fusion=rrf"])
    retriever = Retriever.load(ws, cfg, "hybrid")
    queries = [q for q in make_queries(retriever.index, per_kind=4 if args.quick else args.per_kind) if q.gold]
    t0 = time.perf_counter()
    ensemble = peer(retriever, cfg.retrieve.depth, cfg.retrieve.vector_weight)
    built = time.perf_counter() - t0
    print(f"{len(queries)} answerable queries; {len(retriever.vectors.passages):,} passages; embedder {retriever.embedder.name}; "
          f"LangChain's retrievers built in {built:.1f} s")
    default = load_config().retrieve.mode
    rows = {
        "LangChain EnsembleRetriever (BM25Retriever + InMemoryVectorStore)": measure(queries, lambda t: first_ids(ensemble.invoke(t), 10)),
        "londinium retrieve(), hybrid, RRF": measure(queries, lambda t: [p.id for p in retriever.retrieve(t, k=10, mode="hybrid")]),
        f"londinium retrieve(), default ({default})": measure(queries, lambda t: [p.id for p in retriever.retrieve(t, k=10, mode=default)]),
    }
    print("\n| retriever | recall@5 | p50 ms | p95 ms |\n|---|---|---|---|")
    for name, (recall, p50, p95) in rows.items():
        print(f"| {name} | {recall:.3f} | {p50:.1f} | {p95:.1f} |")
    (lc_r, lc_p50, _), (ld_r, ld_p50, _) = list(rows.values())[:2]
    print(f"\nlondinium hybrid vs LangChain: recall@5 {100 * (ld_r - lc_r):+.1f} points, p50 latency {lc_p50 / ld_p50:.1f}x lower")


if __name__ == "__main__":
    main()
