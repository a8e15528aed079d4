"""What the trainer costs on top of the model: `londinium train`'s loop against a bare PyTorch loop.

    .venv/bin/python benchmarks/trainer_overhead.py -w londinium-work          # after quickstart/data prepare
    .venv/bin/python benchmarks/trainer_overhead.py -w londinium-work --steps 40 --rounds 3

The peer is the inner loop of nanoGPT's train.py, written out here: the same GPT, the same fused
AdamW with the same parameter groups, the same TokenLoader batches, learning rate set per step,
gradient clipping, `.item()` of the loss every step -- and nothing else. londinium's loop adds the
schedule, the stop-signal and time checks, metrics.jsonl rows, the progress output and the MFU
arithmetic. Both run in this process in alternating rounds (so load from other processes on the
machine hits both alike) with `train.eval_every` beyond the measured steps, so no checkpoint or
evaluation falls inside the timed window. londinium's time per step comes from its own
metrics.jsonl (`elapsed_s` between the first logged step and the last); the first steps of each
are warm-up and not timed. Prints steps/s of each and the ratio londinium / bare (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from londinium.config import load_config
from londinium.data.loader import TokenLoader, open_shard
from londinium.model.gpt import GPT
from londinium.train.monitor import read_metrics
from londinium.train.schedule import lr_at
from londinium.train.trainer import train
from londinium.workspace import Workspace

WARMUP = 5


def bare_loop(ws: Workspace, cfg, steps: int) -> float:
    """Seconds per step of the peer loop, after WARMUP untimed steps."""
    tc, m = cfg.train, cfg.model
    shard = open_shard(ws, "train")
    m.vocab_size = m.vocab_size or int(shard.meta["vocab_size"])
    torch.manual_seed(tc.seed)
    model = GPT(m)
    opt = torch.optim.AdamW(model.optimizer_groups(tc.weight_decay), lr=tc.learning_rate, betas=(tc.beta1, tc.beta2), fused=True)
    loader = TokenLoader(shard, m.context, tc.batch_size, tc.seed)
    model.train()
    t0 = None
    for step in range(WARMUP + steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        x, y = loader.next_batch()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return (time.perf_counter() - t0) / steps


def londinium_loop(ws: Workspace, preset: str, steps: int, round_: int) -> float:
    """Seconds per step of `londinium train`, from its metrics.jsonl."""
    run = f"bench-overhead-{round_}"
    cfg = load_config(None, [f"train.max_steps={WARMUP + steps}", f"train.eval_every={10 * (WARMUP + steps)}",
                             "train.log_every=1", f"train.run_name={run}", "train.eval_batches=1"], preset)
    train(ws, cfg, force=True, log=lambda msg: None)
    rows = {r["step"]: r for r in read_metrics(ws.metrics_file(run)) if r["type"] == "train"}
    return (rows[WARMUP + steps]["elapsed_s"] - rows[WARMUP]["elapsed_s"]) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workspace", default="londinium-work")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds = 1, 1
    ws = Workspace(args.workspace)
    ours, peer = [], []
    for r in range(args.rounds):
        peer.append(bare_loop(ws, load_config(None, [], args.preset), args.steps))
        ours.append(londinium_loop(ws, args.preset, args.steps, r))
        print(f"round {r + 1}: bare {1 / peer[-1]:.3f} steps/s, londinium {1 / ours[-1]:.3f} steps/s", flush=True)
    b, o = statistics.median(peer), statistics.median(ours)
    print(f"\npreset {args.preset}, {args.steps} timed steps x {args.rounds} rounds, {torch.get_num_threads()} threads (medians)")
    print(f"  bare PyTorch loop (nanoGPT-style peer): {1 / b:.3f} steps/s")
    print(f"  londinium train:                        {1 / o:.3f} steps/s")
    print(f"  ratio londinium / bare: {b / o:.3f}  (1.0 = the trainer adds nothing)")


if __name__ == "__main__":
    main()
