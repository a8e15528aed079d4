"""DDP under torchrun: 2 CPU processes on gloo train like one, and a 2-process run SIGKILLed mid-way
and resumed ends with exactly the weights and logged losses of an uninterrupted 2-process run; under
a time budget both processes train the same planned steps."""

from __future__ import annotations

import json

import pytest
from train_helpers import (
    assert_same_weights,
    checkpoint_steps,
    cli_in_process,
    final_weights,
    logged,
    newest_checkpoint_dir,
    run,
    sft_cmd,
    train_args,
    train_cmd,
    write_conversations,
)

from londinium.checkpoint import META_FILE, load_trainer_state, verify

STEPS, KILL_AT = 18, 10


@pytest.mark.slow  # ~25 s: two torchrun launches (the default run stays under ~10 min; make test-slow runs it)
def test_ddp_resume_after_sigkill_is_bit_exact(tiny_workspace):
    ws = tiny_workspace
    ref = run(train_cmd(ws, "ddp-ref", STEPS, procs=2))
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert ref.stdout.count("max steps reached") == 1  # rank 0 speaks; rank 1 only computes

    killed = run(train_cmd(ws, "ddp-killed", STEPS, procs=2), kill_at=KILL_AT)
    assert killed.returncode != 0  # torchrun reports its workers' deaths
    assert checkpoint_steps(ws, "ddp-killed") == [6]
    assert logged(ws, "ddp-killed")[0][-1][0] == KILL_AT

    resumed = run(train_cmd(ws, "ddp-killed", STEPS, "--resume", procs=2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming from step 6") == 1

    assert_same_weights(final_weights(ws, "ddp-killed"), final_weights(ws, "ddp-ref"))
    assert logged(ws, "ddp-killed") == logged(ws, "ddp-ref")
    # The checkpoint carries every rank's RNG state, and says how many processes wrote it.
    newest = verify(newest_checkpoint_dir(ws, "ddp-ref"))
    assert json.loads((newest.path / META_FILE).read_text())["world_size"] == 2
    state = load_trainer_state(newest)
    assert len(state["rng"]) == 2 and not state["rng"][0]["torch"].equal(state["rng"][1]["torch"])


@pytest.mark.slow  # ~25 s: two torchrun launches' worth of start-up and a 6-second budget
def test_ddp_processes_agree_on_the_steps_a_time_budget_plans(tiny_workspace):
    """Both processes measure the pace (their steps all-reduce together), take the slower one and rank
    0's clock, and so plan the same steps -- and on 'wsd' revise them alike as they go: a process
    planning fewer would leave the other waiting in an all-reduce until the gloo timeout, and the run
    would not end."""
    ws = tiny_workspace
    budgeted = run(train_cmd(ws, "ddp-budget", 400, "--set", "train.max_minutes=0.1", "--set", "train.budget_reserve=0.5",
                             "--set", "train.schedule=wsd", procs=2))
    assert budgeted.returncode == 0, budgeted.stderr[-3000:]
    assert budgeted.stdout.count("sized by train.max_minutes = 0.1") == 1
    summary = json.loads(ws.run_summary_file("ddp-budget").read_text(encoding="utf-8"))
    assert summary["plan"]["by"] == "max_minutes" and checkpoint_steps(ws, "ddp-budget")[-1] == summary["step"] > 0


@pytest.mark.slow  # ~40 s: three 2-process torchrun launches
def test_ddp_sft_resume_after_sigkill_is_bit_exact(tiny_workspace, tmp_path):
    """The SFT objective under DDP: ranks read disjoint conversations and their own replay windows,
    and a 2-process SFT run SIGKILLed mid-way resumes to the uninterrupted run's weights and losses."""
    ws = tiny_workspace
    rc, _, err = cli_in_process(train_args(ws, "ddp-sft-base", 6))
    assert rc == 0, err
    data = write_conversations(ws, tmp_path / "chats.jsonl")
    ref = run(sft_cmd(ws, "ddp-sft-base", "ddp-sft-ref", STEPS, data, procs=2))
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = run(sft_cmd(ws, "ddp-sft-base", "ddp-sft-killed", STEPS, data, procs=2), kill_at=KILL_AT)
    assert killed.returncode != 0
    assert checkpoint_steps(ws, "ddp-sft-killed") == [6]
    resumed = run(sft_cmd(ws, "ddp-sft-base", "ddp-sft-killed", STEPS, data, "--resume", procs=2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming from step 6") == 1
    assert_same_weights(final_weights(ws, "ddp-sft-killed"), final_weights(ws, "ddp-sft-ref"))
    assert logged(ws, "ddp-sft-killed") == logged(ws, "ddp-sft-ref")
