"""What every task cutter shares: documents spread over sources, passages and lines of a document,
choices drawn from a label set, and items numbered per task and split.

A cutter is `cut(docs, spec, context) -> list[TaskItem]` for the documents of one corpus split; it
draws at most one item per document per round (documents round-robin by source and work, the order
the cloze set and the held-out prompts use), so a set of n items is spread over the corpus and is the
first n of a longer one. Its random choices come from a generator seeded with (seed, task, document
id): the same corpus and spec give the same items, and editing one document moves only its own.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from londinium.tasks.items import TaskItem

# A line worth asking about: some letters, not a heading of one or two words.
_LETTERS = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class TaskSpec:
    """How a task set is cut (the [tasks] settings a cutter reads)."""

    split: str = "train"
    items: int = 1000
    choices: int = 4
    passage_words: int = 40
    seed: int = 1337
    digits: int = 3  # the arith task's numbers have up to this many digits


def rng_for(spec: TaskSpec, task: str, doc: dict) -> random.Random:
    return random.Random(f"{spec.seed}:{task}:{doc.get('id')}")


def spread(docs: Sequence[dict], spec: TaskSpec, task: str,
           cut_one: Callable[[dict, random.Random, int], TaskItem | None], rounds: int = 4) -> list[TaskItem]:
    """Up to `spec.items` items, one per document per round; `cut_one(doc, rng, round)` gives an
    item or None (the document has nothing more to ask)."""
    from londinium.eval.heldout import round_robin_by_source

    order = round_robin_by_source(docs)
    rngs = {id(d): rng_for(spec, task, d) for d in order}
    out: list[TaskItem] = []
    for r in range(rounds):
        for doc in order:
            item = cut_one(doc, rngs[id(doc)], r)
            if item is not None:
                out.append(item)
                if len(out) >= spec.items:
                    return numbered(out)
    return numbered(out)


def numbered(items: Sequence[TaskItem]) -> list[TaskItem]:
    return [dataclasses.replace(item, id=f"{item.task}-{item.split}-{k:05d}") for k, item in enumerate(items, start=1)]


def lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line of `text` that has letters, without its indentation or trailing space."""
    out, pos = [], 0
    for raw in text.split("\n"):
        stripped = raw.strip()
        if stripped and _LETTERS.search(stripped):
            start = pos + raw.index(stripped[0])
            out.append((start, start + len(stripped)))
        pos += len(raw) + 1
    return out


def passage(text: str, rng: random.Random, words: int) -> tuple[int, int] | None:
    """(start, end) of about `words` words of `text`, starting at a line start, ending at a line end
    where one is near (so a passage reads as whole lines); None when the text is shorter."""
    spans = lines(text)
    if len(text.split()) < words:
        return None
    starts = [s for s, _ in spans]
    first = rng.randrange(len(starts))
    begin = starts[first]
    count, end = 0, begin
    for s, e in spans[first:]:
        count += len(text[s:e].split())
        end = e
        if count >= words:
            break
    if count < words // 2:  # too near the end of the document: take the passage before it instead
        begin = starts[max(0, first - 8)]
        count = len(text[begin:end].split())
    return (begin, end) if count >= words // 2 else None


def pick_choices(answer: str, labels: Sequence[str], k: int, rng: random.Random) -> tuple[str, ...] | None:
    """k - 1 labels other than `answer` (None when there are fewer than one): the distractors."""
    others = sorted(set(labels) - {answer})
    if not others:
        return None
    return tuple(rng.sample(others, min(k - 1, len(others))))
