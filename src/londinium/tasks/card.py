"""The data card of a task: counts per split, examples, answer lengths, the baseline's score; and
of the task set (every task built), as JSON and Markdown (`tasks/card.json`, `tasks/card.md`)."""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from londinium.tasks.catalog import task as task_named
from londinium.tasks.items import TaskItem

SPLITS = ("train", "val", "test")


def task_card(name: str, items: Sequence[TaskItem], note: str = "") -> dict[str, Any]:
    from londinium.tasks.check import baseline_prediction, check

    t = task_named(name)
    train = [i for i in items if i.split == "train"]
    out: dict[str, Any] = {"task": name, "about": t.about, "metric": t.metric, "baseline": t.baseline,
                           "items": {s: sum(1 for i in items if i.split == s) for s in SPLITS},
                           "documents": {s: len({i.doc_id for i in items if i.split == s}) for s in SPLITS}}
    words = [len(i.answer.split()) for i in items]
    chars = [len(i.answer.strip()) for i in items]
    out["answer_words"] = _stats(words)
    out["answer_chars"] = _stats(chars)
    out["baseline_score"] = {}
    for s in ("val", "test"):
        held = [i for i in items if i.split == s]
        if held:
            out["baseline_score"][s] = round(statistics.fmean(check(name, baseline_prediction(name, i, train), i) for i in held), 4)
    out["examples"] = [next(i for i in items if i.split == s).to_dict() for s in SPLITS if out["items"][s]]
    out["note"] = note or ("" if items else f"no {name} item could be cut from this corpus ({t.about})")
    return out


def _stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"median": 0, "mean": 0, "max": 0}
    return {"median": statistics.median(values), "mean": round(statistics.fmean(values), 2), "max": max(values)}


def set_markdown(cards: Sequence[dict[str, Any]]) -> str:
    """The task set's card in Markdown: a table of counts and baselines, then an example per task."""
    lines = ["# Task set", "", "Tasks cut from the corpus (`londinium tasks build`); val and test items come only from val and test documents.", "",
             "| task | metric | train | val | test | answer words (median / max) | baseline | baseline val |",
             "|---|---|---:|---:|---:|---|---|---:|"]
    for c in cards:
        n = c["items"]
        base = c["baseline_score"].get("val")
        lines.append(f"| {c['task']} | {c['metric']} | {n['train']} | {n['val']} | {n['test']} | "
                     f"{c['answer_words']['median']} / {c['answer_words']['max']} | {c['baseline']} | {'' if base is None else f'{base:.3f}'} |")
    lines.append("")
    for c in cards:
        lines += [f"## {c['task']}", "", c["about"] + ("" if not c["note"] else f". {c['note']}"), ""]
        if c["examples"]:
            from londinium.tasks.items import TaskItem
            from londinium.tasks.prompts import ASK

            ex = c["examples"][0]
            item = TaskItem(**{**ex, "distractors": tuple(ex["distractors"])})
            lines += ["```text", ASK[item.task](item), "-> " + item.answer.strip(), "```", f"from `{item.doc_id}`", ""]
    return "\n".join(lines)
