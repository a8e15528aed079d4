"""Tasks as recorded stages: `tasks/<task>/items.jsonl` and `card.json`, made from the corpus.

    build_cloze(ws, ClozeSpec(split="val"))  -> tasks/cloze/items.jsonl  (recorded as "tasks/cloze")
    build_tasks(ws, TasksConfig())           -> tasks/<task>/items.jsonl for each task of the set,
                                                train, val and test items in one file (recorded as
                                                "tasks/<task>"), and the set's card tasks/card.{json,md}

A task set is a function of the corpus splits and its spec: it is cut again only when they change,
and the same corpus and spec give the same bytes, so the set is a fixed instrument that two
evaluations can share (its sha256 names it in results.json) and a training set later stages can
reuse.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from londinium.errors import LondiniumError
from londinium.files import write_json, write_text
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


def build_tasks(ws: Workspace, cfg: Any, force: bool = False, log: Callable[[str], None] = print) -> list[str]:
    """Cut (or confirm up to date) each task of the set `cfg` (a TasksConfig: its tasks, or the
    corpus's default mix); returns the task names. Items of a split come only from documents of that
    split. The cloze instrument of `londinium eval` (tasks/cloze) is not part of the set: its
    held-out items are cut by [eval]'s settings; the set's `next_word` task cuts the same kind of
    items from every split."""
    from londinium.data.documents import iter_documents, require_split
    from londinium.tasks.card import SPLITS, set_markdown, task_card
    from londinium.tasks.catalog import task
    from londinium.tasks.cut import TaskSpec
    from londinium.tasks.messages import default_tasks

    names = list(cfg.tasks) or list(default_tasks(ws))
    cutters = {n: task(n) for n in names}  # unknown names fail before anything is read
    paths = [require_split(ws, s) for s in SPLITS]
    corpus: dict[str, list[dict]] = {}

    def load() -> dict[str, list[dict]]:
        if not corpus:
            corpus.update({s: list(iter_documents(p)) for s, p in zip(SPLITS, paths)})
        return corpus

    for name in names:
        def run(name: str = name) -> list[Path]:
            items = []
            for split in SPLITS:
                n = cfg.train_items if split == "train" else cfg.eval_items
                if n:
                    spec = TaskSpec(split=split, items=n, choices=cfg.choices, passage_words=cfg.passage_words, seed=cfg.seed,
                                    digits=cfg.arith_digits)
                    items += cutters[name].cut(load(), spec)
            write_items(ws.task_items(name), items)
            write_json(ws.task_card(name), task_card(name, items))
            counts = ", ".join(f"{sum(1 for i in items if i.split == s)} {s}" for s in SPLITS)
            log(f"tasks: {name}: {counts} -> {ws.task_items(name)}")
            return [ws.task_items(name), ws.task_card(name)]

        section = dataclasses.replace(cfg, tasks=[name], shots=0, max_tokens=1)  # what the items depend on
        ws.run_stage(f"tasks/{name}", section, run, inputs=paths, force=force, log=log)
    cards = [json.loads(ws.task_card(n).read_text(encoding="utf-8")) for n in names]
    write_json(ws.stage_dir("tasks") / "card.json", {"tasks": cards})
    write_text(ws.stage_dir("tasks") / "card.md", set_markdown(cards))
    log(f"tasks: {sum(sum(c['items'].values()) for c in cards)} items of {len(names)} tasks; card -> {ws.stage_dir('tasks') / 'card.md'}")
    return names
