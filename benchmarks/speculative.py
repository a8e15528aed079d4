"""Speculative decoding (infer/speculative.py): how often the draft is accepted, and whether it is faster.

    .venv/bin/python benchmarks/speculative.py -w londinium-work --run main --draft-run draft [--k 2 4] [--new 128] [--rounds 5]

Batch-1 greedy decode of `--new` tokens after a short prompt, EOS ignored: the target alone
through the engine (`Engine.generate`, what `londinium generate` runs) against `SpeculativeDecoder`
with the draft (`--draft-run`, `--draft-checkpoint`: another run of the same workspace, trained with
its tokenizer) for each `--k`, alternating round by round in one process; CPU time of this thread,
1 thread. The greedy tokens must be the target's own (asserted). Printed: tokens/s (median), the
ratio against the engine (median of the rounds' ratios), the share of proposals accepted, and the
tokens each target pass yielded.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from londinium.infer import Engine, SamplingParams
from londinium.infer.speculative import SpeculativeDecoder
from londinium.model.load import load_run
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
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.k, args.new, args.rounds = [2], 8, 1
    torch.set_num_threads(1)
    ws = Workspace(Path(args.workspace))
    target, draft = load_run(ws, args.run, args.checkpoint), load_run(ws, args.draft_run, args.draft_checkpoint)
    engine = Engine.from_trained(target)
    params = SamplingParams(max_tokens=args.new, temperature=0.0, ignore_eos=True)
    [alone] = engine.generate([PROMPT], params)
    prompt, new = alone.prompt_token_ids, len(alone.token_ids)
    specs = {k: SpeculativeDecoder(target.model, draft.model, k=k) for k in args.k}
    stats = {}
    for k, spec in specs.items():
        out = spec.generate(prompt, new)
        assert out.token_ids == alone.token_ids, f"k={k}: speculative greedy tokens differ from the target's own"
        stats[k] = out
    runs = {"target alone (engine)": lambda: engine.generate([prompt], params)}
    runs.update({f"speculative, k={k}": (lambda s=s: s.generate(prompt, new)) for k, s in specs.items()})
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t0 = time.thread_time()
            fn()
            times[name].append(time.thread_time() - t0)
    base = times["target alone (engine)"]
    print(f"target {target.describe()}; draft {draft.describe()}")
    print(f"batch 1, greedy, {new} new tokens, 1 thread, median of {args.rounds} rounds (CPU time of this thread)")
    print(f"{'decoder':<24} {'tok/s':>8} {'vs engine':>10} {'accepted':>9} {'tokens/target pass':>19}")
    for name, ts in times.items():
        ratio = statistics.median(b / t for b, t in zip(base, ts))
        k = int(name.rsplit("=", 1)[1]) if "k=" in name else None
        extra = f"{stats[k].acceptance:>8.0%} {new / stats[k].target_passes:>19.2f}" if k else f"{'':>9} {1:>19.2f}"
        print(f"{name:<24} {new / statistics.median(ts):>8.0f} {ratio:>9.2f}x {extra}")


if __name__ == "__main__":
    main()
