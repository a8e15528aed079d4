"""Every task londinium can cut, how it is cut and asked, and how its answers are scored.

A task's metric says what `check` computes: "choice" (the chosen text is the answer: accuracy),
"exact" (the answer exactly, after trimming spaces and case: exact match) or "chrf" (sacrebleu's
chrF of the answer line, 0-1). Its baseline is what a model that does not read the item gets:
"majority" (always the train split's most frequent answer) or "copy" (the last line of the prompt
given back: for modernize the Folio line itself, for next_line the line before).

Generic tasks fit any corpus; a profile's `tasks` part adds its own (period-london: the KJV, the
plays' speakers, the Folio's spelling, Milton's verse). The default mix is the generic tasks plus
the profile's. `arith` is generated rather than cut (`tasks/arith.py`): it is built only when named, as is
`tool_search` (`tasks/tool_search.py`), whose conversations call a tool and do not fit the tiny preset's context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from londinium.errors import ConfigError
from londinium.tasks import arith, generic, modernize, period, tool_search
from londinium.tasks.cut import TaskSpec
from londinium.tasks.generic import Corpus
from londinium.tasks.items import TaskItem


@dataclass(frozen=True)
class Task:
    name: str
    cut: Callable[[Corpus, TaskSpec], list[TaskItem]]
    metric: str  # "choice" | "exact" | "chrf"
    baseline: str  # "majority" | "copy"
    about: str


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("next_word", generic.cut_next_word, "choice", "majority", "the word that follows a passage, among words as frequent (cloze)"),
    Task("next_line", generic.cut_next_line, "chrf", "copy", "the line that follows a few lines of a document"),
    Task("source", lambda c, s: generic.cut_label(c, s, "source"), "choice", "majority", "which source a passage is from"),
    Task("period", lambda c, s: generic.cut_label(c, s, "period"), "choice", "majority", "which period a passage is from"),
    Task("title", lambda c, s: generic.cut_label(c, s, "title"), "choice", "majority", "which work (title) a passage is from"),
    Task("kjv_verse", lambda c, s: period.cut_kjv(c, s, "kjv_verse"), "chrf", "copy", "a King James Bible reference -> its verse"),
    Task("kjv_reference", lambda c, s: period.cut_kjv(c, s, "kjv_reference"), "exact", "majority", "a King James Bible verse -> its reference"),
    Task("speaker", period.cut_speaker, "choice", "majority", "who speaks a speech of a play"),
    Task("modernize", modernize.cut_modernize, "chrf", "copy", "a First Folio line -> the same line in modern spelling"),
    Task("next_verse_line", period.cut_next_verse_line, "chrf", "copy", "the next line of Milton's verse"),
    Task("arith", arith.cut_arith, "exact", "majority", "a+b -> the sum's digits reversed (generated, not cut from the corpus)"),
    Task("tool_search", tool_search.cut_tool_search, "exact", "majority",
         "where words come from: call search_corpus, cite the result (tool use; built only when named)"),
)}
GENERIC = ("next_word", "next_line", "source", "period", "title")


def profile_tasks(value: str, where: str = "profile 'tasks'") -> tuple[str, ...]:
    """The task names of a profile's `tasks` part: comma-separated names ("" none)."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ConfigError(f"{where}: unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(TASKS)}")
    return names


def task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
