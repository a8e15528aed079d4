"""Deterministic period-flavoured English for fixture corpora."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("thou thee thy hath doth art shalt lord king queen heaven earth night day light love death sword crown "
         "blood grace mercy honour shame sweet fair foul noble gentle man woman child father mother house land sea "
         "fire water wind speak know see hear come go give take make keep stand fall rise live die").split()
GLUE = "and the of to in that with for not but upon unto is was his her my our".split()


def prose(seed: int, sentences: int = 30) -> str:
    """Sentences of alternating glue and content words, a paragraph break every six; distinct per
    seed (no shared shingles to speak of)."""
    return _sentences(seed, sentences, WORDS, GLUE, [".", ";", "!", "?"])


def _sentences(seed: int, sentences: int, content: list[str], glue: list[str], ends: list[str]) -> str:
    rng = random.Random(seed)
    out = []
    for i in range(sentences):
        words = [rng.choice(content) if j % 2 else rng.choice(glue) for j in range(rng.randint(8, 14))]
        out.append(" ".join(words).capitalize() + rng.choice(ends))
        if i % 6 == 5:
            out.append("\n\n")
    return " ".join(out).replace(" \n\n ", "\n\n")


def local_sources(folder: Path, files: int = 4) -> Path:
    """A sources registry (`folder/sources.toml`) with one local source of `files` prose texts in
    `folder/texts`: a corpus build that needs nothing but the disk."""
    texts = folder / "texts"
    texts.mkdir()
    for i in range(files):
        (texts / f"t{i}.txt").write_text(f"TEXT {i}\n\n" + prose(40 + i, 12), encoding="utf-8")
    registry = folder / "sources.toml"
    registry.write_text('[[source]]\nid = "s"\nkind = "local"\nlocation = "texts"\nperiod = [1600, 1600]\n', encoding="utf-8")
    return registry


MODERN = ("server client request response file folder index query cache token model layer batch thread process "
          "memory socket header payload buffer stream channel queue worker result error message record table column "
          "value string number list object method function module package library version release branch commit "
          "review test suite check build deploy install configure update delete create return raise handle parse "
          "render compile encode decode compress upload download connect restart schedule measure report monitor "
          "quickly slowly safely directly usually rarely often always never remote local public private default "
          "large small fast slow stable broken empty valid invalid secure shared nested sorted cached written "
          "reading writing running testing logging routing parsing sending loading storing waiting "
          "engineer developer operator customer manager reviewer tester owner user admin team project").split()
MODERN_GLUE = "the a of to in and is for with on that by from it as when each this".split()


def modern_prose(seed: int, sentences: int = 30) -> str:
    """Technical English of today (servers, files, commits), shaped like `prose`: a non-period corpus."""
    return _sentences(seed, sentences, MODERN, MODERN_GLUE, [".", ";", ":", "?"])


def modern_corpus_rows(split: str, n_docs: int, sentences: int = 24) -> list[dict]:
    """Corpus rows (id, text, source, group, title) of `modern_prose`, one group per document; the
    seeds of the splits do not overlap."""
    base = {"train": 0, "val": 10_000, "test": 20_000}[split]
    return [{"id": f"docs/page{base + i}.md#0", "text": modern_prose(base + i, sentences), "source": "docs",
             "group": f"{split}-{i}", "title": f"page {base + i}", "period": [0, 0]} for i in range(n_docs)]
