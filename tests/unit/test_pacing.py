"""Turning a budget into a plan: pure arithmetic on a given pace (the trainer measures the pace;
tests/integration/test_train_budget.py runs it for real)."""

from __future__ import annotations

import pytest

from londinium.config import TrainConfig
from londinium.errors import ConfigError
from londinium.train.pacing import PACE_STEPS, Pace, Plan, evaluations, measure_pace, plan_run, revise, shortfall_warning
from londinium.train.schedule import decay_start, lr_at


def tc(**kw) -> TrainConfig:
    base = dict(max_steps=1000, warmup_steps=100, eval_every=10, learning_rate=1e-3, min_lr_ratio=0.1, schedule="wsd")
    return TrainConfig(**{**base, **kw})


PACE = Pace(step_s=0.1, interval_s=1.0)
MEASURING_S = 2.0  # what the pace measurement took: part of the time already spent


def cost(plan: Plan, done: int = 0) -> float:
    return (plan.steps - done) * PACE.step_s + evaluations(done, plan.steps, 10) * PACE.interval_s


def test_evaluations_come_every_eval_every_steps_and_at_the_end():
    assert evaluations(0, 12, 6) == 2  # 6, 12
    assert evaluations(0, 13, 6) == 3  # 6, 12, 13
    assert evaluations(6, 12, 6) == 1  # a run resumed at 6: only 12
    assert evaluations(7, 7, 6) == 0


def test_max_tokens_gives_exactly_the_steps_it_implies():
    plan = plan_run(tc(max_tokens=10_000), tokens_per_step=512)
    assert (plan.steps, plan.by) == (10_000 // 512, "max_tokens")


def test_a_time_budget_plans_the_most_steps_whose_training_and_evaluations_fit():
    c = tc(max_minutes=1.0, budget_reserve=0.05)
    plan = plan_run(c, 512, PACE, elapsed_s=MEASURING_S)
    available = (60 - MEASURING_S) * 0.95
    longer = Plan(plan.steps + 1, 0, "max_minutes", {})
    assert cost(plan) <= available < cost(longer)
    assert plan.by == "max_minutes" and plan.step_s == 0.1 and plan.interval_s == 1.0
    assert plan.expected_s == pytest.approx(MEASURING_S + cost(plan))


def test_a_shorter_plan_keeps_the_warmups_share_and_a_longer_one_its_length():
    short = plan_run(tc(max_tokens=250 * 512), 512)  # a quarter of max_steps
    assert (short.steps, short.warmup_steps) == (250, 25)
    long = plan_run(tc(max_tokens=4000 * 512), 512)
    assert (long.steps, long.warmup_steps) == (4000, 100)
    schedule = short.schedule(tc())
    assert (schedule.max_steps, schedule.warmup_steps) == (250, 25)
    assert lr_at(249, schedule) == pytest.approx(1e-3 * (0.1 + 0.9 / 50))  # the decay ends on the planned last step


def test_with_both_budgets_the_smaller_plan_wins_and_names_its_field():
    plan = plan_run(tc(max_minutes=1.0, max_tokens=100 * 512), 512, PACE)
    assert (plan.steps, plan.by) == (100, "max_tokens")
    plan = plan_run(tc(max_minutes=0.2, max_tokens=10**9), 512, PACE)
    assert plan.by == "max_minutes" and plan.steps < 120


def test_without_a_budget_the_configured_schedule_is_the_plan():
    plan = plan_run(tc(), 512)
    assert (plan.steps, plan.warmup_steps, plan.by) == (1000, 100, "max_steps")


def test_a_resumed_plan_counts_only_the_time_left():
    plan = plan_run(tc(max_minutes=1.0, budget_reserve=0.0), 512, PACE, elapsed_s=30.0, done_steps=200)
    assert plan.steps > 200
    assert cost(plan, done=200) <= 30.0 < cost(Plan(plan.steps + 1, 0, "", {}), done=200)


def test_budgets_too_small_for_one_step_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"train\.max_minutes = 0\.01 .*give it at least [\d.]+ minutes"):
        plan_run(tc(max_minutes=0.01), 512, PACE, elapsed_s=MEASURING_S)
    with pytest.raises(ConfigError, match=r"train\.max_tokens = 100 is less than one step of 512 tokens"):
        plan_run(tc(max_tokens=100), 512)


def test_the_plan_round_trips_through_a_plain_dict():
    plan = plan_run(tc(max_minutes=1.0), 512, PACE)
    assert Plan.from_dict(plan.to_dict()) == plan
    assert all(isinstance(v, (int, float, str, type(None))) for v in plan.request.values())  # weights_only-safe


def test_the_pace_is_the_median_of_the_timed_steps_after_an_untimed_warmup():
    """A fake clock: each call to the step advances it by the next duration; the first (the warm-up,
    compilation) is huge and must not count, nor must one slow timed step."""
    now = [0.0]
    durations = iter([50.0, 0.2, 0.1, 0.1, 9.0, 0.1])
    calls = {"step": 0, "interval": 0}

    def step():
        calls["step"] += 1
        now[0] += next(durations)

    def interval():
        calls["interval"] += 1
        now[0] += 1.5

    pace = measure_pace(step, interval, clock=lambda: now[0])
    assert calls == {"step": 1 + PACE_STEPS, "interval": 1}
    assert pace.step_s == pytest.approx(0.1) and pace.interval_s == pytest.approx(1.5)


def test_a_cut_plan_is_named_with_its_step_shortfall_and_the_command_that_finishes_it():
    c = tc(max_minutes=1.0)
    plan = plan_run(c, 512, PACE)
    assert shortfall_warning(plan, c, plan.steps, 0.1, "londinium train --resume --run r") is None
    assert plan.warmup_steps == round(100 * plan.steps / 1000) > 20
    warning = shortfall_warning(plan, c, 20, 0.3, "londinium train --resume --run r")
    assert f"ran out at step 20 of the planned {plan.steps:,}: {plan.steps - 20:,} steps" in warning
    assert "still in the warm-up" in warning and "300.0 ms on average against the 100.0 ms measured" in warning
    assert "`londinium train --resume --run r --set train.max_minutes=" in warning
    assert "before the decay started" in shortfall_warning(plan, c, plan.steps // 2, 0.1, "x")  # WSD: at the peak
    assert "in the decay: the learning rate was" in shortfall_warning(plan, c, plan.steps - 5, 0.1, "x")


def wsd_plan(**kw) -> tuple[TrainConfig, Plan]:
    c = tc(max_minutes=1.0, budget_reserve=0.0, decay_share=0.2, **kw)
    return c, plan_run(c, 512, PACE, elapsed_s=MEASURING_S)


def test_a_wsd_time_plan_follows_a_slower_pace_without_changing_a_step_already_trained():
    c, plan = wsd_plan()
    step = plan.warmup_steps + 50
    slower = revise(plan, c, step, elapsed_s=MEASURING_S + 15.0, step_s=0.2, interval_s=1.0)
    assert slower.steps < plan.steps and slower.first_steps == plan.steps and slower.step_s == 0.2
    left = 60 - MEASURING_S - 15.0
    assert (slower.steps - step) * 0.2 + evaluations(step, slower.steps, 10) * 1.0 <= left
    old, new = plan.schedule(c), slower.schedule(c)
    assert [lr_at(s, old) for s in range(step)] == [lr_at(s, new) for s in range(step)]
    assert step <= decay_start(new) < slower.steps - 1 and lr_at(slower.steps - 1, new) < 1e-3 / 5  # a whole decay still fits
    again = revise(slower, c, step + 10, elapsed_s=MEASURING_S + 17.0, step_s=0.2, interval_s=1.0)
    assert again.first_steps == plan.steps  # the first plan is remembered through every revision


def test_when_the_time_left_cannot_hold_a_whole_decay_it_begins_at_once():
    c, plan = wsd_plan()
    step = decay_start(plan.schedule(c)) - 5
    late = revise(plan, c, step, elapsed_s=59.0, step_s=0.2, interval_s=1.0)
    assert decay_start(late.schedule(c)) == step and late.steps > step


def test_only_a_wsd_time_plan_before_its_decay_is_revised():
    c, plan = wsd_plan()
    args = dict(elapsed_s=30.0, step_s=0.3, interval_s=1.0)
    assert revise(plan, c, plan.warmup_steps - 1, **args) is plan  # in the warm-up, which must stay as it was
    assert revise(plan, c, decay_start(plan.schedule(c)) + 1, **args) is plan  # the decay has begun
    cosine = tc(max_minutes=1.0, schedule="cosine")
    cosine_plan = plan_run(cosine, 512, PACE)
    assert revise(cosine_plan, cosine, cosine_plan.warmup_steps + 5, **args) is cosine_plan  # cosine decays from the start
    tokens = tc(max_tokens=500 * 512)
    tokens_plan = plan_run(tokens, 512)
    assert revise(tokens_plan, tokens, 100, **args) is tokens_plan  # a token budget is exact
