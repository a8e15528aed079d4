"""Which shape should the `tiny` preset have? Measure candidates on this machine.

    .venv/bin/python benchmarks/tiny_preset.py -w WORKSPACE [--budget-s 120] [--target-min 10]

`tiny` is the preset a newcomer trains on a 2-core CPU in about ten minutes, so the question is
which shape reaches the lowest validation loss in a fixed amount of *time*, not of steps.

1. Throughput: every candidate trains a few steps, in alternating rounds in one process (so load
   from other processes hits all alike); tokens/s is the median.
2. Quality: each candidate then trains for the number of steps its measured speed reaches in
   `--budget-s` seconds (so a busy machine while one candidate trains does not change its step
   count), with the preset's optimiser and warm-up/cosine schedule, on the workspace's shards, and
   its loss on the validation shard is reported.

The workspace needs shards (`londinium data prepare`). Figures from a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import torch

from londinium.config import ModelConfig, TrainConfig, load_config
from londinium.data.loader import TokenLoader, iter_eval_batches, open_shard
from londinium.model.gpt import GPT
from londinium.train.schedule import lr_at
from londinium.workspace import Workspace

CANDIDATES = {
    "2L 128w": dict(n_layer=2, n_head=4, n_embd=128),
    "4L 192w": dict(n_layer=4, n_head=4, n_embd=192),
    "4L 256w": dict(n_layer=4, n_head=4, n_embd=256),
    "6L 256w": dict(n_layer=6, n_head=4, n_embd=256),
    "6L 384w": dict(n_layer=6, n_head=6, n_embd=384),
}


def make(shape: dict, vocab: int, train: TrainConfig) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(train.seed)
    model = GPT(ModelConfig(**shape, context=256, vocab_size=vocab)).train()
    opt = torch.optim.AdamW(model.optimizer_groups(train.weight_decay), lr=train.learning_rate,
                            betas=(train.beta1, train.beta2), fused=True)
    return model, opt


def step(model: GPT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    for group in opt.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


@torch.no_grad()
def val_loss(model: GPT, ws: Workspace, batches: int) -> float:
    model.eval()
    total = n = 0
    for x, y in iter_eval_batches(open_shard(ws, "val"), 256, 16, max_batches=batches):
        total += model(x, y)[1].item() * x.shape[0]
        n += x.shape[0]
    model.train()
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-w", "--workspace", required=True)
    ap.add_argument("--budget-s", type=float, default=120.0, help="training time per candidate, at its measured speed")
    ap.add_argument("--target-min", type=float, default=10.0, help="the preset's intended training time (for the step counts shown)")
    ap.add_argument("--val-batches", type=int, default=20)
    ap.add_argument("--only", nargs="*", default=None, help="candidate names to run")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    train_cfg = load_config(preset="tiny").train
    shard = open_shard(ws, "train")
    vocab = int(shard.meta["vocab_size"])
    names = args.only or list(CANDIDATES)
    tokens_per_step = train_cfg.batch_size * 256

    # 1. throughput, alternating rounds
    rates: dict[str, list[float]] = {n: [] for n in names}
    built = {n: make(CANDIDATES[n], vocab, train_cfg) for n in names}
    loader = TokenLoader(shard, 256, train_cfg.batch_size, seed=0)
    batch = loader.next_batch()
    for n in names:
        step(*built[n], *batch, lr=1e-4)  # warm-up
    for r in range(3):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(3):
                step(*built[n], *batch, lr=1e-4)
            rates[n].append(3 * tokens_per_step / (time.perf_counter() - t0))
    del built

    print(f"vocab {vocab}, context 256, batch {train_cfg.batch_size}, lr {train_cfg.learning_rate}, "
          f"budget {args.budget_s:.0f} s per candidate at its measured speed")
    print(f"{'shape':10s} {'params':>8s} {'non-emb':>8s} {'tok/s':>7s} {'steps':>6s} {'steps/' + str(int(args.target_min)) + 'min':>10s} {'val loss':>8s} {'wall s':>7s}")
    for n in names:
        tok_s = statistics.median(rates[n])
        steps = max(10, int(tok_s * args.budget_s / tokens_per_step))
        cfg = dataclasses.replace(train_cfg, max_steps=steps, warmup_steps=max(1, steps // 10))
        model, opt = make(CANDIDATES[n], vocab, cfg)
        loader = TokenLoader(shard, 256, cfg.batch_size, seed=cfg.seed)
        t0 = time.perf_counter()
        for s in range(steps):
            loss = step(model, opt, *loader.next_batch(), lr=lr_at(s, cfg))
            if not math.isfinite(loss):
                break
        wall = time.perf_counter() - t0
        vl = val_loss(model, ws, args.val_batches)
        per_target = int(tok_s * args.target_min * 60 / tokens_per_step)
        print(f"{n:10s} {model.num_params() / 1e6:7.2f}M {model.num_params(True) / 1e6:7.2f}M {tok_s:7.0f} {steps:6d} {per_target:10d} {vl:8.3f} {wall:7.0f}", flush=True)


if __name__ == "__main__":
    main()
