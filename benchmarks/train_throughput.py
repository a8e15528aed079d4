"""Training throughput of londinium's GPT against `transformers`' class of the same shape.

    .venv/bin/python benchmarks/train_throughput.py                # eager, both models
    .venv/bin/python benchmarks/train_throughput.py --compile      # adds torch.compile rows (slow first step)
    .venv/bin/python benchmarks/train_throughput.py --preset tiny  # the default model: tiny preset vs its transformers class

By default both models are GPT-2: 6 layers, 6 heads, 384 wide, context 256, vocabulary 8192, batch 16,
fp32, no dropout, tied embeddings, GPT-2 initialisation. With `--preset NAME` ours is that preset's
model (vocabulary from the preset's tokenizer) and the peer is the `transformers` class our export
maps it to (`model/hf_layout.py`: GPT2LMHeadModel or LlamaForCausalLM), built from the same config
the export writes. Either way: the same batches, the same loss (mean cross-entropy on every
position) and the same optimiser (AdamW, fused CPU kernel, decay on matrices only), so the ratio is
the model's forward + backward and nothing else. The two models are timed in alternating rounds in
one process, so load from other processes on the machine hits both alike; each figure is the median
of the rounds. MFU is achieved FLOPs (6N + attention, `GPT.flops_per_token`) over the best fp32
matmul rate measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from peers import preset_model_config, transformers_class

from londinium.config import ModelConfig
from londinium.model.gpt import GPT
from londinium.model.hf_layout import hf_layout

SHAPE = dict(n_layer=6, n_head=6, n_embd=384, context=256, vocab_size=8192)


def model_config(preset: str) -> ModelConfig:
    return preset_model_config(preset) if preset else ModelConfig(**SHAPE, dropout=0.0)


MATMULS = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 384, 1536), (4096, 1536, 384), (4096, 384, 8192)]


def matmul_peak(threads: int, seconds: float = 3.0, shapes: list[tuple[int, int, int]] = MATMULS) -> float:
    """Best fp32 GFLOP/s of square and transformer-shaped matmuls on this CPU (the MFU roof)."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        deadline = time.perf_counter() + seconds / len(shapes)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return best


def build_ours(cfg: ModelConfig) -> torch.nn.Module:
    return GPT(cfg)


def build_peer(cfg: ModelConfig) -> torch.nn.Module:
    return transformers_class(cfg)  # dropout 0 in cfg: GPT-2's three dropouts are 0 too


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=True)


class Runner:
    """One model, its optimiser and a step function that returns nothing until timed."""

    def __init__(self, name: str, model: torch.nn.Module, hf: bool, compile: bool):
        self.name, self.model, self.hf = name, model.train(), hf
        self.opt = make_optimizer(model)
        self.forward = torch.compile(model) if compile else model
        self.rates: list[float] = []

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hf:
            logits = self.forward(input_ids=x).logits
            return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        return self.forward(x, y)[1]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = self.loss(x, y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()

    def timed(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        t0 = time.perf_counter()
        for x, y in batches:
            self.step(x, y)
        tokens = sum(x.numel() for x, _ in batches)
        self.rates.append(tokens / (time.perf_counter() - t0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="steps per model per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd versions of both")
    ap.add_argument("--preset", default="", help="time this preset's model (e.g. tiny) against its transformers class")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.steps, args.rounds, args.warmup, args.threads, args.preset = 2, 1, 1, 1, 1, args.preset or "tiny"
    cfg = model_config(args.preset)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    T, V = cfg.context, cfg.vocab_size
    data = torch.randint(0, V, (args.steps, args.batch, T + 1))
    batches = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]

    peer = hf_layout(cfg).architecture
    runners = [Runner("londinium GPT (eager)", build_ours(cfg), hf=False, compile=False),
               Runner(f"transformers {peer} (eager)", build_peer(cfg), hf=True, compile=False)]
    if args.compile:
        runners += [Runner("londinium GPT (compiled)", build_ours(cfg), hf=False, compile=True),
                    Runner(f"transformers {peer} (compiled)", build_peer(cfg), hf=True, compile=True)]
    flops = runners[0].model.flops_per_token()
    n_ours = runners[0].model.num_params()
    n_peer = sum(p.numel() for p in runners[1].model.parameters())
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "context", "vocab_size", "positions", "norm", "mlp", "tie_embeddings")}
    print(f"{args.preset or 'benchmark'} shape {shape}, batch {args.batch}, {args.threads} threads, fp32; params: ours {n_ours:,}, peer {n_peer:,}")

    for r in runners:
        for x, y in batches[:args.warmup]:
            r.step(x, y)
    peak_args = (0.1, [(256, 256, 256)]) if args.quick else ()
    peak = matmul_peak(args.threads, *peak_args)
    for i in range(args.rounds):
        # Alternate the order each round so neither model always runs right after the other.
        for r in (runners if i % 2 == 0 else runners[::-1]):
            r.timed(batches)
        print(f"round {i + 1}: " + ", ".join(f"{r.name.split()[0]}{'*' if 'compiled' in r.name else ''} {r.rates[-1]:.0f}" for r in runners))
    peak = max(peak, matmul_peak(args.threads, *peak_args))

    print(f"\nfp32 matmul peak measured: {peak:.1f} GFLOP/s; FLOPs/token {flops / 1e6:.1f} M (6N + attention)")
    print(f"{'model':45s} {'tok/s median':>12s} {'min':>8s} {'max':>8s} {'MFU':>6s}")
    med = {}
    for r in runners:
        med[r.name] = statistics.median(r.rates)
        print(f"{r.name:45s} {med[r.name]:12.0f} {min(r.rates):8.0f} {max(r.rates):8.0f} {med[r.name] * flops / 1e9 / peak:6.1%}")
    # The ratio of medians, and the median of each round's ratio: the rounds pair the two models
    # under the same load, so the paired figure is the steadier one on a busy machine.
    pairs = [(runners[0], runners[1], "eager")] + ([(runners[2], runners[3], "compiled")] if args.compile else [])
    for ours, peer, kind in pairs:
        paired = statistics.median(a / b for a, b in zip(ours.rates, peer.rates))
        print(f"\nratio londinium / transformers ({kind}): {med[ours.name] / med[peer.name]:.3f}x "
              f"(median of per-round ratios {paired:.3f}x, range {min(a / b for a, b in zip(ours.rates, peer.rates)):.3f}"
              f"-{max(a / b for a, b in zip(ours.rates, peer.rates)):.3f})")


if __name__ == "__main__":
    main()
