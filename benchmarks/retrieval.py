"""The retrieval eval: BM25, vector and hybrid retrieval, refusal calibration and citation validity.

    cp -r londinium-work /tmp/rag-ws     # a workspace with a built corpus and index (`index build`)
    .venv/bin/python benchmarks/retrieval.py -w /tmp/rag-ws [--per-kind 60] [--set retrieve.embedder=wordllama]
    .venv/bin/python benchmarks/retrieval.py -w /tmp/rag-ws --quick      # a few queries: what the tests run

Builds the vector index with the [retrieve] settings given (`--set`, as on the command line), cuts
queries from the val/test splits (`retrieve/evaluate.py`: lines, spelling variants, misquotes,
keyword questions, unanswerable questions), and prints for each mode Recall@1/5/10, MRR, nDCG@10
and the query latency (p50, p95), per kind of query; the hybrid rows for both fusions; the refusal
threshold calibrated on one half of the queries with its refusal and false-refusal rates on the
other half (in the configured mode); and the share of `ask` citations that check out against the
corpus. The machine may be shared: read the latency as an order of magnitude.
"""

from __future__ import annotations

import argparse
import json
import os

# One BLAS thread: the query is a small matrix-vector product, and threads only wait on each other.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from londinium.config import load_config  # noqa: E402
from londinium.retrieve.answer import ask  # noqa: E402
from londinium.retrieve.evaluate import KINDS, calibrate, make_queries, score_modes  # noqa: E402
from londinium.retrieve.retriever import Retriever  # noqa: E402
from londinium.retrieve.vectors import build_vectors  # noqa: E402
from londinium.workspace import Workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--per-kind", type=int, default=60, help="queries of each kind (default 60)")
    ap.add_argument("--quick", action="store_true", help="8 queries of each kind")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    cfg = load_config(overrides=args.overrides)
    build_vectors(ws, cfg)
    retriever = Retriever.load(ws, cfg, "hybrid")
    queries = make_queries(retriever.index, per_kind=8 if args.quick else args.per_kind)
    counts = {k: sum(q.kind == k for q in queries) for k in KINDS}
    print(f"queries: {counts} (embedder {retriever.embedder.name}, passages of {cfg.retrieve.passage_chars} chars, "
          f"vector weight {cfg.retrieve.vector_weight})")
    table = score_modes(retriever, queries, modes=("bm25", "vector", "hybrid"), fusions=("rrf", "weighted"))
    print("\n| mode | R@1 | R@5 | R@10 | MRR | nDCG@10 | p50 ms | p95 ms | " + " | ".join(f"R@5 {k}" for k in KINDS[:-1]) + " |")
    print("|---" * (8 + len(KINDS) - 1) + "|")
    for mode, row in table.items():
        a = row["all"]
        print(f"| {mode} | {a['recall@1']:.3f} | {a['recall@5']:.3f} | {a['recall@10']:.3f} | {a['mrr']:.3f} | {a['ndcg@10']:.3f} | "
              f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | " + " | ".join(f"{row[k].get('recall@5', float('nan')):.3f}" for k in KINDS[:-1]) + " |")
    best = max((m for m in table if m.startswith("hybrid")), key=lambda m: table[m]["all"]["recall@5"])
    print(f"\nhybrid ({best}) recall@5 - bm25 recall@5: {100 * (table[best]['all']['recall@5'] - table['bm25']['all']['recall@5']):+.1f} points")
    refusal = calibrate(retriever, queries, mode=cfg.retrieve.mode)
    print(f"refusal ({cfg.retrieve.mode}): threshold {refusal['threshold']:.3f} from the calibration half "
          f"{refusal['calibration']}; held-out half: refusal {refusal['held_out']['refusal']:.1%} of unanswerable, "
          f"false refusal {refusal['held_out']['false_refusal']:.1%} of answerable")
    retriever.settings.min_support = refusal["threshold"]
    citations = [c for q in queries if q.gold for c in ask(retriever, q.text, retrieval_mode=cfg.retrieve.mode).citations]
    valid = sum(c.valid for c in citations)
    print(f"citations: {valid}/{len(citations)} valid ({valid / max(1, len(citations)):.1%}): the id exists and the quote is its text at the offsets")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"queries": counts, "modes": table, "refusal": refusal, "citations": [valid, len(citations)]}, f, indent=2)


if __name__ == "__main__":
    main()
