"""The mixed-precision paths a GPU takes (bf16 autocast; fp16 autocast with a gradient scaler),
run on the CPU, where torch has both autocast dtypes and the scaler: a few steps learn, the
checkpoint carries the scaler's state, and a resume picks it up. (On this CPU they are slower than
fp32, which is why `auto` never picks them here.)"""

from __future__ import annotations

import math

import pytest
from train_helpers import checkpoint_steps, cli_in_process, logged, newest_checkpoint_dir, train_args

from londinium.checkpoint import load_trainer_state, verify


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_training_learns_and_resumes(tiny_workspace, dtype):
    ws, run = tiny_workspace, f"amp-{dtype}"
    args = ["--set", f"train.dtype={dtype}", "--set", "model.dropout=0.0"]
    rc, out, err = cli_in_process(train_args(ws, run, 12, *args))
    assert rc == 0, err
    assert ("bf16 autocast" if dtype == "bfloat16" else "fp16 autocast + grad scaler") in out
    train, val = logged(ws, run)
    assert all(math.isfinite(loss) for _, loss in train) and train[-1][1] < train[0][1]
    assert val and math.isfinite(val[-1][1])
    state = load_trainer_state(verify(newest_checkpoint_dir(ws, run)))
    assert ("scaler" in state and state["scaler"]) if dtype == "float16" else not state.get("scaler")

    rc, out, err = cli_in_process(train_args(ws, run, 16, "--resume", *args))
    assert rc == 0, err
    assert "resuming from step 12" in out and checkpoint_steps(ws, run)[-1] == 16


@pytest.mark.slow
def test_compiled_training_writes_checkpoints_an_uncompiled_model_loads(tiny_workspace):
    # torch.compile wraps the model; its checkpoint must still hold plain parameter names
    # (no `_orig_mod.` prefix), so eval, generate and export load it into an ordinary GPT.
    from londinium.model.load import load_run

    ws, run = tiny_workspace, "compiled"
    rc, out, err = cli_in_process(train_args(ws, run, 3, "--set", "train.compile=true", "--set", "train.eval_every=3"))
    assert rc == 0, err
    train, _ = logged(ws, run)
    assert len(train) == 3 and all(math.isfinite(loss) for _, loss in train)
    trained = load_run(ws, run=run, checkpoint="latest")
    assert trained.checkpoint.step == 3 and not any("_orig_mod" in k for k in trained.model.state_dict())
