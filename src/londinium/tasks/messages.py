"""Task items as conversations, in the OpenAI/TRL format supervised fine-tuning trains on:

    {"id": "speaker-val-00003", "task": "speaker",
     "messages": [{"role": "user", "content": "Who speaks these lines?\n\n..."},
                  {"role": "assistant", "content": "KING HENRY"}]}

The last message is the assistant's answer, what `check` scores. `instruction(item, shots)` is
the same conversation without that answer (for evaluation by generation), with `shots` solved
items of the train split first, as earlier turns (few-shot prompting of a base model).

A tool task's conversation (`tool_search`) holds the assistant's tool call and the tool's result
before the answer (OpenAI's `tool_calls` and `role: "tool"`), and its rows carry the `tools` offered
(`tools_for`), which the chat template renders in the system turn.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from londinium.tasks.catalog import GENERIC, profile_tasks, task
from londinium.tasks.items import TaskError, TaskItem, read_items
from londinium.tasks.prompts import ASK
from londinium.workspace import Workspace

Message = dict[str, Any]
TOOL_TASKS = ("tool_search",)


def instruction(item: TaskItem, shots: Sequence[TaskItem] = ()) -> list[Message]:
    """The messages that ask `item` (its answer left out), after the solved `shots`."""
    out: list[Message] = []
    for shot in shots:
        out += messages(shot)
    return out + (messages(item)[:-1] if item.task in TOOL_TASKS else [{"role": "user", "content": ASK[item.task](item)}])


def messages(item: TaskItem) -> list[Message]:
    """The item asked and answered."""
    if item.task in TOOL_TASKS:
        from londinium.tasks import tool_search

        return tool_search.messages(item)
    return [{"role": "user", "content": ASK[item.task](item)}, {"role": "assistant", "content": item.answer.strip()}]


def tools_for(task: str) -> list[dict[str, Any]] | None:
    """The tools a task's conversations offer (OpenAI's function tools), None for a task without."""
    if task not in TOOL_TASKS:
        return None
    from londinium.tasks.tool_search import TOOL

    return [TOOL]


def default_tasks(ws: Workspace) -> tuple[str, ...]:
    """The corpus's default task mix: the generic tasks and its profile's."""
    from londinium.profiles import profile_for

    return GENERIC + profile_tasks(profile_for(ws).tasks)


def task_items(ws: Workspace, name: str, split: str | None = None) -> list[TaskItem]:
    """The items of a built task (`londinium tasks build`), of one split or all."""
    task(name)
    path = ws.task_items(name)
    if not path.is_file():
        raise TaskError(f"{path}: task {name!r} is not built; run `londinium tasks build` first")
    return [i for i in read_items(path) if split is None or i.split == split]


def conversations(ws: Workspace, split: str, tasks: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """The task set's conversations of `split`, task by task in the order given (None: the
    corpus's default mix), items in file order: {"id", "task", "messages"}, and "tools" for a tool task."""
    yield from split_conversations(ws, [split], tasks)[split]


def split_conversations(ws: Workspace, splits: Sequence[str], tasks: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """`conversations` of several splits at once, each task's file read once for all of them
    (fine-tuning wants train and val: reading the files once per split read each twice)."""
    for split in splits:
        if split not in ("train", "val", "test"):
            raise TaskError(f"task split {split!r} is not one of train, val, test")
    out: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
    for name in default_tasks(ws) if tasks is None else tasks:
        extra = {"tools": tools_for(name)} if name in TOOL_TASKS else {}
        for item in task_items(ws, name):
            if item.split in out:
                out[item.split].append({"id": item.id, "task": item.task, "messages": messages(item)} | extra)
    return out
