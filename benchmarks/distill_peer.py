"""Distillation against TRL's GKDTrainer: the same teacher, student and conversations on this machine.

    .venv/bin/python benchmarks/distill_peer.py -w WS --teacher RUN --run BASE --data chats.jsonl [--steps 60]
    .venv/bin/python benchmarks/distill_peer.py -w WS --teacher RUN --run BASE --data chats.jsonl --quick   # the tests' mode

TRL's GKD (Agarwal et al., "On-Policy Distillation of Language Models") with `lmbda = 0` (no
student-generated sequences: off-policy) and `beta = 0` (its generalised JSD is then the forward KL
from the teacher, at temperature 1, with no cross-entropy term) is `londinium distill --sft BASE`
with alpha = 0, T = 1 and forward KL: both fine-tune the same checkpoint of BASE on the same
conversations against the same teacher checkpoint, the loss on the assistant's tokens only. TRL runs
on our HF exports of both (`londinium export`), through its `DataCollatorForChatML` (the answer is
the last assistant turn, found through the exported chat template). The same steps, batch size,
peak learning rate, warm-up, cosine decay, AdamW betas, weight decay, clipping and thread count, as
`sft_peer.py` sets them for SFTTrainer.

Printed: real (unpadded) tokens per second of each and the ratio (issue 24's goal: ours >= 2x on
CPU); then, at equal steps, the held-out conversations' answer loss of both students, scored by the
same code (`sft_peer.scores`), and of the teacher and the student's base for scale. On a shared
machine one pair of runs says little: `--rounds R` runs R pairs, alternating which side goes first,
records the 1-minute load average before each run, and takes the median of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from sft_peer import _Clock, parse_fine_tuning, scores, train_quietly

from londinium.config import load_config
from londinium.infer.chat_template import END_OF_TURN
from londinium.workspace import Workspace


def run_ours(ws: Workspace, args: argparse.Namespace, name: str) -> float:
    """`londinium distill --sft` in this process (alpha 0, T 1, forward KL); real tokens per second."""
    argv = ["distill", "-w", str(ws.root), "--teacher", args.teacher, "--teacher-checkpoint", args.teacher_checkpoint,
            "--sft", args.run, "--name", name, "--force"]
    for s in (f"sft.checkpoint={args.checkpoint}", f"sft.data={json.dumps([str(Path(d).resolve()) for d in args.data])}",
              f"sft.tasks={json.dumps(args.tasks)}", f"sft.max_steps={args.steps}", f"sft.eval_every={args.steps}",
              "sft.replay_share=0", f"sft.val_share={args.val_share}", f"sft.learning_rate={args.lr}",
              f"sft.warmup_steps={args.warmup}", "sft.schedule=cosine", "distill.alpha=0", "distill.temperature=1",
              "distill.kl=forward", f"train.batch_size={args.batch_size}", "train.batch_tokens=0", f"train.threads={args.threads}",
              "train.log_every=1"):
        argv += ["--set", s]
    rows = train_quietly(ws, argv, name)  # after the first step, as TRL's clock below
    return (rows[-1]["tokens"] - rows[0]["tokens"]) / (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"])


def export(ws: Workspace, run: str, checkpoint: str, out: Path) -> Path:
    from londinium.export.run import export_run

    return export_run(ws, load_config(), run=run, checkpoint=checkpoint, out=out, log=lambda m: None)


def run_trl(args: argparse.Namespace, train: list, student_dir: Path, teacher_dir: Path,
            out: Path) -> tuple[float, object, object]:
    """TRL's GKDTrainer (lmbda 0, beta 0) on our exports; (real tokens per second, the student, the teacher)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    context = getattr(student.config, "max_position_embeddings", None) or student.config.n_positions
    dataset = Dataset.from_list([{"messages": list(c.messages)} for c in train])
    config = GKDConfig(output_dir=str(out / "trl"), lmbda=0.0, beta=0.0, max_steps=args.steps,
                       per_device_train_batch_size=args.batch_size, learning_rate=args.lr, lr_scheduler_type="cosine",
                       warmup_steps=args.warmup, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
                       max_length=context, save_strategy="no", report_to=[], logging_steps=args.steps, use_cpu=True,
                       dataloader_num_workers=0, seed=1337, include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    clock = _Clock()
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[clock.hooks()])
    trainer.train()
    return (clock.tokens1 - clock.tokens0) / (clock.t1 - clock.t0), trainer.model.eval(), teacher.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", "-w", required=True)
    p.add_argument("--teacher", required=True, help="the teacher run")
    p.add_argument("--teacher-checkpoint", default="latest")
    p.add_argument("--run", required=True, help="the student's base run, which both fine-tune")
    p.add_argument("--checkpoint", default="latest")
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs, alternating which goes first (median ratio)")
    args, ws, train, val = parse_fine_tuning(p)

    from londinium.model.load import load_run
    from londinium.tokenizer.codec import load_tokenizer

    tokenizer = load_tokenizer(ws)
    with tempfile.TemporaryDirectory() as tmp:
        student_dir = export(ws, args.run, args.checkpoint, Path(tmp) / "student-hf")
        teacher_dir = export(ws, args.teacher, args.teacher_checkpoint, Path(tmp) / "teacher-hf")
        rounds = []
        for r in range(args.rounds):
            sides: dict[str, tuple[float, float]] = {}  # side -> (load average before it, real tokens/s)
            for side in (("ours", "trl") if r % 2 == 0 else ("trl", "ours")):  # alternate which goes first
                load = os.getloadavg()[0]
                if side == "ours":
                    sides["ours"] = (load, run_ours(ws, args, "distill-peer-ours"))
                else:
                    tok_s, trl_student, trl_teacher = run_trl(args, train, student_dir, teacher_dir, Path(tmp) / f"round-{r}")
                    sides["trl"] = (load, tok_s)
            rounds.append(sides)
            print(f"  round {r + 1}: londinium {sides['ours'][1]:8,.0f} tok/s (load {sides['ours'][0]:.1f})   "
                  f"TRL GKDTrainer {sides['trl'][1]:8,.0f} tok/s (load {sides['trl'][0]:.1f})   "
                  f"ratio {sides['ours'][1] / sides['trl'][1]:.2f}x", flush=True)
        ours_tok_s = statistics.median(s["ours"][1] for s in rounds)
        trl_tok_s = statistics.median(s["trl"][1] for s in rounds)
        ratio = statistics.median(s["ours"][1] / s["trl"][1] for s in rounds)
        loads = [s[side][0] for s in rounds for side in ("ours", "trl")]
        ours_model = load_run(ws, run="distill-peer-ours", checkpoint="latest").model
        base = load_run(ws, run=args.run, checkpoint=args.checkpoint).model
        context = ours_model.config.context
        no_generation = (lambda prompt, k: "")  # answer loss only: the exact-match half of `scores` is not read

        def loss(forward) -> float:
            return scores(forward, no_generation, tokenizer, val, 1, context)[0]

        ours = loss(lambda x: ours_model(x)[0])
        theirs = loss(lambda x: trl_student(x).logits)
        teacher, before = loss(lambda x: trl_teacher(x).logits), loss(lambda x: base(x)[0])

    print(f"distill peer: {len(train)} train / {len(val)} held-out conversations, {args.steps} steps of batch {args.batch_size}, "
          f"{args.threads} thread(s); alpha 0, T 1, forward KL (GKD lmbda 0, beta 0)")
    print(f"  tokens/s (real)    londinium {ours_tok_s:10,.0f}   TRL GKDTrainer {trl_tok_s:10,.0f}   ratio {ratio:.2f}x "
          f"(median of {len(rounds)} round(s), load {min(loads):.1f}-{max(loads):.1f})")
    print(f"  answer loss        londinium {ours:10.4f}   TRL GKDTrainer {theirs:10.4f}   (held out; lower is better)")
    print(f"  for scale          teacher   {teacher:10.4f}   student's base {before:10.4f}")
    print(json.dumps({"ours_tok_s": ours_tok_s, "trl_tok_s": trl_tok_s, "ratio": ratio, "ours_answer_loss": ours,
                      "rounds": [{"ours_tok_s": s["ours"][1], "ours_load": s["ours"][0], "trl_tok_s": s["trl"][1],
                                  "trl_load": s["trl"][0]} for s in rounds],
                      "trl_answer_loss": theirs, "teacher_answer_loss": teacher, "base_answer_loss": before,
                      "finite": all(math.isfinite(v) for v in (ours_tok_s, trl_tok_s, ours, theirs))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
