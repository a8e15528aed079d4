"""What a teacher costs a student step: plain training, the teacher on the fly, and its top-k cache.

    .venv/bin/python benchmarks/distill_cost.py -w WS --teacher RUN [--top-k 16] [--preset tiny] [--pairs 25]
    .venv/bin/python benchmarks/distill_cost.py -w WS --teacher RUN --quick     # the tests' mode

Interleaved in one process on one thread, so the machine's shifting load falls on every arm alike:
a training step of the student (the preset's shape, its batch and context) with alpha = 1 (the
labels' cross-entropy, no teacher), with the teacher's forward pass and the full-vocabulary soft
loss (alpha 0.5, T 2, as `londinium distill` computes it on the fly), and with the soft loss over
the teacher's top-k read from its cache (as `londinium distill --top-k K`). Printed: the median
step and tokens per second of each, the ratio to plain training, and the cache pass's own cost
(teacher tokens per second when it was built: its meta.json). The cache is built if missing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from londinium.config import load_config
from londinium.data.loader import TokenLoader, open_shard
from londinium.model.gpt import GPT
from londinium.train.distill import distill_loss, open_teacher, topk_distill_loss
from londinium.train.distill_cache import CachedWindows, teacher_cache
from londinium.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--teacher", required=True, metavar="RUN")
    ap.add_argument("--teacher-checkpoint", default="latest")
    ap.add_argument("--preset", default="tiny", help="the student's shape")
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=25, help="timed rounds of the three arms")
    ap.add_argument("--quick", action="store_true", help="toy sizes, a few rounds (the tests' mode)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ws = Workspace(args.workspace)
    sets = [f"distill.teacher={args.teacher}", f"distill.teacher_checkpoint={args.teacher_checkpoint}"]
    if args.quick:
        sets += ["model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.context=32"]
        args.pairs = 3
    cfg = load_config(None, sets, args.preset)
    shard = open_shard(ws, "train")
    cfg.model.vocab_size = int(shard.meta["vocab_size"])
    teacher = open_teacher(ws, cfg, shard.meta["tokenizer_sha256"])
    cache = teacher_cache(ws, teacher, shard, cfg.model.context, args.top_k, print)
    student = GPT(cfg.model)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)  # small: the arms share one student
    windows = TokenLoader(shard, cfg.model.context, cfg.train.batch_size, 0)
    cached = CachedWindows(cache, shard, cfg.train.batch_size, 0)

    def step(arm: str) -> None:
        if arm == "cache":
            b = cached.next_batch()
            logits, _ = student(b.x)
            loss = topk_distill_loss(logits, *b.teacher, b.y, 0.5, 2.0)
        else:
            x, y = windows.next_batch()
            logits, _ = student(x)
            loss = distill_loss(logits, teacher.logits(x) if arm == "fly" else logits, y, 0.5 if arm == "fly" else 1.0, 2.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    arms = {"plain (alpha 1)": "plain", "teacher on the fly": "fly", f"top-{args.top_k} cache": "cache"}
    times: dict[str, list[float]] = {a: [] for a in arms.values()}
    for arm in arms.values():  # warm-up
        step(arm)
    for _ in range(args.pairs):
        for arm in arms.values():
            t0 = time.perf_counter()
            step(arm)
            times[arm].append(time.perf_counter() - t0)
    tokens = cfg.train.batch_size * cfg.model.context
    plain = statistics.median(times["plain"])
    print(f"student {args.preset}{' (quick)' if args.quick else ''}: {student.num_params():,} parameters, teacher "
          f"'{args.teacher}' {teacher.checkpoint}: {teacher.num_params():,}; {tokens:,} tokens a step, one thread, "
          f"{args.pairs} interleaved rounds")
    for label, arm in arms.items():
        med = statistics.median(times[arm])
        print(f"  {label:22s} median step {med * 1000:8.1f} ms  {tokens / med:8,.0f} tok/s  {med / plain:5.2f}x plain's time")
    built = cache.meta.get("build_seconds", 0.0)
    print(f"cache pass: {cache.meta['rows']:,} teacher tokens in {built:.1f} s when built "
          f"({cache.meta['rows'] / max(built, 1e-9):,.0f} tok/s) = {built / plain:,.0f} plain student steps")


if __name__ == "__main__":
    main()
