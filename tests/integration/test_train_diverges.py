"""A run whose loss goes NaN or infinite stops with one clear line naming the step and the last good
checkpoint, which stays as it was: nothing non-finite is ever saved."""

from __future__ import annotations

import json
import math

from train_helpers import checkpoint_steps, final_weights, newest_checkpoint_dir, run, train_cmd

from londinium.checkpoint import MODEL_FILE
from londinium.files import sha256_file


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_workspace):
    ws = tiny_workspace
    good = run(train_cmd(ws, "diverge", 6))
    assert good.returncode == 0, good.stderr[-2000:]
    assert checkpoint_steps(ws, "diverge") == [6]
    kept = newest_checkpoint_dir(ws, "diverge")
    before = sha256_file(kept / MODEL_FILE)

    # An absurd learning rate: the first update blows the weights up, the next loss is NaN or inf.
    bad = run(train_cmd(ws, "diverge", 12, "--resume", "--set", "train.learning_rate=1e30", "--set", "train.grad_clip=0"))
    assert bad.returncode == 2, bad.stderr[-2000:]
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in bad.stderr, bad.stderr
    message = lines[0]
    assert "non-finite" in message and "at step 8" in message, message  # step 7 updates, step 8's loss is bad
    assert "step 6" in message and str(kept) in message and "train.learning_rate" in message, message

    assert checkpoint_steps(ws, "diverge") == [6]  # no step-12 (or any NaN) checkpoint
    assert sha256_file(kept / MODEL_FILE) == before
    assert all(bool(t.isfinite().all()) for t in final_weights(ws, "diverge").values())
    for line in ws.metrics_file("diverge").read_text().splitlines():  # strict JSON: no NaN rows
        row = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        assert row.get("loss") is None or math.isfinite(row["loss"])


def test_a_run_that_diverges_before_any_checkpoint_says_none_was_written(tiny_workspace):
    ws = tiny_workspace
    proc = run(train_cmd(ws, "diverge-early", 6, "--set", "train.learning_rate=1e30", "--set", "train.grad_clip=0",
                         "--set", "train.warmup_steps=0"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "no checkpoint was written" in proc.stderr
    assert checkpoint_steps(ws, "diverge-early") == []
