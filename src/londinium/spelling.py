"""Spelling folding: one form for the period and modern spellings of a word.

Early Modern printing spells one word many ways: "vpon"/"upon", "haue"/"have", "ioy"/"joy",
"selfe"/"self", "ſweet"/"sweet". `fold_word` maps them onto one key (lower case; long s to s; v to u,
j and y to i; doubled letters single; a final -e dropped), so "vpon" and "upon" both become "upon",
"haue" and "have" both "hau". Keys are for matching only -- no text is ever rewritten with them.

It is the "early-modern" folding of the corpus profiles (`profiles.FOLDINGS`; period-london folds
so, neutral only lower-cases), used where a corpus or one of its sources asks for it: by the corpus
stage's near-duplicate grouping (a play's modern and First Folio texts land in one group) and the
search index (a modern query finds the Folio text, and the other way round). On other text it
would join words that are not spellings of one another ("bit"/"byte", "fill"/"file"), so nothing
folds with it by default.
"""

from __future__ import annotations

import re
# A word: letters, with inner apostrophes ("o'er", "heav’n"); digits and underscores are not letters.
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)
_DOUBLE = re.compile(r"(.)\1+")
_FOLD = str.maketrans({"ſ": "s", "v": "u", "j": "i", "y": "i", "’": "'"})


def fold_word(word: str) -> str:
    """Spelling-folded form of one word, so period and modern spellings meet."""
    w = _DOUBLE.sub(r"\1", word.lower().translate(_FOLD))
    return w[:-1] if len(w) > 2 and w.endswith("e") else w


def words(text: str) -> list[str]:
    """The words of `text`, as written."""
    return WORD.findall(text)
