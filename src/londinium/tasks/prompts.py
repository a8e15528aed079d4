"""How a task item is asked: one function per task turns an item into the user's message.

The answer is the item's answer, stripped: a short label (a choice, a reference) or one line. For a
multiple-choice task the choices are listed in an order fixed by the item's id (the answer is not
always first), and the assistant answers with the chosen text itself, so the same checker serves
a base model prompted few-shot and a fine-tuned one.
"""

from __future__ import annotations

import random
from typing import Callable

from londinium.tasks.items import TaskItem


def choices_line(item: TaskItem) -> str:
    listed = list(item.choices)
    random.Random(item.id).shuffle(listed)
    return "Choices: " + "; ".join(c.strip() for c in listed)


def _choose(question: str, item: TaskItem) -> str:
    return f"{question}\n\n{item.prompt.strip()}\n\n{choices_line(item)}"


def _write(instruction: str, item: TaskItem) -> str:
    return f"{instruction}\n\n{item.prompt.strip()}"


def ask_next_word(item: TaskItem) -> str:
    return f"Which word comes next?\n\n{item.prompt.strip()} ...\n\n{choices_line(item)}"


def ask_next_line(item: TaskItem) -> str:
    return _write("Write the line that comes next.", item)


def ask_source(item: TaskItem) -> str:
    return _choose("Which source is this passage from?", item)


def ask_period(item: TaskItem) -> str:
    return _choose("Which period is this passage from?", item)


def ask_title(item: TaskItem) -> str:
    return _choose("Which work is this passage from?", item)


def ask_kjv_verse(item: TaskItem) -> str:
    return f"Quote the King James Bible, {item.prompt.strip()}."


def ask_kjv_reference(item: TaskItem) -> str:
    return _write("Which chapter and verse of the King James Bible is this?", item)


def ask_speaker(item: TaskItem) -> str:
    return _choose("Who speaks these lines?", item)


def ask_modernize(item: TaskItem) -> str:
    return _write("Write this First Folio line in modern spelling.", item)


def ask_next_verse_line(item: TaskItem) -> str:
    return _write("Write the next line of the poem.", item)


def ask_arith(item: TaskItem) -> str:
    return _write("Add; write the sum's digits reversed.", item)


def ask_tool_search(item: TaskItem) -> str:
    from londinium.tasks.tool_search import question

    return question(item.prompt.split("\n\n", 1)[0])


ASK: dict[str, Callable[[TaskItem], str]] = {
    "next_word": ask_next_word, "next_line": ask_next_line, "source": ask_source, "period": ask_period,
    "title": ask_title, "kjv_verse": ask_kjv_verse, "kjv_reference": ask_kjv_reference, "speaker": ask_speaker,
    "modernize": ask_modernize, "next_verse_line": ask_next_verse_line, "arith": ask_arith,
    "tool_search": ask_tool_search,
}
