"""Deterministic period-flavoured English for fixture corpora."""

from __future__ import annotations

import random

WORDS = ("thou thee thy hath doth art shalt lord king queen heaven earth night day light love death sword crown "
         "blood grace mercy honour shame sweet fair foul noble gentle man woman child father mother house land sea "
         "fire water wind speak know see hear come go give take make keep stand fall rise live die").split()
GLUE = "and the of to in that with for not but upon unto is was his her my our".split()


def prose(seed: int, sentences: int = 30) -> str:
    """Sentences of alternating glue and content words, a paragraph break every six; distinct per
    seed (no shared shingles to speak of)."""
    rng = random.Random(seed)
    out = []
    for i in range(sentences):
        words = [rng.choice(WORDS) if j % 2 else rng.choice(GLUE) for j in range(rng.randint(8, 14))]
        out.append(" ".join(words).capitalize() + rng.choice([".", ";", "!", "?"]))
        if i % 6 == 5:
            out.append("\n\n")
    return " ".join(out).replace(" \n\n ", "\n\n")
