"""First Folio spelling -> modern spelling: the same line of a play in both editions.

The default corpus has each play twice: the Gutenberg text in modern spelling (`*_gut.txt`) and the
First Folio's (`*_gut_f.txt`); the corpus keeps both in one split and one near-duplicate group, which
pairs them (their file names may differ: "comedy_of_errours_gut_f.txt").
Lines are aligned by their spelling-folded words (`spelling.fold_word`: "vnder" and "under" meet):
a Folio line whose folded form occurs exactly once in the modern text, and once in its own, is paired
with that modern line. Only pairs whose words differ are kept (a line that needs no modernising tests
nothing). Lineation differs between the editions in prose, so most pairs are verse lines.

Scored by chrF against the modern line and by word accuracy on the words that differ (the
prediction's word at that position), beside the copy-the-input baseline (its word accuracy is 0).
"""

from __future__ import annotations

import random
from typing import Sequence

from londinium.spelling import fold_word, words
from londinium.tasks.cut import TaskSpec, lines, numbered
from londinium.tasks.generic import Corpus
from londinium.tasks.items import TaskItem

FOLIO, MODERN = "_gut_f.txt", "_gut.txt"


def key(line: str) -> str:
    return " ".join(fold_word(w) for w in words(line))


def align(folio: str, modern: str, min_words: int = 4) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((folio start, end), (modern start, end)) of the lines of two texts of one play that have the
    same folded words, unique in both texts, at least `min_words` words, and some word spelt differently."""
    def unique(text: str) -> dict[str, tuple[int, int]]:
        seen: dict[str, tuple[int, int] | None] = {}
        for s, e in lines(text):
            k = key(text[s:e])
            seen[k] = None if k in seen else (s, e)
        return {k: v for k, v in seen.items() if v is not None and len(k.split()) >= min_words}

    ours, theirs = unique(folio), unique(modern)
    pairs = [(span, theirs[k]) for k, span in ours.items() if k in theirs]
    return [(f, m) for f, m in sorted(pairs) if words(folio[slice(*f)]) != words(modern[slice(*m)])]


def cut_modernize(corpus: Corpus, spec: TaskSpec) -> list[TaskItem]:
    from londinium.tasks.period import text_file

    plays: dict[str, list[dict]] = {}  # text file -> its documents
    editions: dict[str, set[str]] = {}  # near-duplicate group -> its text files
    for d in corpus.get(spec.split, ()):
        plays.setdefault(text_file(d), []).append(d)
        editions.setdefault(str(d.get("group") or ""), set()).add(text_file(d))
    per_play: list[list[TaskItem]] = []
    for files in (sorted(f) for _, f in sorted(editions.items())):
        # the two editions of a play share a group (file names differ: "comedy_of_errours_gut_f.txt")
        folios, moderns = [f for f in files if f.endswith(FOLIO)], [f for f in files if f.endswith(MODERN)]
        if len(folios) != 1 or len(moderns) != 1:
            continue
        play, modern_docs = folios[0], plays[moderns[0]]
        # align whole plays (documents are chunks; a line's twin may sit in another chunk)
        folio, modern = _joined(plays[play]), _joined(modern_docs)
        items = []
        for (fs, fe), (ms, me) in align(folio[0], modern[0]):
            doc, start = _locate(modern, ms)
            items.append(TaskItem(id="", task="modernize", split=spec.split, prompt=folio[0][fs:fe], answer=modern[0][ms:me],
                                  doc_id=str(doc.get("id", "")), source=str(doc.get("source") or ""), group=str(doc.get("group") or ""),
                                  start=start, end=start + me - ms))
        random.Random(f"{spec.seed}:modernize:{moderns[0]}").shuffle(items)
        per_play.append(items)
    from londinium.eval.heldout import interleave

    return numbered(interleave(per_play)[: spec.items])


def _joined(docs: Sequence[dict]) -> tuple[str, list[tuple[int, dict]]]:
    """The play's text (its documents in order, joined by a newline) and where each document starts."""
    from londinium.tasks.period import _part

    text, starts = "", []
    for d in sorted(docs, key=_part):
        starts.append((len(text), d))
        text += d.get("text", "") + "\n"
    return text, starts


def _locate(joined: tuple[str, list[tuple[int, dict]]], pos: int) -> tuple[dict, int]:
    """The document holding offset `pos` of a joined text, and the offset within it."""
    offset, doc = next((s, d) for s, d in reversed(joined[1]) if s <= pos)
    return doc, pos - offset


def word_accuracy(folio: str, modern: str, prediction: str) -> float | None:
    """Share of the words spelt differently in `folio` and `modern` that `prediction` spells as
    `modern` does, word by word in position; None when no word differs."""
    f, m, p = words(folio), words(modern), words(prediction)
    differ = [i for i in range(min(len(f), len(m))) if f[i] != m[i]]
    if not differ:
        return None
    return sum(1 for i in differ if i < len(p) and p[i] == m[i]) / len(differ)
