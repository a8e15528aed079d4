"""The int8 KV cache (`generate.kv_dtype`): the memory it saves, what it costs in quality and in speed.

    .venv/bin/python benchmarks/kv_dtypes.py -w londinium-work [--run main] [--docs 40] [--new 200] [--rounds 5]

1. Memory, from the config alone (`londinium.model.memory`, which a test holds to the bytes of the
   real buffers): one sequence's KV cache at its full context for every preset, float32 and int8.
2. Quality, on the run (`-w`): the first `--docs` validation documents, each cut to the context, are
   scored *through the engine's decode step* (`Decoder.logits` over a SlotCache), one token at a
   time after a one-token prefill, so every key and value a prediction reads went through the cache
   as generation holds it: bits per byte of the predicted tokens for each kv dtype, and the
   difference from float32. (`eval` scores whole windows in one pass and never reads a KV cache, so
   it cannot see this.)
3. Speed: batch-1 greedy decode of `--new` tokens through the engine, the dtypes alternating round
   by round in one process; CPU time of this thread, the median, and each round's ratio against
   float32 (their median).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from londinium.config import KV_DTYPES, PRESETS, ModelConfig
from londinium.model.memory import kv_cache_bytes
from weight_dtypes import FIGURES_HEADER, figures, run_parser


def memory_table() -> None:
    print(f"{'preset':<8} {'context':>7} " + " ".join(f"{d + ' MiB/seq':>16}" for d in KV_DTYPES) + f" {'float32 / int8':>15}")
    for name, preset in PRESETS.items():
        cfg = ModelConfig(**preset["model"])
        sizes = {d: kv_cache_bytes(cfg, 1, cfg.context, d) for d in KV_DTYPES}
        print(f"{name:<8} {cfg.context:>7} " + " ".join(f"{sizes[d] / 2**20:>16.2f}" for d in KV_DTYPES)
              + f" {sizes['float32'] / sizes['int8']:>14.2f}x")


def teacher_forced_bits(model: torch.nn.Module, ids: list[int], kv_dtype: str) -> float:
    """Bits of ids[1:] given the tokens before each, read through a SlotCache of `kv_dtype`."""
    from londinium.infer.decode import Decoder

    slots, decoder = model.new_slot_cache(1, kv_dtype=kv_dtype), Decoder(model)
    first = model.new_kv_cache(1, 1)
    model(torch.tensor([ids[:1]]), kv_cache=first)
    slots.append(first)
    bits = 0.0
    for t, nxt in zip(ids[:-1], ids[1:]):
        logits = decoder.logits(torch.tensor([t]), slots)[0]
        slots.advance()
        bits -= float(logits.log_softmax(-1)[nxt]) / math.log(2)
    return bits


def run_figures(args: argparse.Namespace) -> None:
    from londinium.data.documents import iter_documents
    from londinium.infer import Engine, SamplingParams
    from londinium.model.load import load_run
    from londinium.tokenizer.codec import EOT
    from londinium.workspace import Workspace

    ws = Workspace(Path(args.workspace))
    trained = load_run(ws, args.run, args.checkpoint)
    model, tok, cfg = trained.model, trained.tokenizer, trained.config.model
    docs = [d["text"] for _, d in zip(range(args.docs), iter_documents(ws.corpus_split("val")))]
    new = min(args.new, cfg.context - 8)
    print(f"\n{trained.describe()}; {len(docs)} validation documents (cut to the context) scored through the decode step; "
          f"batch-1 greedy decode of {new} tokens, {torch.get_num_threads()} thread(s), median of {args.rounds} rounds")
    bits = {d: 0.0 for d in KV_DTYPES}
    n_bytes = 0
    with torch.inference_mode():
        for text in docs:
            ids = [tok.token_to_id(EOT), *tok.encode(text).ids][:cfg.context]
            n_bytes += len(tok.decode(ids[1:]).encode("utf-8"))
            for d in KV_DTYPES:
                bits[d] += teacher_forced_bits(model, ids, d)
    engines = {d: Engine(model, tok, kv_dtype=d) for d in KV_DTYPES}
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    prompt = "Thus saith the Lord, "
    tokens = {d: e.generate([prompt], params)[0].token_ids for d, e in engines.items()}  # also the warm-up
    rates: dict[str, list[float]] = {d: [] for d in KV_DTYPES}
    for _ in range(args.rounds):
        for d, e in engines.items():
            t0 = time.thread_time()
            e.generate([prompt], params)
            rates[d].append(new / (time.thread_time() - t0))
    bpb = {d: bits[d] / n_bytes for d in KV_DTYPES}
    print(f"{'kv dtype':<9} {'MiB/seq':>8} " + FIGURES_HEADER)
    for d in KV_DTYPES:
        print(f"{d:<9} {kv_cache_bytes(cfg, 1, cfg.context, d) / 2**20:>8.3f} " + figures(d, bpb, rates, tokens))


def main() -> None:
    ap = run_parser(__doc__, docs=40, new=200)
    args = ap.parse_args()
    if args.quick:
        args.docs, args.new, args.rounds = 2, 20, 1
    torch.set_num_threads(args.threads)
    memory_table()
    if args.workspace:
        run_figures(args)


if __name__ == "__main__":
    main()
