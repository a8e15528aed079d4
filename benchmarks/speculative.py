"""Speculative decoding in the engine (infer/speculative.py): how often the draft is accepted, and whether it is faster.

    .venv/bin/python benchmarks/speculative.py -w londinium-work --run small --draft-run main [--k 2 4] [--new 128] [--rounds 5]
        [--temperature 0 0.8]

Batch-1 decode of `--new` tokens after a short prompt, EOS ignored: the target alone through the
engine (`Engine.generate`, what `londinium generate` runs) against the same engine with the draft
(`Engine(draft=...)`, what `--draft` runs; `--draft-run`, `--draft-checkpoint`: another run of the
same workspace, trained with its tokenizer) for each `--k`, at each `--temperature` (0: greedy; else
sampled, seed 1), the target's weights in `--weight-dtype` for both, alternating round by round in one process; CPU time of this thread, 1 thread.
Greedy tokens must be the target's own (asserted). Printed: tokens/s (median), the ratio against
the engine alone (median of the rounds' ratios), the share of proposals accepted, and the tokens
each target pass yielded (the first token, from the prompt's pass, not counted).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from londinium.infer import Engine, SamplingParams
from londinium.model.load import load_run
from londinium.model.quantize import quantize_weights
from londinium.workspace import Workspace

PROMPT = "Thus saith the Lord, "


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--run", default="main")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--draft-run", required=True)
    ap.add_argument("--draft-checkpoint", default="best")
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4], help="proposals a round")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.0], help="0: greedy; else sampled (seed 1)")
    ap.add_argument("--weight-dtype", default="float32", help="the target's linear layers (generate.weight_dtype), alone and with the draft")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.k, args.new, args.rounds = [2], 8, 1
    torch.set_num_threads(1)
    ws = Workspace(Path(args.workspace))
    target, draft = load_run(ws, args.run, args.checkpoint), load_run(ws, args.draft_run, args.draft_checkpoint)
    quantize_weights(target.model, args.weight_dtype)
    engines = {"target alone": Engine.from_trained(target)}
    engines.update({f"draft, k={k}": Engine(target.model, target.tokenizer, draft=draft.model, draft_tokens=k) for k in args.k})
    print(f"target {target.describe()}; draft {draft.describe()}")
    print(f"batch 1, {args.new} new tokens, 1 thread, median of {args.rounds} rounds (CPU time of this thread)")
    print(f"{'decoder':<16} {'temperature':>11} {'tok/s':>8} {'vs alone':>9} {'accepted':>9} {'tokens/target pass':>19}")
    for temperature in args.temperature:
        params = SamplingParams(max_tokens=args.new, temperature=temperature, top_p=1.0, ignore_eos=True, seed=1)
        [alone] = engines["target alone"].generate([PROMPT], params)
        new = len(alone.token_ids)
        for name, engine in engines.items():
            engine.counters.clear()
            [c] = engine.generate([alone.prompt_token_ids], params)
            assert temperature > 0 or c.token_ids == alone.token_ids, f"{name}: greedy tokens differ from the target's own"
        counts = {name: dict(e.counters) for name, e in engines.items()}
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                t0 = time.thread_time()
                engine.generate([alone.prompt_token_ids], params)
                times[name].append(time.thread_time() - t0)
        base = times["target alone"]
        for name, ts in times.items():
            ratio = statistics.median(b / t for b, t in zip(base, ts))
            n = counts[name]
            accepted = f"{n['accepted'] / n['drafted']:>8.0%}" if n.get("drafted") else f"{'':>9}"
            per_pass = (n["generation_tokens"] - 1) / (n["steps"] - 1)
            print(f"{name:<16} {temperature:>11g} {new / statistics.median(ts):>8.0f} {ratio:>8.2f}x {accepted} {per_pass:>19.2f}")


if __name__ == "__main__":
    main()
