"""Rewards: plain Python callables, one per task, that score a sampled answer.

    reward(completion: str, item: TaskItem) -> float

`completion` is the text the model wrote, ending with `<|end|>` when it ended its turn (so a reward
can check the format); `item` is the task item asked (its `answer`, `prompt`, `id`). Every task's
default is its checker (`tasks.check`: exact match, accuracy or chrF, 0-1). Your own, with
`--reward module:function` (every task of the run) or `--reward TASK=module:function` (one task):

    # myrewards.py, importable from where you run londinium (or on PYTHONPATH)
    def exact_and_short(completion, item):
        from londinium.tasks import check
        return check(item.task, completion, item) - 0.01 * len(completion)

A reward that raises, or returns something that is not a finite number, stops the run with one
line naming the function, the task and the item (see `score`); the steps done are kept.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from londinium.errors import ConfigError
from londinium.tasks.check import END, check
from londinium.tasks.items import TaskItem
from londinium.train.objectives import StepRefused

Reward = Callable[[str, TaskItem], float]


class RewardError(StepRefused):
    """A reward function raised or returned a bad value; the message names it, the task and the item."""


def task_checker(completion: str, item: TaskItem) -> float:
    """The task's own score of the answer (`tasks.check`)."""
    return check(item.task, completion, item)


def ended_turn(completion: str, item: TaskItem) -> float:
    """1 when the answer ended its turn with `<|end|>` (a format reward), else 0."""
    return float(completion.endswith(END))


# Named rewards a --reward may also give by name (`--reward ended_turn`).
REWARDS: dict[str, Reward] = {"task_checker": task_checker, "ended_turn": ended_turn}


def load_reward(spec: str) -> Reward:
    """The callable `spec` names: a registered name, or 'module:function' (imported)."""
    if spec in REWARDS:
        return REWARDS[spec]
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"--reward {spec!r}: give 'module:function' (or one of {', '.join(REWARDS)})")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigError(f"--reward {spec!r}: module {module_name!r} cannot be imported ({type(e).__name__}: {e}); "
                          "run from its folder or put it on PYTHONPATH") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"--reward {spec!r}: module {module_name!r} has no function {name!r}")
    return fn


@dataclass(frozen=True)
class TaskReward:
    """A task's reward: the weighted sum of its parts, each (name, weight, function)."""

    parts: tuple[tuple[str, float, Reward], ...]

    @property
    def name(self) -> str:
        return " + ".join(name if weight == 1 else f"{weight:g} x {name}" for name, weight, _ in self.parts)


def parse_spec(spec: str) -> tuple[str | None, str, float]:
    """'[TASK=]SPEC[@WEIGHT]' -> (task or None for every task, SPEC, weight: 1 unless given)."""
    task, sep, rest = spec.partition("=")
    target, at, weight = rest.rpartition("@") if sep else spec.rpartition("@")
    if not at:
        target, weight = (rest if sep else spec), "1"
    try:
        w = float(weight)
    except ValueError:
        w = math.nan
    if not math.isfinite(w):
        raise ConfigError(f"--reward {spec!r}: the weight after '@' must be a finite number, e.g. 'ended_turn@0.1'")
    return (task if sep else None), target, w


def rewards_for(tasks: Sequence[str], specs: Sequence[str]) -> dict[str, TaskReward]:
    """task -> its reward: the task's checker when no spec names it; else the weighted sum of the specs
    given for every task and for it (`--reward` repeated adds a part)."""
    parts: dict[str, list[tuple[str, float, Reward]]] = {t: [] for t in tasks}
    for spec in specs:
        task, target, weight = parse_spec(spec)
        if task is not None and task not in parts:
            raise ConfigError(f"--reward {spec!r}: task {task!r} is not one of this run's tasks ({', '.join(tasks)})")
        fn = load_reward(target)
        for t in ([task] if task is not None else tasks):
            parts[t].append((target, weight, fn))
    return {t: TaskReward(tuple(p) if p else (("task_checker", 1.0, task_checker),)) for t, p in parts.items()}


def score(reward: TaskReward, completion: str, item: TaskItem) -> float:
    """The reward of `completion`: its parts' weighted sum, or a RewardError naming the part that failed."""
    return sum(weight * _score_part(name, fn, completion, item) for name, weight, fn in reward.parts)


def _score_part(name: str, fn: Reward, completion: str, item: TaskItem) -> float:
    try:
        value: Any = fn(completion, item)
    except Exception as e:
        raise RewardError(f"reward function {name} raised {type(e).__name__}: {e} on task {item.task}, item {item.id}; "
                          "the run stopped before this step changed anything and its steps so far are saved: "
                          "fix the function, then continue with --resume") from e
    if not isinstance(value, (int, float)) or not math.isfinite(value):  # True/False count as 1/0
        raise RewardError(f"reward function {name} returned {value!r} on task {item.task}, item {item.id}: a reward "
                          "must be a finite number; the run stopped before this step and its steps so far are saved: "
                          "fix the function, then continue with --resume")
    return float(value)
