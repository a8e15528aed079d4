"""Tasks as recorded stages: `tasks/<task>/items.jsonl` and `card.json`, made from the corpus.

    build_cloze(ws, ClozeSpec(split="val"))  -> tasks/cloze/items.jsonl  (recorded as "tasks/cloze")

A task set is a function of the corpus splits and its spec: it is cut again only when they change,
and the same corpus and spec give the same bytes, so the set is a fixed instrument that two
evaluations can share (its sha256 names it in results.json) and a training set later stages can
reuse.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from londinium.errors import LondiniumError
from londinium.files import write_json
from londinium.tasks.cloze import ClozeSpec, cut_cloze, unigram_accuracy, word_counts
from londinium.tasks.items import write_items
from londinium.workspace import Workspace


def build_cloze(ws: Workspace, spec: ClozeSpec, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Cut (or confirm up to date) the cloze set of `spec.split`; returns the items file."""
    from londinium.data.documents import iter_documents, iter_texts, require_split

    if spec.split not in ("val", "test"):
        raise LondiniumError(f"cloze: split {spec.split!r} is not held out; use 'val' or 'test'")
    train, held_out = require_split(ws, "train"), require_split(ws, spec.split)

    def run() -> list[Path]:
        counts = word_counts(iter_texts(train))
        docs = list(iter_documents(held_out))
        items = cut_cloze(docs, counts, spec)
        write_items(ws.task_items("cloze"), items)
        write_json(ws.task_card("cloze"), card(items, counts, spec, len(docs)))
        if items:
            log(f"tasks: {len(items)} cloze items from {len({i.doc_id for i in items})} {spec.split} documents -> {ws.task_items('cloze')}")
        else:  # a corpus too small for the set is not an error: the evaluation says so and goes on
            log(f"tasks: warning: {card(items, counts, spec, len(docs))['note']}")
        return [ws.task_items("cloze"), ws.task_card("cloze")]

    ws.run_stage("tasks/cloze", spec, run, inputs=[train, held_out], force=force, log=log)
    return ws.task_items("cloze")


def card(items: list, counts: Counter[str], spec: ClozeSpec, documents: int) -> dict[str, Any]:
    """What the set is: its spec, counts by source, and the baselines a model must beat."""
    answer_lengths = sorted(len(i.answer) - 1 for i in items)
    note = "" if items else (
        f"no cloze item could be cut from the {documents} {spec.split} documents: items need a document of more than "
        f"eval.cloze_context_words ({spec.context_words}) words and words seen at least {spec.min_count} times in the train "
        "split; add text or lower eval.cloze_context_words")
    return {
        "task": "cloze",
        "spec": dataclasses.asdict(spec),
        "items": len(items),
        "documents_read": documents,
        "documents_used": len({i.doc_id for i in items}),
        "by_source": dict(sorted(Counter(i.source for i in items).items())),
        "chance": 1 / spec.choices,
        "unigram_accuracy": unigram_accuracy(items, counts),
        "answer_chars_median": answer_lengths[len(answer_lengths) // 2] if answer_lengths else 0,
        "examples": [i.to_dict() for i in items[:3]],
        "note": note,
    }
