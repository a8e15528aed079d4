"""Continuous batching: throughput of `Engine.step()` at concurrency 1, 4 and 16, against its floor.

    .venv/bin/python benchmarks/continuous_batching.py                       # both shapes, 3 rounds
    .venv/bin/python benchmarks/continuous_batching.py --shapes tiny --concurrency 1 4 16 --threads 1

c requests (prompt 64 random tokens, 128 new, temperature 1 and top-k 50 (`--temperature`, `--top-k`,
`--top-p`), EOS ignored) arrive
together and are served by the scheduler: each prompt prefilled on its own, then all decoded one
token per step. Rows:
- engine: output tokens/s over the whole run (prefills included) and the median time to first token;
- forward floor: the same prefills, then 127 forward passes of `[c, 1]` tokens over a SlotCache with
  no sampling, no text, no scheduling: what the model alone costs, so engine/floor is the
  scheduler's and sampler's overhead;
- attention: one masked SDPA over all slots (what the engine does) against one SDPA per group of
  equal length (no mask, but a call per group), at c sequences of different lengths.

Printed ratios: throughput at c over throughput at 1 (the serving goal is >= 5x at 16), and engine
over floor. Rounds alternate the implementations, each figure is the median; the machine may be
shared, so read the ratios (`--clock cpu --threads 1` counts CPU time instead of wall time, which
other processes' load disturbs far less; TTFT is always wall time).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from londinium.config import PRESETS, ModelConfig
from londinium.infer import Engine, SamplingParams
from londinium.infer.decode import Decoder
from londinium.model.gpt import GPT

SHAPES = {
    "6x384": dict(n_layer=6, n_head=6, n_embd=384, context=256, vocab_size=8192),
    "tiny": dict(PRESETS["tiny"]["model"], vocab_size=8192),
}
TEXT = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. " * 3


def build(shape: dict) -> tuple[GPT, object]:
    from londinium.tokenizer.train import train_bpe

    torch.manual_seed(0)
    return GPT(ModelConfig(**shape)).eval(), train_bpe([TEXT] * 50, 1000, show_progress=False)


def forward_floor(model: GPT, prompts: list[list[int]], new: int) -> None:
    with torch.inference_mode():
        slots = model.new_slot_cache(len(prompts))
        for ids in prompts:
            c = model.new_kv_cache(1, len(ids))
            model(torch.tensor([ids]), kv_cache=c, logits_to_keep=1)
            slots.append(c)
        step, decoder = torch.tensor([ids[-1] for ids in prompts]), Decoder(model)
        for _ in range(new - 1):
            decoder.logits(step, slots)
            slots.advance()


def attention(B: int, H: int, D: int, lengths: list[int], grouped: bool, reps: int = 50) -> float:
    """Seconds per call of one decode step's attention over B slots of these lengths. Grouped: one
    unmasked SDPA per distinct length, over rows already sorted into groups (its best case; the
    engine would also have to keep rows sorted by length)."""
    L = max(lengths) + 1
    q, k, v = torch.randn(B, H, 1, D), torch.randn(B, H, L, D), torch.randn(B, H, L, D)
    lens = torch.tensor(lengths)
    mask = (torch.arange(L)[None, :] <= lens[:, None])[:, None, None, :]
    groups: dict[int, list[int]] = {}
    for b, n in enumerate(lengths):
        groups.setdefault(n, []).append(b)
    parts = [(q[rows].contiguous(), k[rows, :, :n + 1].contiguous(), v[rows, :, :n + 1].contiguous()) for n, rows in groups.items()]
    t0 = time.perf_counter()
    for _ in range(reps):
        if grouped:
            for qg, kg, vg in parts:
                F.scaled_dot_product_attention(qg, kg, vg)
        else:
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return (time.perf_counter() - t0) / reps


def run(args: argparse.Namespace, name: str, shape: dict) -> None:
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model, tok = build(shape)
    print(f"===== shape {name}: {sum(p.numel() for p in model.parameters()):,} parameters; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; prompt {args.prompt}, {args.new} new, temperature {args.temperature}, "
          f"top-k {args.top_k}, top-p {args.top_p}; {args.clock} time; "
          f"median of {args.rounds} rounds")
    params = SamplingParams(max_tokens=args.new, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            ignore_eos=True, seed=0)
    engine = Engine(model, tok, max_running=max(args.concurrency), max_step_tokens=512)
    results: dict[int, dict[str, list[float]]] = {c: {"engine": [], "floor": [], "ttft": []} for c in args.concurrency}
    for r in range(args.rounds):
        for c in args.concurrency:
            g = torch.Generator().manual_seed(c)
            prompts = torch.randint(1, shape["vocab_size"], (c, args.prompt), generator=g).tolist()
            t0 = clock()
            out = engine.generate(prompts, params)
            wall = clock() - t0
            assert all(len(o.token_ids) == args.new for o in out)
            results[c]["engine"].append(c * args.new / wall)
            results[c]["ttft"].append(statistics.median(o.timing.ttft_s for o in out))
            t0 = clock()
            forward_floor(model, prompts, args.new)
            results[c]["floor"].append(c * args.new / (clock() - t0))
    print(f"{'concurrency':>11}  {'engine tok/s':>12}  {'floor tok/s':>11}  {'engine/floor':>12}  {'vs c=1':>7}  {'TTFT p50 ms':>11}")
    base = statistics.median(results[args.concurrency[0]]["engine"])
    for c in args.concurrency:
        e, f = statistics.median(results[c]["engine"]), statistics.median(results[c]["floor"])
        print(f"{c:>11}  {e:>12.1f}  {f:>11.1f}  {e / f:>11.0%}  {e / base:>6.2f}x  {1000 * statistics.median(results[c]['ttft']):>11.1f}")
    H, D = shape["n_head"], shape["n_embd"] // shape["n_head"]
    C = max(args.concurrency)
    lengths = [args.prompt + (i * 97) % args.new for i in range(C)]  # spread, as rows that joined at different steps
    same = [args.prompt + args.new // 2] * C
    times: dict[tuple[bool, bool], list[float]] = {(s, g): [] for s in (False, True) for g in (False, True)}
    for _ in range(3 * args.rounds):  # alternating, so load from other processes hits both alike
        for (s, g), out in times.items():
            out.append(attention(C, H, D, same if s else lengths, grouped=g))
    masked, grouped, masked_same, grouped_same = (statistics.median(times[k]) for k in
                                                  ((False, False), (False, True), (True, False), (True, True)))
    print(f"attention per layer, {C} slots of {len(set(lengths))} different lengths: one masked SDPA {1e6 * masked:.0f} us, "
          f"one SDPA per length {1e6 * grouped:.0f} us (masked / grouped = {masked / grouped:.2f}x); all of one length: "
          f"masked {1e6 * masked_same:.0f} us, unmasked {1e6 * grouped_same:.0f} us ({masked_same / grouped_same:.2f}x)\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=50, help="0: off")
    ap.add_argument("--top-p", type=float, default=1.0, help="1: off ([generate]'s default is 0.95 at temperature 0.8)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this process's CPU time, steadier on a shared machine (with --threads 1 it is the time one core spent)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.prompt, args.new, args.concurrency, args.rounds, args.threads = 8, 4, [1, 2], 1, args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.shapes:
        run(args, name, SHAPES[name])


if __name__ == "__main__":
    main()
