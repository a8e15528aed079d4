"""Rewards per task (the checker by default, a user's 'module:function', several summed with weights),
their errors as one line,
and the generated arithmetic task: exact answers, disjoint splits, the same items from the same seed."""

from __future__ import annotations

import pytest

from londinium.errors import ConfigError
from londinium.rl.rewards import RewardError, TaskReward, ended_turn, load_reward, rewards_for, score, task_checker
from londinium.tasks.arith import cut_arith, reversed_sum, split_of
from londinium.tasks.cut import TaskSpec
from londinium.tasks.items import TaskItem

ITEM = TaskItem(id="arith-train-00001", task="arith", split="train", prompt="357+86", answer="344")


def test_the_default_reward_is_the_tasks_checker_and_ended_turn_checks_the_format():
    assert task_checker("344<|end|>", ITEM) == 1.0 and task_checker("343", ITEM) == 0.0
    assert ended_turn("344<|end|>", ITEM) == 1.0 and ended_turn("344", ITEM) == 0.0
    assert rewards_for(["arith"], []) == {"arith": TaskReward((("task_checker", 1.0, task_checker),))}


def test_a_users_reward_replaces_every_tasks_or_one_tasks():
    named = rewards_for(["arith", "speaker"], ["arith=ended_turn"])
    assert named["arith"].name == "ended_turn" and named["speaker"].name == "task_checker"
    everyone = rewards_for(["arith", "speaker"], ["londinium.rl.rewards:ended_turn"])
    assert {fn for r in everyone.values() for _, _, fn in r.parts} == {ended_turn}


def test_repeated_rewards_are_summed_with_their_weights():
    rewards = rewards_for(["arith", "speaker"], ["task_checker", "arith=ended_turn@0.25", "speaker=ended_turn@-1e-1"])
    arith, speaker = rewards["arith"], rewards["speaker"]
    assert arith.name == "task_checker + 0.25 x ended_turn" and speaker.name == "task_checker + -0.1 x ended_turn"
    assert score(arith, "344<|end|>", ITEM) == 1.25 and score(arith, "344", ITEM) == 1.0
    assert score(arith, "343<|end|>", ITEM) == 0.25 and score(speaker, "343<|end|>", ITEM) == pytest.approx(-0.1)
    with pytest.raises(ConfigError, match="weight after '@' must be a finite number"):
        rewards_for(["arith"], ["ended_turn@lots"])


@pytest.mark.parametrize("spec, says", [
    ("nomodule_xyz:f", "module 'nomodule_xyz' cannot be imported"),
    ("londinium.rl.rewards:nothing", "has no function 'nothing'"),
    ("justaname", "give 'module:function'"),
])
def test_a_reward_that_cannot_be_loaded_is_named(spec, says):
    with pytest.raises(ConfigError, match=says):
        load_reward(spec)
    with pytest.raises(ConfigError, match="is not one of this run's tasks"):
        rewards_for(["arith"], ["speaker=ended_turn"])


def test_a_reward_that_raises_or_returns_no_number_is_one_line_naming_it_the_task_and_the_item():
    def broken(completion, item):
        raise KeyError("table")

    with pytest.raises(RewardError) as e:  # the part that raised is named, not only the sum
        score(TaskReward((("task_checker", 1.0, task_checker), ("mine:broken", 0.5, broken))), "344", ITEM)
    message = str(e.value)
    assert "\n" not in message and "mine:broken raised KeyError" in message and "task arith, item arith-train-00001" in message
    for bad in (float("nan"), "1", None):
        with pytest.raises(RewardError, match="must be a finite number"):
            score(TaskReward((("mine:bad", 1.0, lambda c, i, v=bad: v),)), "344", ITEM)
    assert score(TaskReward((("mine:bool", 1.0, lambda c, i: True),)), "344", ITEM) == 1.0


def test_arith_items_are_exact_and_the_splits_share_no_problem():
    assert reversed_sum(357, 86) == "344" and reversed_sum(0, 0) == "0"
    splits = {s: cut_arith(None, TaskSpec(split=s, items=300, seed=5)) for s in ("train", "val", "test")}
    for s, items in splits.items():
        assert len(items) == 300 and len({i.prompt for i in items}) == 300
        for i in items:
            a, b = map(int, i.prompt.split("+"))
            assert i.answer == str(a + b)[::-1] and split_of(a, b, 5) == s and i.split == s
    prompts = [{i.prompt for i in items} for items in splits.values()]
    assert not (prompts[0] & prompts[1]) and not (prompts[0] & prompts[2]) and not (prompts[1] & prompts[2])
    assert cut_arith(None, TaskSpec(split="val", items=50, seed=5)) == splits["val"][:50]
    assert cut_arith(None, TaskSpec(split="val", items=50, seed=6)) != splits["val"][:50]
    small = cut_arith(None, TaskSpec(split="test", items=100, seed=5, digits=1))  # asks for more than the split has
    assert 0 < len(small) < 20 and all(split_of(*map(int, i.prompt.split("+")), 5) == "test" for i in small)
    assert max(len(i.prompt) for i in small) == 3
