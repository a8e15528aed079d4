"""GRPO: `londinium rl` against TRL's `GRPOTrainer` on the same SFT model, task and machine.

    .venv/bin/python benchmarks/grpo_peer.py -w WS --run SFT_RUN [--task arith] [--steps 20]
    .venv/bin/python benchmarks/grpo_peer.py -w WS --run SFT_RUN --quick     # the tests' mode

Both train the same checkpoint of SFT_RUN for the same optimiser steps, each step one rollout of
`--prompts` train prompts x `--group-size` samples of at most `--max-new-tokens` tokens, at the same
temperature, rewarded by the task's checker, with std-scaled group advantages, the "grpo" loss
(per-answer mean), no KL (beta 0), one update per rollout, the same learning rate (constant), AdamW
betas, weight decay, clipping and thread count: londinium through `londinium rl` (its rollouts
through its engine, one batched call a step), TRL through `GRPOTrainer` on our HF export of that
checkpoint (rollouts through transformers' `generate`).

Printed: RL steps per minute of each, from the end of the first step to the end of the last (the
first step's one-off costs left out), and the ratio; with `--rounds N` the two alternate N times
(each run's load average printed) and the ratio is of the medians; then held-out pass@1 and pass@k of the SFT model
and of both trained models, scored by the same code (londinium's engine, `rl.objective.held_out_pass`,
the same seeds): TRL's weights are mapped back into our GPT (`model.from_hf`) for that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sft_peer import train_quietly

from londinium.config import RlConfig, load_config
from londinium.workspace import Workspace


def settings(args: argparse.Namespace) -> list[str]:
    return [f"rl.group_size={args.group_size}", f"rl.prompts_per_step={args.prompts}", f"rl.max_new_tokens={args.max_new_tokens}",
            f"rl.temperature={args.temperature}", "rl.beta=0", "rl.updates_per_batch=1", "rl.scale_rewards=true",
            "rl.loss_type=grpo", f"rl.learning_rate={args.lr}", "rl.warmup_steps=0", f"rl.max_steps={args.steps}",
            f"rl.eval_every={args.steps}", f"rl.eval_prompts={args.eval_prompts}", f"rl.pass_k={args.pass_k}",
            f"train.threads={args.threads}"]


def run_ours(ws: Workspace, args: argparse.Namespace, name: str) -> float:
    """`londinium rl` in this process; steps per minute after the first step."""
    argv = ["rl", "-w", str(ws.root), "--run", args.run, "--checkpoint", args.checkpoint, "--name", name, "--force"]
    argv += [a for t in args.task for a in ("--task", t)]
    for s in settings(args):
        argv += ["--set", s]
    rows = train_quietly(ws, argv, name)
    return 60 * (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"])


class _Clock:
    """A transformers callback: the wall time at the end of the first and of the last step."""

    def __init__(self) -> None:
        self.t0, self.t1, self.steps = 0.0, 0.0, 0

    def hooks(self) -> object:
        from transformers import TrainerCallback

        clock = self

        class Hook(TrainerCallback):
            def on_step_end(self, targs, state, control, **kw):
                if state.global_step == 1:
                    clock.t0 = time.perf_counter()
                clock.t1, clock.steps = time.perf_counter(), state.global_step

        return Hook()


def run_trl(ws: Workspace, args: argparse.Namespace, items: list, out: Path) -> tuple[float, dict[str, torch.Tensor]]:
    """TRL's GRPOTrainer on our export of the SFT checkpoint; (steps per minute after the first, its weights)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from londinium.export.run import export_run
    from londinium.infer.chat_template import END_OF_TURN
    from londinium.tasks import check, instruction
    from londinium.tasks.items import TaskItem

    path = export_run(ws, load_config(), run=args.run, checkpoint=args.checkpoint, out=out / "sft-hf", log=lambda m: None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    dataset = Dataset.from_list([{"prompt": instruction(i), "item": json.dumps(i.to_dict())} for i in items])

    def reward(prompts, completions, item, **kw):  # the task's checker, as `londinium rl` rewards
        rows = [json.loads(s) for s in item]
        return [check(r["task"], c[0]["content"], TaskItem(**{**r, "distractors": tuple(r["distractors"])}))
                for c, r in zip(completions, rows)]

    config = GRPOConfig(output_dir=str(out / "trl"), max_steps=args.steps, per_device_train_batch_size=args.prompts * args.group_size,
                        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=args.group_size,
                        max_completion_length=args.max_new_tokens, temperature=args.temperature, top_p=1.0, top_k=0,
                        beta=0.0, num_iterations=1, scale_rewards="group", loss_type="grpo", learning_rate=args.lr,
                        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95,
                        max_grad_norm=1.0, use_cpu=True, save_strategy="no", report_to=[], logging_steps=1, seed=1337,
                        disable_tqdm=True, dataloader_num_workers=0,
                        generation_kwargs={"eos_token_id": end, "pad_token_id": tokenizer.pad_token_id})
    clock = _Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[clock.hooks()])
    trainer.train()
    return 60 * (clock.steps - 1) / (clock.t1 - clock.t0), {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def evaluate(model: torch.nn.Module, tokenizer, prompts: list, args: argparse.Namespace, seed: int) -> dict[str, float]:
    from londinium.rl.objective import held_out_pass
    from londinium.rl.rewards import rewards_for
    from londinium.rl.rollouts import Rollouts
    from londinium.tokenizer.codec import PAD

    rl = RlConfig(group_size=args.group_size, prompts_per_step=args.prompts, max_new_tokens=args.max_new_tokens,
                  temperature=args.temperature, pass_k=args.pass_k)
    rollouts = Rollouts(prompts, rewards_for(args.task, []), rl, seed, tokenizer, tokenizer.token_to_id(PAD))
    rollouts.attach(model.eval(), None)
    return held_out_pass(rollouts, prompts, args.pass_k, seed)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", "-w", required=True)
    p.add_argument("--run", required=True, help="the SFT run both train")
    p.add_argument("--checkpoint", default="latest")
    p.add_argument("--task", action="append", default=[], help="task-set task (repeatable; default arith)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--eval-prompts", type=int, default=64)
    p.add_argument("--pass-k", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="alternate londinium and TRL this many times (ratio of the medians)")
    p.add_argument("--quick", action="store_true", help="a few steps of a small rollout: the tests' check that the benchmark runs")
    args = p.parse_args()
    args.task = args.task or ["arith"]
    if args.quick:
        args.steps, args.group_size, args.prompts, args.max_new_tokens, args.eval_prompts, args.pass_k = 3, 4, 2, 6, 4, 4
    torch.set_num_threads(args.threads)
    ws = Workspace(args.workspace)

    from londinium.model.from_hf import from_hf_state_dict
    from londinium.model.gpt import GPT
    from londinium.model.load import load_run
    from londinium.rl.objective import task_prompts
    from londinium.tasks.messages import task_items

    seed = load_config().train.seed
    sft = load_run(ws, run=args.run, checkpoint=args.checkpoint)
    room = sft.model.config.context - args.max_new_tokens
    train, _ = task_prompts(sft.tokenizer, [i for t in args.task for i in task_items(ws, t, "train")], room)
    val, _ = task_prompts(sft.tokenizer, [i for t in args.task for i in task_items(ws, t, "val")], room)
    val = val[:args.eval_prompts]
    before = evaluate(sft.model, sft.tokenizer, val, args, seed)

    # Alternating rounds (ours, then TRL, then ours...) so a change in the machine's load hits both alike;
    # the ratio is of the medians. pass@k is scored on the last round's models.
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            load_ours = os.getloadavg()[0]
            ours_steps_min = run_ours(ws, args, "rl-peer-ours")
            load_trl = os.getloadavg()[0]
            trl_steps_min, trl_weights = run_trl(ws, args, [q.item for q in train], Path(tmp) / f"round-{r}")
            rounds.append({"ours": ours_steps_min, "trl": trl_steps_min, "load_ours": load_ours, "load_trl": load_trl})
            print(f"  round {r + 1}: londinium {ours_steps_min:.1f} (load {load_ours:.1f}), TRL {trl_steps_min:.1f} "
                  f"(load {load_trl:.1f}) steps/minute: {ours_steps_min / trl_steps_min:.2f}x", flush=True)
    ours_steps_min = statistics.median(r["ours"] for r in rounds)
    trl_steps_min = statistics.median(r["trl"] for r in rounds)
    ours = evaluate(load_run(ws, run="rl-peer-ours", checkpoint="latest").model, sft.tokenizer, val, args, seed)
    cfg = sft.model.config
    trl_model = GPT(cfg)
    trl_model.load_state_dict(from_hf_state_dict(cfg, trl_weights, "TRL's trained model"))
    theirs = evaluate(trl_model, sft.tokenizer, val, args, seed)

    k = f"pass@{args.pass_k}"
    print(f"grpo peer: task(s) {', '.join(args.task)}, {args.steps} steps of {args.prompts} prompts x {args.group_size} samples, "
          f"answers <= {args.max_new_tokens} tokens, {args.threads} thread(s); held out: {len(val)} val prompts x {args.pass_k} samples")
    print(f"  RL steps/minute   londinium {ours_steps_min:8.1f}   TRL GRPOTrainer {trl_steps_min:8.1f}   ratio {ours_steps_min / trl_steps_min:.2f}x"
          f"{f' (medians of {len(rounds)} alternating rounds)' if len(rounds) > 1 else ''}")
    print(f"  pass@1            SFT {before['pass@1']:.3f}   londinium {ours['pass@1']:.3f}   TRL GRPOTrainer {theirs['pass@1']:.3f}")
    print(f"  {k:<17} SFT {before[k]:.3f}   londinium {ours[k]:.3f}   TRL GRPOTrainer {theirs[k]:.3f}")
    print(json.dumps({"ours_steps_per_min": ours_steps_min, "trl_steps_per_min": trl_steps_min, "ratio": ours_steps_min / trl_steps_min,
                      "rounds": rounds, "sft": before, "ours": ours, "trl": theirs,
                      "finite": all(math.isfinite(v) for v in (ours_steps_min, trl_steps_min))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
