"""A budget sizes the schedule: `train.max_minutes` plans the steps from the pace measured on this
machine, `train.max_tokens` from the tokens a step takes. The plan's run is bit-identical to one
given its steps directly, survives SIGKILL and resume bit-exactly, and a time budget that still
runs out (a machine that slowed after it was measured) ends the run with a warning and a record.

Timings are never asserted: the tests read the plan and outcome the run recorded (summary.json,
metrics.jsonl, checkpoints). The budgets keep a generous train.budget_reserve because the machine is
shared; the slowdown is simulated by the trainer's SLOW_ENV hook.
"""

from __future__ import annotations

import json
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
# 9 s, of which the plan may use 40%: room for a shared machine to run 2x slower than it was measured.
MINUTES, RESERVE = 0.15, 0.6
BUDGET = ["--set", f"train.max_minutes={MINUTES}", "--set", f"train.budget_reserve={RESERVE}"]


def summary(ws, run_name: str) -> dict:
    return json.loads(ws.run_summary_file(run_name).read_text(encoding="utf-8"))


def planned_args(ws, run_name: str, plan: dict) -> list[str]:
    """The same run given the plan's steps and warm-up directly, no budget."""
    return train_args(ws, run_name, plan["steps"], "--set", f"train.warmup_steps={plan['warmup_steps']}")


@pytest.fixture(scope="module")
def budgeted(tiny_workspace):
    rc, out, err = cli_in_process(train_args(tiny_workspace, "budget-time", MAX_STEPS, *BUDGET))
    assert rc == 0, err
    return tiny_workspace, out


def test_a_time_budget_plans_a_schedule_that_completes_within_it(budgeted):
    ws, out = budgeted
    s = summary(ws, "budget-time")
    plan = s["plan"]
    assert plan["by"] == "max_minutes" and 8 < plan["steps"] < MAX_STEPS  # 9 s cannot hold the configured 400
    assert plan["expected_s"] < MINUTES * 60 and plan["step_s"] > 0 and plan["interval_s"] > 0
    assert s["schedule_complete"] and s["step"] == plan["steps"] and s["stopped"] == "planned_steps" and s["warning"] is None
    # The banner showed the plan, and the run followed it: warm-up scaled to the plan's share, the
    # decay ending on its last step (every step is logged: train_helpers.TINY has log_every 1).
    assert f"plan: {plan['steps']:,} steps (warm-up {plan['warmup_steps']})" in out and "ms a step (median of 5" in out
    assert plan["warmup_steps"] == round(4 * plan["steps"] / MAX_STEPS)
    schedule = TrainConfig(learning_rate=3e-3, max_steps=plan["steps"], warmup_steps=plan["warmup_steps"])
    rows = [r for r in read_metrics(ws.metrics_file("budget-time")) if r["type"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, plan["steps"] + 1))
    assert [r["lr"] for r in rows] == [lr_at(step, schedule) for step in range(plan["steps"])]
    assert rows[-1]["lr"] < 3e-3 * 0.2  # decayed (cosine to a tenth of the peak)
    assert checkpoint_steps(ws, "budget-time")[-1] == plan["steps"]


def test_the_budgeted_run_is_bit_identical_to_one_given_its_planned_steps(budgeted):
    """The pace was measured on the run's own model and optimiser; nothing of it may remain."""
    ws, _ = budgeted
    plan = summary(ws, "budget-time")["plan"]
    rc, _, err = cli_in_process(planned_args(ws, "budget-direct", plan))
    assert rc == 0, err
    assert summary(ws, "budget-direct")["plan"]["by"] == "max_steps"
    assert_same_weights(final_weights(ws, "budget-time"), final_weights(ws, "budget-direct"))
    assert logged(ws, "budget-time") == logged(ws, "budget-direct")


def test_a_budgeted_run_killed_and_resumed_keeps_its_plan_bit_exactly(tiny_workspace):
    """SIGKILLed after step 8 (its checkpoint is step 6), the run resumes with the plan its
    checkpoint holds -- no second measurement, which would plan other steps -- and ends exactly
    like a run given that plan's steps directly."""
    ws = tiny_workspace
    args = train_args(ws, "budget-killed", MAX_STEPS, *BUDGET)
    died = run([sys.executable, "-m", "londinium", *args], kill_at=8)
    assert died.returncode == -9, (died.returncode, died.stderr[-2000:])
    rc, out, err = cli_in_process([*args, "--resume"])
    assert rc == 0, err
    assert "resuming from step 6" in out and "kept from the checkpoint" in out and "measuring the pace" not in out
    plan = summary(ws, "budget-killed")["plan"]
    assert f"plan: {plan['steps']:,} steps" in died.stdout  # the plan the killed process made
    rc, _, err = cli_in_process(planned_args(ws, "budget-killed-direct", plan))
    assert rc == 0, err
    assert_same_weights(final_weights(ws, "budget-killed"), final_weights(ws, "budget-killed-direct"))
    assert logged(ws, "budget-killed") == logged(ws, "budget-killed-direct")


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


def test_a_wsd_plan_follows_a_machine_that_slowed_and_still_decays_within_the_budget(tiny_workspace, monkeypatch):
    """The steps sleep after the pace was measured (SLOW_ENV): on 'wsd' the plan is revised from the
    pace the steps really have while it holds the peak, so the decay still fits, and the run equals
    one given the final plan directly."""
    ws = tiny_workspace
    monkeypatch.setenv(SLOW_ENV, "0.05")
    wsd = ["--set", "train.schedule=wsd"]
    rc, out, err = cli_in_process(train_args(ws, "budget-wsd", MAX_STEPS, *BUDGET, *wsd))
    assert rc == 0, err
    s = summary(ws, "budget-wsd")
    plan = s["plan"]
    assert s["schedule_complete"] and s["warning"] is None
    assert plan["first_steps"] > plan["steps"] and f"{plan['first_steps']:,} steps first, {plan['steps']:,} in the end" in out
    monkeypatch.delenv(SLOW_ENV)
    rc, _, err = cli_in_process(planned_args(ws, "budget-wsd-direct", plan) + wsd)
    assert rc == 0, err
    assert_same_weights(final_weights(ws, "budget-wsd"), final_weights(ws, "budget-wsd-direct"))
    assert logged(ws, "budget-wsd") == logged(ws, "budget-wsd-direct")


def test_a_budget_that_runs_out_warns_names_the_step_and_records_the_shortfall(tiny_workspace, monkeypatch):
    """The steps sleep after the pace was measured (SLOW_ENV): on 'cosine' (the helpers' schedule, which
    decays from the start and so cannot be revised) the plan cannot be met; the run stops at the budget
    with a checkpoint, an evaluation and a plot, exit 0, and says by how much it fell short."""
    ws = tiny_workspace
    monkeypatch.setenv(SLOW_ENV, "0.15")
    rc, out, err = cli_in_process(train_args(ws, "budget-cut", MAX_STEPS, "--set", "train.max_minutes=0.08"))
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
