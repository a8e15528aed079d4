"""The run's life cycle: Ctrl-C saves and exits 130, finished runs are up to date, --force starts
over, the data budget warns, and a resume into another architecture is refused by name. (Time and
token budgets: test_train_budget.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from train_helpers import checkpoint_steps, cli_in_process, logged, train_args, train_cmd


def test_ctrl_c_saves_a_checkpoint_and_exits_130_then_resumes(tiny_workspace):
    ws = tiny_workspace
    proc = subprocess.Popen(train_cmd(ws, "sigint", 100_000, "--set", "train.eval_every=100000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while len(logged(ws, "sigint")[0]) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    step = checkpoint_steps(ws, "sigint")[-1]
    assert step >= 3 and f"interrupted at step {step}" in out
    assert f"Continue with `londinium train --resume --run sigint -w {ws.root}`" in out  # a command that works as printed
    assert logged(ws, "sigint")[0][-1][0] == step  # it stopped at the end of the step it was in

    rc, out, err = cli_in_process(train_args(ws, "sigint", step + 2, "--resume", "--set", "train.eval_every=100000"))
    assert rc == 0, err
    assert f"resuming from step {step}" in out
    assert checkpoint_steps(ws, "sigint")[-1] == step + 2


def test_a_finished_run_is_up_to_date_and_force_starts_over(tiny_workspace):
    ws = tiny_workspace
    assert cli_in_process(train_args(ws, "short", 4))[0] == 0
    first = logged(ws, "short")
    rc, out, _ = cli_in_process(train_args(ws, "short", 4))
    assert rc == 0 and "up to date" in out
    assert cli_in_process(train_args(ws, "short", 4, "--set", "train.threads=2", "--resume"))[1].count("up to date") == 1
    rc, out, _ = cli_in_process(train_args(ws, "short", 4, "--force"))
    assert rc == 0 and "up to date" not in out
    assert logged(ws, "short") == first  # from scratch again: the same run, logged once
    assert checkpoint_steps(ws, "short") == [4]


def test_data_budget_warns_when_the_plan_repeats_the_corpus(tiny_workspace):
    rc, out, _ = cli_in_process(train_args(tiny_workspace, "budget", 2, "--set", "train.budget_warn_epochs=0.05"))
    assert rc == 0
    assert "unique train tokens" in out and "epochs" in out
    assert "warning: the plan reads the train split" in out and "train.budget_warn_epochs" in out


def test_resume_into_another_architecture_is_refused_by_field(tiny_workspace):
    ws = tiny_workspace
    assert cli_in_process(train_args(ws, "arch", 3))[0] == 0
    rc, _, err = cli_in_process(train_args(ws, "arch", 6, "--resume", "--set", "model.n_embd=32"))
    assert rc == 2
    assert "model.n_embd: 64 -> 32" in err and "--run NAME" in err


def test_a_tokenizer_trained_for_another_vocabulary_is_named_with_the_commands_to_retrain(tiny_workspace):
    """The fixture's tokenizer was trained with tokenizer.vocab_size = 512; a config asking for the
    default 8192 trains on the workspace's tokenizer (the shards' ids) and says so, with the commands."""
    ws = tiny_workspace
    vocab = json.loads(ws.shard_meta("train").read_text(encoding="utf-8"))["vocab_size"]
    rc, out, err = cli_in_process(train_args(ws, "tok-other", 2))
    assert rc == 0, err
    assert (f"warning: the workspace's tokenizer was trained with tokenizer.vocab_size = 512 ({vocab:,} ids), this config "
            f"asks for 8192; the model takes the workspace's {vocab:,}") in out
    assert (f"`londinium tokenizer train --set tokenizer.vocab_size=8192 -w {ws.root}` and "
            f"`londinium data prepare --set tokenizer.vocab_size=8192 -w {ws.root}` first") in out
    rc, out, err = cli_in_process(train_args(ws, "tok-same", 2, "--set", "tokenizer.vocab_size=512"))
    assert rc == 0, err
    assert "tokenizer was trained with" not in out
