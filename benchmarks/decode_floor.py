"""Where a batch-1 decode step's time goes on the tiny preset, and the floor under it from Python.

    .venv/bin/python benchmarks/decode_floor.py [--new 128] [--rounds 5] [--compile] [--profile]

On the tiny preset's shape (2 layers x 128, vocabulary 2,048, random weights: speed does not depend
on training), CPU time per generated token of this thread, 1 thread, median of the rounds, the
variants alternating within each round:

- engine: `Engine.generate` at batch 1, greedy (the fast path: one forward pass and one transfer a step);
- engine, empty model: the same engine whose model's decode step returns fixed logits at once -- the
  scheduler, sampler and text alone, i.e. the per-token floor of the Python loop around the model;
- bare decode step: `GPT.decode` over a SlotCache, called in a loop (the model alone, no engine);
- with `--compile`: the engine with its step compiled (`generate.compile`), and the cold cost of the
  first compilation (a fresh Inductor cache directory, so nothing is reused from an earlier run).

`--profile` prints torch.profiler's table of one eager generation (ops by self CPU time).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch

from londinium.config import PRESETS, ModelConfig
from londinium.infer import Engine, SamplingParams
from londinium.model.gpt import GPT
from londinium.tokenizer.train import train_bpe

PROMPT = list(range(1, 17))


def cpu_s(fn) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def wall_s(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.new, args.rounds = 8, 1
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig(**dict(PRESETS["tiny"]["model"], vocab_size=2048))
    tok = train_bpe(["Shall I compare thee to a summer's day? Thou art more lovely"] * 50, 500, show_progress=False)
    params = SamplingParams(max_tokens=args.new, temperature=0.0, ignore_eos=True)

    model = GPT(cfg).eval()
    empty = GPT(cfg).eval()
    fixed = torch.randn(1, cfg.vocab_size)
    empty.decode = lambda tokens, positions, cache: fixed.expand(tokens.shape[0], -1)  # no model: the loop alone
    engines = {"engine": Engine(model, tok), "engine, empty model": Engine(empty, tok)}
    cold = None
    if args.compile:
        with tempfile.TemporaryDirectory() as cache_dir:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir  # cold: nothing compiled before is reused
            compiled = engines["engine, compiled"] = Engine(copy.deepcopy(model), tok, compile=True)
            # Wall time: Inductor compiles its C++ in worker processes, which this thread's clock misses.
            cold, warm = (wall_s(lambda: compiled.generate([PROMPT], params)) for _ in range(2))

    slots = model.new_slot_cache(1)
    with torch.inference_mode():
        first = model.new_kv_cache(1, len(PROMPT))
        model(torch.tensor([PROMPT]), kv_cache=first)
        slots.append(first)

    def bare() -> None:
        with torch.inference_mode():
            t = torch.tensor([5])
            for _ in range(args.new):
                view = slots.view_type(slots.buffers(), slots.positions(), slots.lengths[0] + 1, False)
                t = model.decode(t, slots.positions(), view).argmax(-1)
                slots.advance()
            slots.lengths[0] = len(PROMPT)
            slots._positions = None

    runs = {name: (lambda e=e: e.generate([PROMPT], params)) for name, e in engines.items()}
    runs["bare decode step (model alone)"] = bare
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(cpu_s(fn) / args.new)
    base = times["engine"]
    print(f"tiny preset (2 x 128, vocabulary {cfg.vocab_size}), batch 1, greedy, {args.new} new tokens, 1 thread, "
          f"median of {args.rounds} rounds (CPU time of this thread)")
    print(f"{'variant':<32} {'us/token':>9} {'tok/s':>8} {'engine / this':>14}")
    for name, ts in times.items():
        ratio = statistics.median(b / t for b, t in zip(base, ts))
        print(f"{name:<32} {1e6 * statistics.median(ts):>9.0f} {1 / statistics.median(ts):>8.0f} {ratio:>13.2f}x")
    if cold is not None:
        print(f"compile, cold: the first generation (compiling its shapes) took {cold:.1f} s wall, the second {warm * 1e3:.0f} ms")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            engines["engine"].generate([PROMPT], params)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
