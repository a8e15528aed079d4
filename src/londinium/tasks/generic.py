"""Tasks any corpus has: the next word (cloze), the next line, and which source, period and title a
passage is from. Each cutter reads the documents of one split (`spec.split`) and the corpus's labels.

- next_word: the cloze items of `cloze.py` (a passage, the word that follows, distractors matched
  to it), cut from any split: train items train, val/test items evaluate.
- next_line: a few lines of a document, and the line that follows them (scored by chrF).
- source / period / title: a passage, and the label of its document among others of the corpus
  (multiple choice). A task whose labels have fewer than two values in the corpus has no items.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Mapping, Sequence

from londinium.tasks.cloze import ClozeSpec, cut_cloze, word_counts
from londinium.tasks.cut import TaskSpec, lines, numbered, passage, pick_choices, spread
from londinium.tasks.items import TaskItem

Corpus = Mapping[str, Sequence[dict]]  # split -> corpus rows


def cut_next_word(corpus: Corpus, spec: TaskSpec) -> list[TaskItem]:
    counts: Counter[str] = word_counts(d.get("text", "") for d in corpus.get("train", ()))
    cloze = ClozeSpec(split=spec.split, items=spec.items, choices=spec.choices, context_words=spec.passage_words, seed=spec.seed)
    from londinium.eval.heldout import round_robin_by_source

    docs = round_robin_by_source(corpus.get(spec.split, ()), limit=4 * spec.items)  # enough, without reading all of train
    items = [TaskItem(**{**i.to_dict(), "task": "next_word", "distractors": tuple(i.distractors)}) for i in cut_cloze(docs, counts, cloze)]
    return numbered(items)


def cut_next_line(corpus: Corpus, spec: TaskSpec, task: str = "next_line", source: str = "", context_lines: int = 3) -> list[TaskItem]:
    """Lines of a document and the next one (of 3 to 16 words); only documents of `source` when given."""
    docs = [d for d in corpus.get(spec.split, ()) if not source or d.get("source") == source]

    def one(doc: dict, rng: random.Random, _round: int) -> TaskItem | None:
        text, spans = doc.get("text", ""), lines(doc.get("text", ""))
        fits = [i for i in range(context_lines, len(spans)) if 3 <= len(text[slice(*spans[i])].split()) <= 16]
        if not fits:
            return None
        i = rng.choice(fits)
        begin, (start, end) = spans[i - context_lines][0], spans[i]
        return _item(task, spec, doc, prompt=text[begin:start], answer=text[start:end],
                     prompt_start=begin, start=start, end=end)

    return spread(docs, spec, task, one)


def label_of(doc: dict, key: str) -> str:
    """The document's label for a classification task ('' when it has none)."""
    value = doc.get(key)
    if key == "period" and isinstance(value, (list, tuple)) and len(value) == 2:
        a, b = value
        return str(a) if a == b else f"{a}-{b}"
    return str(value).strip() if isinstance(value, (str, int)) else ""


def cut_label(corpus: Corpus, spec: TaskSpec, key: str) -> list[TaskItem]:
    """A passage and its document's `key` ("source", "period" or "title") among other values of
    the corpus (titles: of the same source, so the choice is not given away by the source)."""
    task = key
    every = [d for split in corpus.values() for d in split]
    labels = sorted({label_of(d, key) for d in every} - {""})
    if len(labels) < 2:
        return []
    by_source: dict[str, set[str]] = {}
    for d in every:
        by_source.setdefault(str(d.get("source") or ""), set()).add(label_of(d, key))

    def one(doc: dict, rng: random.Random, _round: int) -> TaskItem | None:
        answer = label_of(doc, key)
        span = passage(doc.get("text", ""), rng, spec.passage_words) if answer else None
        if span is None:
            return None
        text = doc["text"][slice(*span)]
        if key == "title" and answer.lower() in text.lower():  # the passage would give it away
            return None
        pool = sorted(by_source[str(doc.get("source") or "")] - {""}) if key == "title" else labels
        distractors = pick_choices(answer, pool, spec.choices, rng)
        if distractors is None:
            return None
        return _item(task, spec, doc, prompt=text, answer=answer, distractors=distractors,
                     prompt_start=span[0], start=span[1], end=span[1])

    return spread(corpus.get(spec.split, ()), spec, task, one, rounds=1)


def _item(task: str, spec: TaskSpec, doc: dict, **fields) -> TaskItem:
    return TaskItem(id="", task=task, split=spec.split, doc_id=str(doc.get("id", "")), source=str(doc.get("source") or ""),
                    group=str(doc.get("group") or ""), **fields)
