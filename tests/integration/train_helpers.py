"""Shared pieces of the training tests: a tiny model config and subprocess launchers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from londinium.checkpoint import MODEL_FILE, list_checkpoints
from londinium.train.monitor import read_metrics
from londinium.train.trainer import KILL_ENV
from londinium.workspace import Workspace

# 2 layers, 64 wide, context 32; dropout on so that the torch RNG matters; batch_tokens 512 = two
# micro-batches of 8 x 32 on one process (gradient accumulation) and one per rank on two.
# One thread everywhere: the resumed run must use the kernels (and reduction order) of the first.
TINY = [
    "model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.context=32", "model.dropout=0.1",
    "train.batch_size=8", "train.batch_tokens=512", "train.warmup_steps=4", "train.learning_rate=3e-3",
    "train.eval_every=6", "train.eval_batches=2", "train.log_every=1", "train.keep_last=2",
    "train.threads=1",  # a tiny model gains nothing from a second thread on a busy 2-core machine
]


def sets(steps: int, extra: list[str] = ()) -> list[str]:
    out = []
    for s in [*TINY, f"train.max_steps={steps}", *extra]:
        out += ["--set", s]
    return out


def train_args(ws: Workspace, run: str, steps: int, *flags: str, run_flag: str = "--run") -> list[str]:
    return ["train", "-w", str(ws.root), run_flag, run, *sets(steps), *flags]


def train_cmd(ws: Workspace, run: str, steps: int, *flags: str, procs: int = 1) -> list[str]:
    # torchrun's parser takes `--run` for an ambiguous abbreviation of its --run-path.
    args = train_args(ws, run, steps, *flags, run_flag="--run" if procs == 1 else "--run-name")
    if procs == 1:
        return [sys.executable, "-m", "londinium", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "londinium", *args]


def run(cmd: list[str], kill_at: int | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def cli_in_process(args: list[str]) -> tuple[int, str, str]:
    """`londinium <args>` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    import contextlib
    import io

    from londinium.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def final_weights(ws: Workspace, run: str) -> dict[str, torch.Tensor]:
    newest = list_checkpoints(ws.checkpoints_dir(run))[-1]
    return load_file(str(newest.path / MODEL_FILE))


def logged(ws: Workspace, run: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    rows = read_metrics(ws.metrics_file(run))
    train = [(r["step"], r["loss"]) for r in rows if r["type"] == "train"]
    val = [(r["step"], r["val_loss"]) for r in rows if r["type"] == "eval"]
    return train, val


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def checkpoint_steps(ws: Workspace, run: str) -> list[int]:
    return [c.step for c in list_checkpoints(ws.checkpoints_dir(run))]


def newest_checkpoint_dir(ws: Workspace, run: str) -> Path:
    return list_checkpoints(ws.checkpoints_dir(run))[-1].path


# ---- supervised fine-tuning ------------------------------------------------------------------------

# [train] as the helpers' runs, less the model (the base's) and what [sft] sets instead.
SFT_TRAIN = [s for s in TINY if s.startswith("train.") and s.split("=")[0] not in ("train.warmup_steps", "train.learning_rate", "train.eval_every")]
SFT_TINY = ["sft.warmup_steps=2", "sft.learning_rate=3e-3", "sft.eval_every=6", "sft.replay_share=0.25"]


def write_conversations(ws: Workspace, path: Path, n: int = 48, answer_prefix: str = "") -> Path:
    """A user's JSONL cut from the tiny corpus: the start of a sentence -> its next two words, half in
    the messages form (some with a system message), half as prompt/completion; each fits the tiny
    model's context of 32 (without `answer_prefix`, which starts every answer)."""
    import json

    from londinium.files import read_jsonl

    lines = []
    for row in read_jsonl(ws.corpus_split("train")):
        for sentence in row["text"].split(". "):
            words = sentence.split()
            if len(words) >= 6 and len(lines) < n:
                prompt, answer = " ".join(words[:3]), answer_prefix + " ".join(words[3:5])
                if len(lines) % 2:
                    lines.append({"prompt": prompt, "completion": answer})
                else:
                    system = [{"role": "system", "content": "Be brief."}] if len(lines) % 4 == 0 else []
                    lines.append({"messages": [*system, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def sft_args(ws: Workspace, base: str, name: str, steps: int, data: Path, *flags: str, run_flag: str = "--run") -> list[str]:
    out = ["sft", "-w", str(ws.root), run_flag, base, "--name", name, "--data", str(data)]
    for s in [*SFT_TRAIN, *SFT_TINY, f"sft.max_steps={steps}"]:
        out += ["--set", s]
    return [*out, *flags]


def sft_cmd(ws: Workspace, base: str, name: str, steps: int, data: Path, *flags: str, procs: int = 1) -> list[str]:
    args = sft_args(ws, base, name, steps, data, *flags, run_flag="--run" if procs == 1 else "--run-name")
    if procs == 1:
        return [sys.executable, "-m", "londinium", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "londinium", *args]


# ---- distillation ---------------------------------------------------------------------------------


def distill_args(ws: Workspace, teacher: str, name: str, steps: int, *flags: str, extra: list[str] = ()) -> list[str]:
    """`londinium distill` of a student of the helpers' tiny shape (less what `extra` changes)."""
    return ["distill", "-w", str(ws.root), "--teacher", teacher, "--name", name, *sets(steps, extra), *flags]


def distill_cmd(ws: Workspace, teacher: str, name: str, steps: int, *flags: str, extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "londinium", *distill_args(ws, teacher, name, steps, *flags, extra=extra)]
