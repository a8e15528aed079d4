"""A question's particulars: what it is about, as against how it is asked.

"What line follows "Vpon this blasted heath"?" and "Which line comes after "Vpon this blasted heath"?"
ask one thing; "What line follows "Vpon this blasted hill"?" asks another, yet every embedder here puts
it closer to the first than the reworded question (docs/LOG.md). An embedding weighs how a question is
asked; the particulars decide what it is about, and they must agree for the semantic cache to reuse an
answer:

- **quoted spans** ("..." or “...”): a question that quotes asks about exactly that text, so each
  span of one question must occur in the other, word for word (case and punctuation aside; the other
  may quote it or not);
- **names and rare words** outside quotes: a word rarer than `rare_zipf` in general English
  (`wordfreq`'s Zipf scale: 4 is once per 100,000 words, so "hamlet" 3.7 and "thee" 4.0 are
  particulars, "follows" 4.8 and "summary" 4.4 are not), or a capitalised word inside a sentence
  ("Genesis", "Macbeth"), must occur in the other question too;
- **numbers** are the scope's already (`semantic_cache.numbers`), compared exactly.

Equal particulars are not enough: "What line follows "X"?" and "Which work is "X" from?" share every one,
and the quoted line dominates both embeddings, so they score like a paraphrase. `frames` gives what is left
of each question once what the two share (their particulars and any run of `SHARED_RUN` or more words, i.e.
the passage, quoted or not) stands as one placeholder: "what line follows this text" against "which work
is this text from". The step compares the frames' embeddings too (`semantic_cache.frame_threshold`): the
same thing asked about the same particulars.

Nothing here is tuned to one corpus: the rarity comes from a general word list, not from the labelled
pairs, and the Zipf bound is chosen on the benchmark's tune half (benchmarks/semantic_cache.py).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”")  # double quotes only: a single one is usually an apostrophe
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # letters, with inner apostrophes ("o'er", "heav'n")
SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*)$")  # what precedes a word that is capitalised anyway
# Shared runs this long are the passage the questions are about, not wording they happen to share: two
# wordings of one question share a word or two ("what", "line"), a quoted line shares its whole length.
SHARED_RUN = 3
# What stands for the shared passage in a frame: words an encoder reads as a sentence's object. Chosen
# among "…", "X", "it", "something" and this on the benchmark's tune half (docs/LOG.md).
PLACEHOLDER = "this text"


def words(text: str) -> list[str]:
    """The text's words, lower-cased, with curly apostrophes made straight: the form particulars compare in."""
    return [w.lower().replace("’", "'") for w in WORD.findall(text)]


@lru_cache(maxsize=1)
def _zipf():
    try:
        from wordfreq import zipf_frequency
    except ImportError as e:
        from londinium.errors import ConfigError

        raise ConfigError("semantic_cache.rare_zipf needs the word-frequency list: pip install 'londinium[semantic]' "
                          "(wordfreq), or set semantic_cache.rare_zipf = 0 to compare quoted spans and names only") from e
    return zipf_frequency


@dataclass(frozen=True)
class Particulars:
    spans: tuple[tuple[str, ...], ...]  # quoted spans, as word sequences
    names: frozenset[str]  # rare words and capitalised names outside quotes
    all_words: tuple[str, ...]  # every word of the question, to look the other's particulars up in

    def found_in(self, other: Particulars) -> bool:
        """Whether every particular of this question occurs in `other`."""
        if not self.names <= set(other.all_words):
            return False
        text = " " + " ".join(other.all_words) + " "
        return all(" " + " ".join(span) + " " in text for span in self.spans if span)


@lru_cache(maxsize=4096)  # a lookup compares against up to 8 stored questions: each is parsed once, not per lookup
def particulars(text: str, rare_zipf: float) -> Particulars:
    """The particulars of a question (module docstring); `rare_zipf` 0 leaves rare words out (names still count)."""
    spans, outside, last = [], [], 0
    for m in QUOTED.finditer(text):
        outside.append(text[last:m.start()])
        spans.append(tuple(words(m.group(1) or m.group(2))))
        last = m.end()
    outside.append(text[last:])
    found = set()
    for part in outside:
        for m in WORD.finditer(part):
            w = m.group().lower().replace("’", "'")
            capitalised = m.group()[0].isupper() and not SENTENCE_START.search(part[:m.start()])
            if len(w) > 1 and (capitalised or (rare_zipf > 0 and _rarity(w) < rare_zipf)):  # not "I"
                found.add(w)
    return Particulars(tuple(spans), frozenset(found), tuple(words(text)))


def load_word_list(rare_zipf: float) -> None:
    """Load the word-frequency list now (when rare words count), so a missing one stops a start-up, not a request."""
    if rare_zipf > 0:
        _zipf()


@lru_cache(maxsize=65536)
def _rarity(word: str) -> float:
    return _zipf()(word, "en")


def agree(a: Particulars, b: Particulars) -> bool:
    """Whether two questions are about the same particulars: each one's occur in the other."""
    return a.found_in(b) and b.found_in(a)


def frames(a: str, b: str, rare_zipf: float) -> tuple[str, str]:
    """Each question's frame against the other (module docstring): its words, lower-cased, with the
    particulars of either and every run of `SHARED_RUN`+ words the two share replaced by `PLACEHOLDER`."""
    wa, wb = words(a), words(b)
    names = particulars(a, rare_zipf).names | particulars(b, rare_zipf).names
    shared_a, shared_b = set(), set()
    for i, j, n in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_matching_blocks():
        if n >= SHARED_RUN:
            shared_a.update(range(i, i + n))
            shared_b.update(range(j, j + n))
    return _frame(wa, shared_a, names), _frame(wb, shared_b, names)


def _frame(ws: list[str], shared: set[int], names: frozenset[str]) -> str:
    out: list[str] = []
    for i, w in enumerate(ws):
        if i in shared or w in names:
            if not out or out[-1] != PLACEHOLDER:  # a passage with a name inside it is still one placeholder
                out.append(PLACEHOLDER)
        else:
            out.append(w)
    return " ".join(out)
