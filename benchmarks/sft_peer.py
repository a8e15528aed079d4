"""Supervised fine-tuning: `londinium sft` against TRL's `SFTTrainer` on the same base, data and machine.

    .venv/bin/python benchmarks/sft_peer.py -w WS --run BASE --data chats.jsonl [--tasks default] [--steps 60]
    .venv/bin/python benchmarks/sft_peer.py -w WS --run BASE --data chats.jsonl --quick   # the tests' mode

Both fine-tune the same checkpoint of BASE for the same steps on the same conversations, with the
loss on the assistant's tokens only: londinium through `londinium sft` (its trainer, padding per
batch, `sft.replay_share = 0` so it reads only conversations as TRL does), TRL through
`SFTTrainer(assistant_only_loss=True)` on our HF export of that checkpoint, which finds the
assistant's tokens from the chat template's `{% generation %}` markers. The same batch size, peak
learning rate, warm-up, cosine decay, AdamW betas, weight decay, clipping and thread count.

Printed: real (unpadded) tokens per second of each, and the ratio (issue 23's goal: londinium >= 1.5x
on CPU); then, at equal steps, on the held-out conversations: the mean loss of the answers' tokens
and the share of greedy answers equal to the reference, for both fine-tuned models, scored by the
same code (the answers' ids and mask from `tokenize_chat`, which equal transformers' own).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from londinium.config import load_config
from londinium.infer.chat_template import END_OF_TURN, tokenize_chat
from londinium.train.sft_data import held_out, read_conversations, task_conversations
from londinium.workspace import Workspace


def conversations(ws: Workspace, data: list[str], tasks: list[str], val_share: float) -> tuple[list, list]:
    """(train, val) as `londinium sft` splits them: a user's files by content hash, the task set by split."""
    train, val = [], []
    for path in data:
        t, v = held_out(read_conversations(path), val_share)
        train, val = train + t, val + v
    task = task_conversations(ws, ("train", "val"), tasks)
    return train + task["train"], val + task["val"]


def train_quietly(ws: Workspace, argv: list[str], name: str) -> list[dict]:
    """Run `londinium ARGV` (a training stage) in this process with its output held back (shown only
    if it fails) and return run `name`'s per-step train rows: the peer benchmarks' side of a pair."""
    from londinium.cli import main
    from londinium.train.monitor import read_metrics

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    if rc != 0:
        sys.exit(f"londinium {argv[0]} failed ({rc}):\n{out.getvalue()[-2000:]}")
    return [r for r in read_metrics(ws.metrics_file(name)) if r["type"] == "train"]


def run_ours(ws: Workspace, args: argparse.Namespace, name: str) -> float:
    """`londinium sft` in this process; real tokens per second over its steps."""
    argv = ["sft", "-w", str(ws.root), "--run", args.run, "--checkpoint", args.checkpoint, "--name", name, "--force"]
    argv += [a for f in args.data for a in ("--data", f)] + [a for t in args.tasks for a in ("--tasks", t)]
    for s in (f"sft.max_steps={args.steps}", f"sft.eval_every={args.steps}", "sft.replay_share=0", f"sft.val_share={args.val_share}",
              f"sft.learning_rate={args.lr}", f"sft.warmup_steps={args.warmup}", "sft.schedule=cosine",
              f"train.batch_size={args.batch_size}", "train.batch_tokens=0", f"train.threads={args.threads}", "train.log_every=1"):
        argv += ["--set", s]
    rows = train_quietly(ws, argv, name)
    # Steps after the first (its one-off allocations), as TRL's figure below also leaves out its first.
    return (rows[-1]["tokens"] - rows[0]["tokens"]) / (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"])


class _Clock:
    """A transformers callback: the wall time and the real tokens of every step after the first."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.t1 = 0.0
        self.tokens0 = 0
        self.tokens1 = 0

    def hooks(self) -> object:
        from transformers import TrainerCallback

        clock = self

        class Hook(TrainerCallback):
            def on_step_end(self, targs, state, control, **kw):
                if state.global_step == 1:
                    clock.t0, clock.tokens0 = time.perf_counter(), state.num_input_tokens_seen
                clock.t1, clock.tokens1 = time.perf_counter(), state.num_input_tokens_seen

        return Hook()


def run_trl(ws: Workspace, args: argparse.Namespace, train: list, out: Path) -> tuple[float, object]:
    """TRL's SFTTrainer on our export of the base checkpoint; (real tokens per second, the model)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from londinium.export.run import export_run

    cfg = load_config()
    path = export_run(ws, cfg, run=args.run, checkpoint=args.checkpoint, out=out / "base-hf", log=lambda m: None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    context = model.config.max_position_embeddings if hasattr(model.config, "max_position_embeddings") else model.config.n_positions
    dataset = Dataset.from_list([{"messages": list(c.messages)} for c in train])
    config = SFTConfig(output_dir=str(out / "trl"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                       learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=args.warmup, weight_decay=0.1,
                       adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, assistant_only_loss=True, max_length=context,
                       packing=False, padding_free=False, save_strategy="no", report_to=[], logging_steps=args.steps,
                       use_cpu=True, dataloader_num_workers=0, seed=1337, include_num_input_tokens_seen="non_padding",
                       disable_tqdm=True, eos_token=END_OF_TURN, pad_token=tokenizer.pad_token)
    clock = _Clock()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock.hooks()])
    trainer.train()
    return (clock.tokens1 - clock.tokens0) / (clock.t1 - clock.t0), trainer.model.eval()


@torch.no_grad()
def scores(forward, generate, tokenizer, val: list, max_tokens: int, context: int) -> tuple[float, float]:
    """(mean NLL of the answers' tokens, share of greedy answers equal to the reference); an answer
    is generated up to `max_tokens` or the end of the context, whichever comes first. A conversation
    longer than the context is left out, as `londinium sft` leaves it out (the task set has a few)."""
    nll, n, exact, scored = 0.0, 0, 0, 0
    for c in val:
        chat = tokenize_chat(tokenizer, list(c.messages), add_generation_prompt=False)
        if len(chat.ids) > context + 1:
            continue
        scored += 1
        ids = torch.tensor([chat.ids])
        logits = forward(ids[:, :-1]).float()
        mask = torch.tensor(chat.assistant_mask[1:], dtype=torch.bool)
        losses = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="none")
        nll, n = nll + float(losses[mask].sum()), n + int(mask.sum())
        prompt = tokenize_chat(tokenizer, list(c.messages[:-1])).ids
        exact += generate(prompt, min(max_tokens, context - len(prompt))).strip() == c.messages[-1]["content"].strip()
    return nll / max(1, n), exact / max(1, scored)


def parse_fine_tuning(p: argparse.ArgumentParser) -> tuple[argparse.Namespace, Workspace, list, list]:
    """The data and settings both sides of a fine-tuning peer share (distill_peer.py too), parsed:
    (the arguments, the workspace, the train and held-out conversations)."""
    p.add_argument("--data", action="append", default=[], help="JSONL conversations (repeatable)")
    p.add_argument("--tasks", action="append", default=[], help="task-set tasks, or 'default'")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--val-share", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a few steps: the tests' check that the benchmark runs")
    args = p.parse_args()
    if args.quick:
        args.steps, args.warmup = 4, 1
    if not args.data and not args.tasks:
        p.error("give --data FILE and/or --tasks NAME")
    torch.set_num_threads(args.threads)
    ws = Workspace(args.workspace)
    train, val = conversations(ws, args.data, args.tasks, args.val_share)
    return args, ws, train, val


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", "-w", required=True)
    p.add_argument("--run", required=True, help="the base run both fine-tune")
    p.add_argument("--checkpoint", default="latest")
    p.add_argument("--max-tokens", type=int, default=32, help="greedy answer length for the exact-match score")
    args, ws, train, val = parse_fine_tuning(p)

    from londinium.infer.engine import Engine
    from londinium.infer.sampling import SamplingParams
    from londinium.model.load import load_run

    with tempfile.TemporaryDirectory() as tmp:
        ours_tok_s = run_ours(ws, args, "sft-peer-ours")
        trl_tok_s, trl_model = run_trl(ws, args, train, Path(tmp))
        trained = load_run(ws, run="sft-peer-ours", checkpoint="latest")
        engine = Engine.from_trained(trained)
        end = engine.tokenizer.token_to_id(END_OF_TURN)
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, stop_token_ids=[end])

        def ours_generate(prompt: list[int], k: int) -> str:
            return engine.generate([prompt], params.replace(max_tokens=k))[0].text

        def trl_generate(prompt: list[int], k: int) -> str:
            out = trl_model.generate(torch.tensor([prompt]), max_new_tokens=k, do_sample=False, eos_token_id=end, pad_token_id=end)
            return engine.tokenizer.decode(out[0, len(prompt):].tolist(), skip_special_tokens=True)

        ours = scores(lambda x: trained.model(x)[0], ours_generate, engine.tokenizer, val, args.max_tokens, engine.context)
        theirs = scores(lambda x: trl_model(x).logits, trl_generate, engine.tokenizer, val, args.max_tokens, engine.context)

    print(f"sft peer: {len(train)} train / {len(val)} held-out conversations, {args.steps} steps of batch {args.batch_size}, "
          f"{args.threads} thread(s)")
    print(f"  tokens/s (real)    londinium {ours_tok_s:10,.0f}   TRL SFTTrainer {trl_tok_s:10,.0f}   ratio {ours_tok_s / trl_tok_s:.2f}x")
    print(f"  answer loss        londinium {ours[0]:10.4f}   TRL SFTTrainer {theirs[0]:10.4f}   (held out; lower is better)")
    print(f"  exact answers      londinium {ours[1]:10.1%}   TRL SFTTrainer {theirs[1]:10.1%}")
    print(json.dumps({"ours_tok_s": ours_tok_s, "trl_tok_s": trl_tok_s, "ratio": ours_tok_s / trl_tok_s,
                      "ours_answer_loss": ours[0], "trl_answer_loss": theirs[0], "ours_exact": ours[1], "trl_exact": theirs[1],
                      "finite": all(math.isfinite(v) for v in (ours_tok_s, trl_tok_s, ours[0], theirs[0]))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
