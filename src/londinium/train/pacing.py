"""A budget that sizes the schedule: `train.max_minutes` or `train.max_tokens` -> the run's steps.

A wall-clock cap on a fixed schedule stops a run wherever the clock runs out -- in the middle of the
warm-up, before any decay -- and a run cut like that is much worse than one whose schedule was sized
to the same steps (docs/LOG.md). So a budget is turned into steps *before* training:

- `max_tokens`: `max_tokens // tokens per step` steps, exactly.
- `max_minutes`: steps from this machine's measured pace: one warm-up step (it absorbs one-off costs:
  torch.compile, allocator, thread pool), `PACE_STEPS` timed steps, and one timed evaluation interval
  (checkpoint save, evaluation, loss plot), all on the real model and optimiser, whose state the
  trainer then restores so the run is bit-identical to one given the planned steps directly. The
  steps are the most whose training and evaluations fit what is left of the budget, less
  `train.budget_reserve` of it for a machine that runs a little slower than it was measured.

The plan replaces `max_steps` and `warmup_steps` in the schedule (`Plan.schedule`); `max_steps` is
still the reference for the warm-up: a plan shorter than it keeps the configured warm-up's share of
the steps, a longer one keeps the configured warm-up (its job, getting the optimiser's statistics
settled, does not grow with the run). The plan is saved in every checkpoint, so a resumed run keeps
the schedule it started with.

A few seconds of pace do not foresee a shared machine's next minutes (docs/LOG.md measured steps
77% slower than their pace). A 'wsd' schedule holds its peak until its decay, and until then its
rate does not depend on the total steps, so a time plan on 'wsd' is `revise`d at every logged step
from the pace the run really has, up to the step its decay begins: the decay then starts where the
time left holds it, and the run is still bit-identical to one given the final plan directly.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from londinium.config import TrainConfig
from londinium.errors import ConfigError
from londinium.train.monitor import format_duration
from londinium.train.schedule import decay_start, lr_at

PACE_STEPS = 5  # timed steps after the warm-up step: enough for a median on a shared machine
# The budget fields a plan is made from: a resumed run keeps its plan while these are unchanged.
REQUEST_FIELDS = ("max_steps", "warmup_steps", "max_minutes", "max_tokens", "budget_reserve")


@dataclass(frozen=True)
class Pace:
    """What this machine measured, in seconds."""

    step_s: float  # one optimiser step (median of the timed steps)
    interval_s: float  # one checkpoint save + evaluation + loss plot


@dataclass(frozen=True)
class Plan:
    """The steps and warm-up a run trains with, and why."""

    steps: int
    warmup_steps: int
    by: str  # "max_steps", "max_minutes" or "max_tokens": what decided the steps
    request: dict[str, Any]  # the REQUEST_FIELDS values the plan was made from
    step_s: float = 0.0  # the measured pace (max_minutes plans only)
    interval_s: float = 0.0
    expected_s: float = 0.0  # the whole run by the measured pace, from the start of its first session
    first_steps: int = 0  # the steps first planned, when `revise` has changed them since (0: never)

    def schedule(self, tc: TrainConfig) -> TrainConfig:
        """`tc` with the planned steps and warm-up: what `schedule.lr_at` reads."""
        return dataclasses.replace(tc, max_steps=self.steps, warmup_steps=self.warmup_steps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def request(tc: TrainConfig) -> dict[str, Any]:
    return {k: getattr(tc, k) for k in REQUEST_FIELDS}


def needs_pace(tc: TrainConfig) -> bool:
    return tc.max_minutes > 0


def evaluations(first: int, last: int, eval_every: int) -> int:
    """Evaluations (each after a checkpoint save) a run makes after steps first+1 .. last: every
    `eval_every` steps and at the end."""
    if last <= first:
        return 0
    return last // eval_every - first // eval_every + (last % eval_every != 0)


def _steps_within(seconds: float, pace: Pace, done: int, eval_every: int) -> int:
    """The most steps after `done` whose training and evaluations take at most `seconds`."""
    def cost(n: int) -> float:
        return n * pace.step_s + evaluations(done, done + n, eval_every) * pace.interval_s

    lo, hi = 0, max(1, int(seconds / max(pace.step_s, 1e-9)) + 1)  # cost(hi) > seconds
    while lo < hi:  # cost is non-decreasing in n: binary search for the last n that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= seconds else (lo, mid - 1)
    return lo


def plan_run(tc: TrainConfig, tokens_per_step: int, pace: Pace | None = None, elapsed_s: float = 0.0,
             done_steps: int = 0) -> Plan:
    """The plan for a run of `tokens_per_step` tokens a step that has trained `done_steps` steps in
    `elapsed_s` seconds of its clock (pacing included). `pace` is needed when `tc.max_minutes` is set.
    A budget too small for even one step is a ConfigError naming the field."""
    asked = request(tc)
    candidates: list[tuple[int, str]] = []
    extra: dict[str, float] = {}
    if tc.max_tokens:
        steps = tc.max_tokens // tokens_per_step
        if steps < 1:
            raise ConfigError(f"train.max_tokens = {tc.max_tokens:,} is less than one step of {tokens_per_step:,} tokens "
                              f"(train.batch_size x model.context x processes x accumulation); raise it or set it to 0")
        candidates.append((steps, "max_tokens"))
    if tc.max_minutes:
        if pace is None:
            raise ValueError("a max_minutes plan needs the measured pace")
        left = 60 * tc.max_minutes - elapsed_s
        more = _steps_within(left * (1 - tc.budget_reserve), pace, done_steps, tc.eval_every)
        if more < 1:
            first = pace.step_s + pace.interval_s
            raise ConfigError(
                f"train.max_minutes = {tc.max_minutes:g} leaves {max(0.0, left):.1f} s after {elapsed_s:.1f} s of training and "
                f"pace measurement: not enough for one step ({1000 * pace.step_s:.0f} ms) and its evaluation "
                f"({pace.interval_s:.1f} s) here; give it at least {(elapsed_s + first / (1 - tc.budget_reserve)) / 60:.2f} minutes")
        candidates.append((done_steps + more, "max_minutes"))
        extra = {"step_s": pace.step_s, "interval_s": pace.interval_s}
    if not candidates:
        return Plan(tc.max_steps, tc.warmup_steps, "max_steps", asked)
    steps, by = min(candidates)
    warmup = tc.warmup_steps if steps >= tc.max_steps else round(tc.warmup_steps * steps / tc.max_steps)
    if extra:
        left_steps = steps - done_steps
        extra["expected_s"] = elapsed_s + left_steps * extra["step_s"] + \
            evaluations(done_steps, steps, tc.eval_every) * extra["interval_s"]
    return Plan(steps, warmup, by, asked, **extra)


def revisable(plan: Plan, tc: TrainConfig) -> bool:
    return plan.by == "max_minutes" and tc.schedule == "wsd"


def revise(plan: Plan, tc: TrainConfig, step: int, elapsed_s: float, step_s: float, interval_s: float) -> Plan:
    """`plan` made again after `step` steps and `elapsed_s` seconds, from the pace the run has had
    (`step_s` a step, `interval_s` an evaluation), if it is a 'wsd' time plan whose decay has not
    begun; else `plan` itself. The steps so far ran at the peak (or in the warm-up, which stays), and
    the new decay begins at `step` at the earliest, so nothing trained changes. When the time left
    cannot hold a whole decay, the decay begins now (and the budget may still cut it)."""
    if not revisable(plan, tc) or step < plan.warmup_steps or step > decay_start(plan.schedule(tc)):
        return plan
    left = (60 * tc.max_minutes - elapsed_s) * (1 - tc.budget_reserve)
    steps = max(step + _steps_within(left, Pace(step_s, interval_s), step, tc.eval_every),
                _shortest_with_decay_from(plan, tc, step))
    if steps == plan.steps:
        return plan
    expected = elapsed_s + (steps - step) * step_s + evaluations(step, steps, tc.eval_every) * interval_s
    return dataclasses.replace(plan, steps=steps, step_s=step_s, interval_s=interval_s, expected_s=expected,
                               first_steps=plan.first_steps or plan.steps)


def _shortest_with_decay_from(plan: Plan, tc: TrainConfig, step: int) -> int:
    """The fewest steps whose 'wsd' decay begins at `step` or later."""
    steps = step if tc.decay_share >= 1 else max(step, int(step / (1 - tc.decay_share)) - 2)
    while decay_start(dataclasses.replace(plan, steps=steps).schedule(tc)) < step:
        steps += 1
    return steps


def measure_pace(step: Callable[[], None], interval: Callable[[], None], clock: Callable[[], float] = time.perf_counter,
                 timed_steps: int = PACE_STEPS) -> Pace:
    """Time `step` (one optimiser step, synchronised) after one untimed warm-up call, and `interval`
    (one save + evaluation + plot) once. The caller restores whatever the calls changed."""
    step()  # warm-up: compilation, allocations, the first touch of the data
    times = []
    for _ in range(timed_steps):
        t0 = clock()
        step()
        times.append(clock() - t0)
    t0 = clock()
    interval()
    interval_s = clock() - t0
    return Pace(step_s=statistics.median(times), interval_s=interval_s)


def describe(plan: Plan, tc: TrainConfig, tokens_per_step: int) -> str:
    """The banner's plan line: steps, warm-up, tokens, and for a time budget the pace and expected time."""
    tokens = plan.steps * tokens_per_step
    line = f"plan: {plan.steps:,} steps (warm-up {plan.warmup_steps:,}) x {tokens_per_step:,} tokens = {tokens:,} tokens"
    if plan.by == "max_steps":
        return line + " (train.max_steps)"
    if plan.by == "max_tokens":
        line += f", sized by train.max_tokens = {tc.max_tokens:,}"
    else:
        line += (f", sized by train.max_minutes = {tc.max_minutes:g} from the pace measured here: "
                 f"{1000 * plan.step_s:.1f} ms a step (median of {PACE_STEPS} after a warm-up step), "
                 f"{plan.interval_s:.2f} s a checkpoint and evaluation (every {tc.eval_every:,} steps and at the end); "
                 f"expected {format_duration(plan.expected_s)} of {format_duration(60 * tc.max_minutes)} (train.budget_reserve = {tc.budget_reserve:g} kept back)")
    return line + f"; train.max_steps = {tc.max_steps:,} is not used with a budget"


def shortfall_warning(plan: Plan, tc: TrainConfig, step: int, step_s: float, resume: str) -> str | None:
    """None when the run reached its plan; else the warning for a time budget that ran out at `step`:
    the shortfall, where the schedule was (a cut before the decay leaves the learning rate high), the
    pace the steps really had (`step_s`) against the measured one, and the command (`resume`) and
    budget that would finish it."""
    if step >= plan.steps:
        return None
    short = plan.steps - step
    schedule = plan.schedule(tc)
    floor = tc.learning_rate * tc.min_lr_ratio
    where = ("still in the warm-up" if step < plan.warmup_steps else
             "before the decay started (the learning rate still at its peak)" if step <= decay_start(schedule) else
             f"in the decay: the learning rate was {lr_at(step - 1, schedule):.2e}, not yet down to its floor {floor:.2e}")
    pace = f"; its steps took {1000 * step_s:.1f} ms on average" + (
        f" against the {1000 * plan.step_s:.1f} ms measured before it (the machine slowed)" if plan.step_s else "")
    more = short * step_s + evaluations(step, plan.steps, tc.eval_every) * plan.interval_s
    minutes = math.ceil(10 * (tc.max_minutes + more / 60)) / 10
    return (f"warning: the time budget (train.max_minutes = {tc.max_minutes:g}) ran out at step {step:,} of the planned "
            f"{plan.steps:,}: {short:,} steps ({short / plan.steps:.0%}) short, {where}{pace}. The checkpoint of step "
            f"{step:,} is saved and evaluated; the rest needs about {format_duration(more)} more at that pace: "
            f"`{resume} --set train.max_minutes={minutes:g}` continues it (the rest is planned again)")
