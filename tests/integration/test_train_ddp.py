"""DDP under torchrun: 2 CPU processes on gloo train like one, and a 2-process run SIGKILLed mid-way
and resumed ends with exactly the weights and logged losses of an uninterrupted 2-process run."""

from __future__ import annotations

import json

from train_helpers import assert_same_weights, checkpoint_steps, final_weights, logged, newest_checkpoint_dir, run, train_cmd

from londinium.checkpoint import META_FILE, load_trainer_state, verify

STEPS, KILL_AT = 18, 10


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
