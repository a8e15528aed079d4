"""Tokenizer training time and encoding throughput, against GPT-2's tokenizer in tiktoken and transformers.

    .venv/bin/python benchmarks/tokenizer_speed.py -w londinium-work          # after `londinium corpus build`
    .venv/bin/python benchmarks/tokenizer_speed.py -w londinium-work --mb 2   # a smaller encode sample

Training: a byte-level BPE of `--vocab` tokens on the workspace's whole train split (what
`londinium tokenizer train` does, without the report). There is no peer for training: GPT-2's
tokenizer cannot be retrained in tiktoken.

Encoding: the same sample of train documents (the first `--mb` MB) through
- londinium's tokenizer (the one just trained): batch calls of 256 documents (the shard path),
  the same with the library's parallelism off (TOKENIZERS_PARALLELISM=false), one call per
  document, and the whole shard writer (`encode_split`: JSONL in, .bin out);
- the same vocabulary loaded into tiktoken (not used by londinium: a measure of what a faster BPE
  engine would buy; the script also counts documents where its ids differ from tokenizers');
- GPT-2 (50,257 tokens) built from the same encoder.json/vocab.bpe in three libraries: `tokenizers`
  (the same engine as ours, so vocabulary size is the only difference), `tiktoken` (batch with as
  many threads as cores, and one call per document) and `transformers` (GPT2TokenizerFast).
Each figure is the best of `--repeats` rounds; a round runs every case once, in one process, so
load from other processes hits all cases alike. On a shared machine absolute figures are noisy. The named peer of every ratio is
tiktoken's GPT-2 batch encode.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tokenizers import Tokenizer

from londinium.config import TokenizerConfig
from londinium.data.documents import iter_texts
from londinium.data.shards import encode_split
from londinium.files import write_jsonl
from londinium.tokenizer import SPECIAL_TOKENS, encode, encode_batch
from londinium.tokenizer.gpt2 import gpt2_files, gpt2_tiktoken, gpt2_tokenizer, gpt2_transformers
from londinium.tokenizer.train import train_bpe
from londinium.workspace import Workspace, default_cache_dir

BATCH = 256


def batched(texts: list[str], n: int = BATCH) -> list[list[str]]:
    return [texts[i : i + n] for i in range(0, len(texts), n)]


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """(seconds, tokens) of one run of fn, which returns the number of tokens it produced."""
    t0 = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - t0, tokens


def as_tiktoken(tok: Tokenizer) -> Any:
    """Our vocabulary in tiktoken (ranks = our ids): how much a faster BPE engine would buy."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    # GPT-2's byte <-> printable-character table, which byte-level token strings are written in.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    to_byte = {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(rest)}
    ranks = {bytes(to_byte[c] for c in t): i for t, i in tok.get_vocab().items() if t not in SPECIAL_TOKENS}
    return tiktoken.Encoding("londinium", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={t: tok.token_to_id(t) for t in SPECIAL_TOKENS})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-w", "--workspace", default="londinium-work")
    ap.add_argument("--vocab", type=int, default=TokenizerConfig().vocab_size)
    ap.add_argument("--mb", type=float, default=4.0, help="MB of train documents in the encode sample")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.vocab, args.mb, args.repeats = 300, 0.02, 1

    ws = Workspace(args.workspace)
    train_path = ws.corpus_split("train")
    texts_all = list(iter_texts(train_path))
    total_mb = sum(len(t.encode("utf-8")) for t in texts_all) / 1e6
    print(f"cores: {os.cpu_count()}; train split: {len(texts_all)} documents, {total_mb:.1f} MB ({train_path})")

    t0 = time.perf_counter()
    tok = train_bpe(texts_all, args.vocab, show_progress=False)
    train_s = time.perf_counter() - t0
    print(f"training: vocabulary {tok.get_vocab_size()} in {train_s:.1f} s ({total_mb / train_s:.2f} MB/s)\n")

    sample, size = [], 0
    for t in texts_all:
        if size >= args.mb * 1e6:
            break
        sample.append(t)
        size += len(t.encode("utf-8"))
    mb = size / 1e6

    files = gpt2_files(default_cache_dir())
    g2_tok, g2_tt = gpt2_tokenizer(files), gpt2_tiktoken(files)
    tmp = Path(tempfile.mkdtemp(prefix="tokbench-"))
    g2_hf = gpt2_transformers(files, tmp / "gpt2-hf")
    jsonl = tmp / "sample.jsonl"
    write_jsonl(jsonl, ({"text": t} for t in sample))
    threads = os.cpu_count() or 1
    ours_tt = as_tiktoken(tok)
    differ = sum(a != b for a, b in zip(encode_batch(tok, sample), ours_tt.encode_ordinary_batch(sample, num_threads=threads)))

    def ours_batch() -> int:
        return sum(len(ids) for b in batched(sample) for ids in encode_batch(tok, b))

    def ours_serial_lib() -> int:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by the library on every call
        try:
            return ours_batch()
        finally:
            del os.environ["TOKENIZERS_PARALLELISM"]

    cases: list[tuple[str, Callable[[], int]]] = [
        ("londinium, batch of 256 docs", ours_batch),
        ("londinium, batch, parallelism off", ours_serial_lib),
        ("londinium, one call per doc", lambda: sum(len(encode(tok, t)) for t in sample)),
        ("londinium, shard writer (jsonl -> .bin)", lambda: encode_split(tok, jsonl, tmp / "s.bin", tmp / "s.meta.json", "train", "-", BATCH)["tokens"] - len(sample)),
        (f"londinium vocab in tiktoken ({threads} thr.)", lambda: sum(len(ids) for b in batched(sample) for ids in ours_tt.encode_ordinary_batch(b, num_threads=threads))),
        ("GPT-2 in tokenizers, batch of 256", lambda: sum(len(ids) for b in batched(sample) for ids in encode_batch(g2_tok, b))),
        (f"GPT-2 in tiktoken, batch ({threads} threads)", lambda: sum(len(ids) for b in batched(sample) for ids in g2_tt.encode_ordinary_batch(b, num_threads=threads))),
        ("GPT-2 in tiktoken, one call per doc", lambda: sum(len(g2_tt.encode_ordinary(t)) for t in sample)),
        ("GPT-2 in transformers, batch of 256", lambda: sum(len(ids) for b in batched(sample) for ids in g2_hf(b)["input_ids"])),
    ]
    for _, fn in cases:
        fn()  # warm-up: thread pools, BPE caches
    # Rounds alternate over all cases, so load from other processes on the machine hits all alike.
    results: dict[str, tuple[float, int]] = {}
    for _ in range(args.repeats):
        for name, fn in cases:
            secs, tokens = timed(fn)
            results[name] = (min(secs, results.get(name, (float("inf"), 0))[0]), tokens)
    peer = f"GPT-2 in tiktoken, batch ({threads} threads)"
    peer_rate = mb / results[peer][0]
    print(f"encode sample: {len(sample)} documents, {mb:.2f} MB; best of {args.repeats}")
    print(f"{'':42s} {'MB/s':>7s} {'Mtok/s':>7s} {'tokens':>10s} {'vs tiktoken GPT-2':>18s}")
    for name, (secs, tokens) in results.items():
        print(f"{name:42s} {mb / secs:7.2f} {tokens / secs / 1e6:7.2f} {tokens:10d} {mb / secs / peer_rate:17.2f}x")
    print(f"londinium's vocabulary in tiktoken gives other ids than tokenizers for {differ} of {len(sample)} documents")
    print(json.dumps({"train_s": round(train_s, 2), "train_mb": round(total_mb, 2), "encode_mb": round(mb, 2),
                      "mb_per_s": {k: round(mb / s, 3) for k, (s, _) in results.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
