"""The corpus search index: build time and size, query latency, against named peers in the same run.

    cp -r londinium-work /tmp/bench-ws        # a workspace with a built corpus (the index is written into it)
    .venv/bin/python benchmarks/search_index.py -w /tmp/bench-ws [--queries 300 --rounds 3]

- build: `build_index` (every word spelling-folded by `londinium.spelling.fold_word`, then bm25s)
  against bm25s on its own -- `bm25s.tokenize` (lower case, its default word pattern, no folding)
  and `BM25.index` on the same documents. The ratio is the price of folding and of writing the
  index atomically.
- query: `CorpusIndex.search(q, k=10)` (fold the query, BM25 top 10, snippets with offsets)
  against a brute-force scan: the lower-cased query as a substring of every lower-cased document,
  the first 10 that contain it. Queries are 6-word spans cut from random documents, so both can
  find the source; the quality line says how often the index ranks the source document first and
  in its top 10 (BM25 knows no word order: a span of common words, or one the Folio and modern
  texts of a play share, can rank another document first). The scan has no ranking: it returns
  documents in corpus order.

Timed in one process, figures are medians over --rounds (build) or over queries (p50, p99). The
machine may be shared: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from londinium.config import load_config
from londinium.index.build import build_index, iter_corpus
from londinium.index.search import CorpusIndex
from londinium.spelling import WORD
from londinium.workspace import Workspace


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def queries(texts: list[str], n: int, words: int, seed: int) -> list[tuple[int, str]]:
    """(document index, query) pairs: `words` consecutive words of a random document."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        i = rng.randrange(len(texts))
        spans = [m.span() for m in WORD.finditer(texts[i])]
        if len(spans) < words:
            continue
        j = rng.randrange(len(spans) - words + 1)
        out.append((i, texts[i][spans[j][0]:spans[j + words - 1][1]]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-w", "--workspace", required=True, help="a workspace with a built corpus (writable: the index goes into it)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--words", type=int, default=6, help="words per query")
    ap.add_argument("--rounds", type=int, default=3, help="builds timed of each kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.rounds = 5, 1
    import bm25s

    ws, cfg = Workspace(args.workspace), load_config()
    quiet = lambda m: None  # noqa: E731
    texts = [row["text"] for _, row in iter_corpus(ws, cfg.index.splits)]
    corpus_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    ours_build, peer_build = [], []
    for _ in range(args.rounds):  # alternating, so a busy spell hurts both
        t = time.perf_counter()
        meta = build_index(ws, cfg, force=True, log=quiet, show_progress=False)
        ours_build.append(time.perf_counter() - t)
        t = time.perf_counter()
        peer = bm25s.BM25()
        peer.index(bm25s.tokenize(texts, stopwords=None, show_progress=False), show_progress=False)
        peer_build.append(time.perf_counter() - t)
    t = time.perf_counter()
    index = CorpusIndex.load(ws, cfg.index.snippet_chars)
    load_s = time.perf_counter() - t

    qs = queries(texts, args.queries, args.words, args.seed)
    lowered = [t.lower() for t in texts]
    ours_lat, scan_lat, hit1, hit10, scan_found = [], [], 0, 0, 0
    for doc, q in qs:
        t = time.perf_counter()
        hits = index.search(q, k=10)
        ours_lat.append(time.perf_counter() - t)
        hit1 += bool(hits) and hits[0].id == index.documents[doc].id
        hit10 += index.documents[doc].id in [h.id for h in hits]
        t = time.perf_counter()
        ql = q.lower()
        found = []
        for i, text in enumerate(lowered):
            if ql in text:
                found.append(i)
                if len(found) == 10:
                    break
        scan_lat.append(time.perf_counter() - t)
        scan_found += doc in found

    b_ours, b_peer = statistics.median(ours_build), statistics.median(peer_build)
    print(f"corpus: {len(texts):,} documents, {corpus_mb:.1f} MB of text")
    print(f"build:  londinium index {b_ours:.2f} s (median of {args.rounds}), bm25s.tokenize + index {b_peer:.2f} s "
          f"-> ours takes {b_ours / b_peer:.2f}x the peer's time")
    print(f"index:  {meta['bytes'] / 1e6:.1f} MB on disk ({meta['bytes'] / 1e6 / corpus_mb:.2f}x the text), "
          f"{meta['terms']:,} folded terms (bm25s' own tokenizer: {len(peer.vocab_dict):,}); load {load_s:.2f} s")
    p50, p99 = percentile(ours_lat, 50) * 1e3, percentile(ours_lat, 99) * 1e3
    s50, s99 = percentile(scan_lat, 50) * 1e3, percentile(scan_lat, 99) * 1e3
    print(f"query ({len(qs)} x {args.words}-word spans, k=10): index p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
          f"substring scan p50 {s50:.2f} ms, p99 {s99:.2f} ms -> index {s50 / p50:.1f}x faster at p50, {s99 / p99:.1f}x at p99")
    print(f"quality: the index ranks the source document first for {hit1 / len(qs):.0%} of queries and in its top 10 "
          f"for {hit10 / len(qs):.0%}; the scan's first 10 contain it for {scan_found / len(qs):.0%}")


if __name__ == "__main__":
    main()
