"""The checker of each task: how a prediction (the assistant's answer) scores against an item.

`check(task, prediction, item)` is 1.0 or 0.0 for "choice" and "exact" tasks and chrF (0-1) for
"chrf" ones (sacrebleu's `sentence_chrf`, the implementation papers report). A prediction is
compared on its first line, trimmed of spaces and of an `<|end|>` the model wrote; choice and exact
answers also ignore case and a final full stop ("King Henry." is "KING HENRY").
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from londinium.tasks.catalog import task as task_named
from londinium.tasks.items import TaskItem

END = "<|end|>"


def answer_line(prediction: str) -> str:
    """What is compared: the prediction up to `<|end|>` or its first line break, trimmed."""
    text = prediction.split(END, 1)[0].strip()
    return text.split("\n", 1)[0].strip()


def _key(text: str) -> str:
    return " ".join(text.casefold().rstrip(".").split())


def chrf(prediction: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_chrf(prediction, [reference]).score) / 100


def check(task: str, prediction: str, item: TaskItem) -> float:
    """The score of `prediction` on `item` of `task` (see the module docstring)."""
    got, want = answer_line(prediction), item.answer.strip()
    if task_named(task).metric == "chrf":
        return chrf(got, want)
    return float(_key(got) == _key(want))


def baseline_prediction(task: str, item: TaskItem, train: Sequence[TaskItem]) -> str:
    """What the task's baseline answers: the train items' most frequent answer ("majority"), or
    the last line of the item's prompt ("copy")."""
    if task_named(task).baseline == "copy":
        return item.prompt.strip().split("\n")[-1]
    counts = Counter(i.answer.strip() for i in train)
    if item.distractors:  # multiple choice: the most frequent of the choices offered
        return max(item.choices, key=lambda c: (counts[c.strip()], c)).strip()
    return counts.most_common(1)[0][0] if counts else ""
