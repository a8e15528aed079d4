"""A budget sizes the schedule: `train.max_minutes` plans the steps from the pace measured on this
machine, `train.max_tokens` from the tokens a step takes. A time plan on 'wsd' follows a machine that
slows down, survives SIGKILL and resume bit-exactly, and the run is bit-identical to one given its
final plan directly; a time budget that still runs out (on 'cosine') ends the run with a warning and
a record.

Timings are never asserted: the tests read the plan and outcome the run recorded (summary.json,
metrics.jsonl, checkpoints). The budgeted runs keep half the budget in reserve: a shared machine's
pace changes 2-3x within seconds. The slowdown is simulated by the trainer's SLOW_ENV hook.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from train_helpers import (
    assert_same_weights,
    checkpoint_steps,
    cli_in_process,
    final_weights,
    logged,
    newest_checkpoint_dir,
    run,
    train_args,
)

from londinium.checkpoint import EVAL_FILE
from londinium.config import TrainConfig
from londinium.train.monitor import read_metrics
from londinium.train.schedule import lr_at
from londinium.train.trainer import SLOW_ENV

MAX_STEPS = 400  # the configured schedule the budgets stand in for (warm-up 4 of it: train_helpers.TINY)
# The presets' schedule; evaluations every 12 steps rather than 6 so that more of the seconds train.
WSD = ["--set", "train.schedule=wsd", "--set", "train.eval_every=12"]
MINUTES, RESERVE = 0.2, 0.5  # 12 s, half of it planned
BUDGET = ["--set", f"train.max_minutes={MINUTES}", "--set", f"train.budget_reserve={RESERVE}", *WSD]
SLOWER_S = "0.1"  # what every step sleeps after the pace was measured: a machine that slowed


def summary(ws, run_name: str) -> dict:
    return json.loads(ws.run_summary_file(run_name).read_text(encoding="utf-8"))


def planned_args(ws, run_name: str, plan: dict) -> list[str]:
    """The same run given the plan's steps and warm-up directly, no budget."""
    return train_args(ws, run_name, plan["steps"], "--set", f"train.warmup_steps={plan['warmup_steps']}", *WSD)


@pytest.fixture(scope="module")
def budgeted(tiny_workspace):
    """A 12-second budget on 'wsd' whose steps turn slower once the pace is measured, SIGKILLed after
    step 14 (its newest checkpoint: step 12) and resumed: (workspace, the killed run's output, the
    resumed run's output)."""
    ws = tiny_workspace
    args = train_args(ws, "paced", MAX_STEPS, *BUDGET)
    os.environ[SLOW_ENV] = SLOWER_S
    try:
        died = run([sys.executable, "-m", "londinium", *args], kill_at=14)
        assert died.returncode == -9, ("a plan of 14 steps or fewer ends before the kill", died.returncode, died.stdout[-2000:])
        rc, out, err = cli_in_process([*args, "--resume"])
        assert rc == 0, err
    finally:
        del os.environ[SLOW_ENV]
    return ws, died.stdout, out


def test_a_time_budget_plans_a_schedule_that_completes_within_it(budgeted):
    ws, first, _ = budgeted
    s = summary(ws, "paced")
    plan = s["plan"]
    assert plan["by"] == "max_minutes" and 14 < plan["steps"] < MAX_STEPS  # 12 s cannot hold the configured 400
    assert plan["expected_s"] < MINUTES * 60 and plan["step_s"] > 0 and plan["interval_s"] > 0
    assert s["schedule_complete"] and s["step"] == plan["steps"] and s["stopped"] == "planned_steps" and s["warning"] is None
    # The banner showed the plan first made, its warm-up that plan's share of the configured one;
    # the run followed the final plan, its decay ending on the last step (every step is logged:
    # train_helpers.TINY has log_every 1).
    first_steps = plan["first_steps"] or plan["steps"]
    assert f"plan: {first_steps:,} steps (warm-up {plan['warmup_steps']})" in first and "ms a step (median of 5" in first
    assert plan["warmup_steps"] == round(4 * first_steps / MAX_STEPS)
    schedule = TrainConfig(learning_rate=3e-3, max_steps=plan["steps"], warmup_steps=plan["warmup_steps"], schedule="wsd")
    rows = [r for r in read_metrics(ws.metrics_file("paced")) if r["type"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, plan["steps"] + 1))
    assert [r["lr"] for r in rows] == [lr_at(step, schedule) for step in range(plan["steps"])]
    assert rows[-1]["lr"] < 3e-3  # it decayed
    assert checkpoint_steps(ws, "paced")[-1] == plan["steps"]


def test_a_wsd_plan_follows_the_pace_the_steps_really_have(budgeted):
    """The steps slept after the pace was measured: the plan was made again from their real pace
    while the schedule held its peak, and said so."""
    ws, _, resumed = budgeted
    plan = summary(ws, "paced")["plan"]
    assert plan["first_steps"] and plan["first_steps"] != plan["steps"]
    assert f"{plan['first_steps']:,} steps first, {plan['steps']:,} in the end" in resumed


def test_a_budgeted_run_killed_and_resumed_keeps_its_plan_and_equals_one_given_its_steps(budgeted):
    """The resumed run took the plan its checkpoint held -- no second measurement -- and the whole run
    (pace measured on its own model and optimiser, revised, killed, resumed) ends bit-identical to a
    run given its final steps and warm-up directly."""
    ws, _, resumed = budgeted
    assert "resuming from step 12" in resumed and "kept from the checkpoint" in resumed and "measuring the pace" not in resumed
    plan = summary(ws, "paced")["plan"]
    rc, _, err = cli_in_process(planned_args(ws, "paced-direct", plan))
    assert rc == 0, err
    assert summary(ws, "paced-direct")["plan"]["by"] == "max_steps"
    assert_same_weights(final_weights(ws, "paced"), final_weights(ws, "paced-direct"))
    assert logged(ws, "paced") == logged(ws, "paced-direct")


def test_a_budget_given_on_resume_is_planned_from_the_checkpoint_and_measured_without_a_trace(tiny_workspace):
    """A finished 12-step run resumed with a time budget measures the pace on its restored weights and
    AdamW state (not empty now), plans the rest, and ends exactly like the same checkpoint resumed
    with the planned steps given directly."""
    ws = tiny_workspace
    assert cli_in_process(train_args(ws, "budget-later", 12, *WSD))[0] == 0
    shutil.copytree(ws.run_dir("budget-later"), ws.run_dir("budget-later-direct"))
    rc, out, err = cli_in_process(train_args(ws, "budget-later", 12, "--resume", *BUDGET, "--set", "train.max_minutes=0.1"))
    assert rc == 0, err
    assert "resuming from step 12" in out and "measuring the pace" in out
    plan = summary(ws, "budget-later")["plan"]
    assert plan["steps"] > 12 and plan["warmup_steps"] == 4  # longer than max_steps: the warm-up keeps its length
    rc, _, err = cli_in_process(train_args(ws, "budget-later-direct", plan["steps"], "--resume", *WSD))
    assert rc == 0, err
    assert_same_weights(final_weights(ws, "budget-later"), final_weights(ws, "budget-later-direct"))
    assert logged(ws, "budget-later") == logged(ws, "budget-later-direct")


def test_max_tokens_trains_exactly_the_steps_it_implies_with_the_warmup_scaled(tiny_workspace):
    ws = tiny_workspace
    rc, out, err = cli_in_process(train_args(ws, "budget-tokens", 20, "--set", "train.max_tokens=5000"))
    assert rc == 0, err
    steps = 5000 // 512  # train_helpers.TINY: batch_tokens 512
    assert checkpoint_steps(ws, "budget-tokens")[-1] == steps and "measuring the pace" not in out
    plan = summary(ws, "budget-tokens")["plan"]
    assert (plan["by"], plan["steps"], plan["warmup_steps"]) == ("max_tokens", steps, round(4 * steps / 20))
    first = read_metrics(ws.metrics_file("budget-tokens"))[0]
    assert first["lr"] == pytest.approx(3e-3 / plan["warmup_steps"])


def test_a_budget_that_runs_out_warns_names_the_step_and_records_the_shortfall(tiny_workspace, monkeypatch):
    """The steps sleep after the pace was measured (SLOW_ENV): on 'cosine' (which
    decays from the start and so cannot be revised) the plan cannot be met; the run stops at the budget
    with a checkpoint, an evaluation and a plot, exit 0, and says by how much it fell short."""
    ws = tiny_workspace
    monkeypatch.setenv(SLOW_ENV, "0.15")
    rc, out, err = cli_in_process(train_args(ws, "budget-cut", MAX_STEPS, "--set", "train.max_minutes=0.08", "--set", "train.schedule=cosine"))
    assert rc == 0, err
    s = summary(ws, "budget-cut")
    reached, planned = s["step"], s["plan"]["steps"]
    assert 0 < reached < planned and not s["schedule_complete"] and s["shortfall_steps"] == planned - reached
    assert s["stopped"] == "max_minutes" and s["warning"].startswith(f"warning: the time budget (train.max_minutes = 0.08) ran out "
                                                                    f"at step {reached:,} of the planned {planned:,}")
    assert f"train: {s['warning']}" in out and f"max minutes reached at step {reached}" in out
    assert "(the machine slowed)" in s["warning"] and "--set train.max_minutes=" in s["warning"]
    newest = newest_checkpoint_dir(ws, "budget-cut")
    assert json.loads((newest / EVAL_FILE).read_text())["step"] == reached == int(newest.name.split("-")[1])
    assert ws.loss_plot("budget-cut").read_bytes().startswith(b"\x89PNG")
