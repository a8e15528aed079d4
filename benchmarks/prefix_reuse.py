"""Prefix reuse: time to first token when 8 requests share a 200-token prefix, with and without it.

    .venv/bin/python benchmarks/prefix_reuse.py                    # both shapes, 5 rounds
    .venv/bin/python benchmarks/prefix_reuse.py --shapes tiny --concurrency 8 --prefix 200 --threads 1

Each round, `concurrency` requests arrive together, all starting with the same `prefix` random
tokens (a system prompt, few-shot examples) followed by 20 tokens of their own, and ask for 32 new
tokens (greedy). The same engine serves them with the prefix cache on and off
(`prefix_cache_tokens`), alternating round by round; the cache is emptied before each "on" round,
so the first request of the round computes the prefix and the others reuse it. Printed: median
TTFT, p95 TTFT, whole-batch wall time, prompt tokens computed, and the on/off ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from londinium.config import PRESETS, ModelConfig
from londinium.infer import Engine, SamplingParams
from londinium.model.cache import PrefixCache
from londinium.model.gpt import GPT

SHAPES = {
    "6x384": dict(n_layer=6, n_head=6, n_embd=384, context=256, vocab_size=8192),
    "tiny": dict(PRESETS["tiny"]["model"], vocab_size=8192),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", type=int, default=200)
    ap.add_argument("--suffix", type=int, default=20)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.prefix, args.suffix, args.new, args.concurrency, args.rounds, args.threads = 32, 4, 2, 2, 1, args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    from londinium.tokenizer.train import train_bpe

    tok = train_bpe(["Shall I compare thee to a summer's day? Thou art more lovely and more temperate."] * 50, 1000, show_progress=False)
    for name in args.shapes:
        shape = dict(SHAPES[name], context=max(256, args.prefix + args.suffix + args.new))
        torch.manual_seed(0)
        model = GPT(ModelConfig(**shape)).eval()
        engine = Engine(model, tok, max_running=16, max_step_tokens=512)
        params = SamplingParams(max_tokens=args.new, temperature=0.0, ignore_eos=True)
        figures: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p95": [], "wall": [], "computed": []} for k in ("off", "on")}
        for r in range(args.rounds):
            g = torch.Generator().manual_seed(r)
            prefix = torch.randint(1, shape["vocab_size"], (args.prefix,), generator=g).tolist()
            prompts = [prefix + torch.randint(1, shape["vocab_size"], (args.suffix,), generator=g).tolist() for _ in range(args.concurrency)]
            outs = {}
            for mode in ("off", "on"):
                engine.prefixes = PrefixCache(100_000 if mode == "on" else 0)
                before = engine.counters["prefill_tokens"]
                t0 = time.perf_counter()
                out = engine.generate(prompts, params)
                wall = time.perf_counter() - t0
                ttft = sorted(o.timing.ttft_s for o in out)
                f = figures[mode]
                f["p50"].append(statistics.median(ttft))
                f["p95"].append(ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))])
                f["wall"].append(wall)
                f["computed"].append(engine.counters["prefill_tokens"] - before)
                outs[mode] = [o.token_ids for o in out]
            assert outs["on"] == outs["off"], "prefix reuse changed the tokens"
        print(f"===== shape {name}: {sum(p.numel() for p in model.parameters()):,} parameters, {torch.get_num_threads()} threads; "
              f"{args.concurrency} requests, shared prefix {args.prefix} + {args.suffix} own tokens, {args.new} new (greedy); "
              f"median of {args.rounds} rounds")
        print(f"{'prefix cache':>12}  {'TTFT p50 ms':>11}  {'TTFT p95 ms':>11}  {'wall ms':>8}  {'prompt tokens computed':>22}")
        med = {m: {k: statistics.median(v) for k, v in f.items()} for m, f in figures.items()}
        for m in ("off", "on"):
            print(f"{m:>12}  {1000 * med[m]['p50']:>11.1f}  {1000 * med[m]['p95']:>11.1f}  {1000 * med[m]['wall']:>8.1f}  {med[m]['computed']:>22.0f}")
        print(f"off / on: TTFT p50 {med['off']['p50'] / med['on']['p50']:.2f}x, p95 {med['off']['p95'] / med['on']['p95']:.2f}x, "
              f"wall {med['off']['wall'] / med['on']['wall']:.2f}x (same tokens either way)\n")


if __name__ == "__main__":
    main()
