"""The cloze set: multiple-choice items cut from held-out documents of any corpus.

An item is a passage of a held-out document up to a masked word (the prompt), that word (the
answer) and distractors: other words of the same corpus that a model cannot tell from the answer
without reading the passage. The model scores each choice by its log-likelihood after the prompt,
as the probes are scored (`eval/probes.py`), so the set needs nothing hand-written and fits any
corpus. What makes an item informative for a small model:

- the masked word is a content word: not one of the most frequent word types that together make up
  `skip_share` of the train split's words (function words, which even a bigram model gets: half the
  words are the top 81 types of the default corpus, 120 of the Python docs, a dozen of a toy one),
  seen at least `min_count` times in the train split (a model could have learnt it), letters only,
  after a plain space;
- the prompt is the `context_words` words before it in the same document (cut at a word start), so
  there is something to read;
- the distractors have the answer's case shape, a similar length and the same ending class
  (-ing, -ed, -ly, -s, ...: a crude part of speech, so grammar alone rarely rules them out), and
  a train-split frequency near the answer's, as many more frequent as less frequent on average, so
  the answer cannot be guessed by unigram frequency (the card reports that baseline: it sits at
  chance).

Items are spread over documents: each document's eligible positions are shuffled by a generator
seeded with (seed, document id), and documents are taken round-robin by source, one item each per
round, so a set of n items is the first n of a longer one, and editing one document moves only its
own items. Only documents of the held-out split are read for items; the train split gives only
word counts.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from londinium.tasks.items import TaskItem

# A word: letters with inner apostrophes, so "king's" is one word (and is not eligible: letters only).
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_ENDINGS = ("ing", "ed", "ly", "est", "er", "ness", "tion", "ment", "s")


@dataclass(frozen=True)
class ClozeSpec:
    """How a cloze set is cut (the [eval] cloze_* settings)."""

    split: str = "val"
    items: int = 1000
    choices: int = 4
    context_words: int = 48
    skip_share: float = 0.5
    min_count: int = 5
    seed: int = 1337


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each word (as written) occurs in `texts`."""
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(_WORD.findall(t))
    return counts


def shape(word: str) -> str:
    """Case shape: 'lower', 'title' or 'upper' ('' for anything else, which is not used)."""
    if word.islower():
        return "lower"
    if word.istitle():
        return "title"
    return "upper" if word.isupper() and len(word) > 1 else ""


def ending(word: str) -> str:
    """A crude word class: the first of a few common English endings the word has, or ''."""
    w = word.lower()
    return next((e for e in _ENDINGS if w.endswith(e) and len(w) > len(e) + 2), "")


class DistractorPool:
    """Eligible words grouped by case shape, ending and length, each group sorted by train-split frequency."""

    def __init__(self, counts: Counter[str], skip_share: float, min_count: int):
        by_lower: Counter[str] = Counter()
        for w, n in counts.items():
            by_lower[w.lower()] += n
        frequent, covered, total = set(), 0, sum(by_lower.values())
        for w, n in by_lower.most_common():
            if covered >= skip_share * total:
                break
            frequent.add(w)
            covered += n
        self.counts = counts
        self.eligible = {w for w, n in counts.items()
                         if n >= min_count and len(w) >= 3 and w.isalpha() and shape(w) and w.lower() not in frequent}
        self.groups: dict[tuple[str, str, int], list[tuple[int, str]]] = {}
        for w in self.eligible:
            self.groups.setdefault((shape(w), ending(w), len(w)), []).append((counts[w], w))
        self._like: dict[tuple[str, str, int], list[tuple[int, str]]] = {}

    def like(self, answer: str) -> list[tuple[int, str]]:
        """(count, word) of the words with the case shape and ending of `answer` and a length within
        2 of its own (the answer among them), by count; kept per shape, ending and length."""
        key = (shape(answer), ending(answer), len(answer))
        if key not in self._like:
            near = (self.groups.get((*key[:2], n), ()) for n in range(key[2] - 2, key[2] + 3))
            self._like[key] = sorted(itertools.chain.from_iterable(near))
        return self._like[key]

    def distractors(self, answer: str, k: int, rng: random.Random) -> list[str] | None:
        """k words like `answer`, near it in frequency; None when there are too few. How many are
        more frequent than the answer is drawn uniformly from 0..k, so its frequency rank among the
        choices is uniform and guessing by frequency (the most or the least frequent) scores chance."""
        fits = self.like(answer)
        lo = bisect.bisect_left(fits, (self.counts[answer], answer))  # fits[:lo] are less frequent
        hi = lo + 1 if lo < len(fits) and fits[lo][1] == answer else lo  # fits[hi:] more (same case: only itself is the answer)
        below, above = lo, len(fits) - hi
        if below + above < k:
            return None
        down = min(k - rng.randint(0, k), below)
        up = k - down
        if up > above:
            up, down = above, k - above
        # each from the 2 x as many nearest on its side
        picked = rng.sample([w for _, w in fits[hi:hi + 2 * up]], up) + rng.sample([w for _, w in fits[max(0, lo - 2 * down):lo]], down)
        rng.shuffle(picked)
        return picked


def _positions(text: str, pool: DistractorPool, spec: ClozeSpec) -> list[tuple[int, int, int]]:
    """(prompt start, answer start, answer end) of every eligible word with enough context before it."""
    words = list(_WORD.finditer(text))
    return [(words[i - spec.context_words].start(), m.start() - 1, m.end())  # the answer keeps its space
            for i, m in enumerate(words)
            if i >= spec.context_words and m.group() in pool.eligible and text[m.start() - 1] == " "]


def cut_cloze(held_out: Sequence[dict], counts: Counter[str], spec: ClozeSpec) -> list[TaskItem]:
    """At most `spec.items` cloze items from the documents `held_out` (rows of one held-out split),
    with distractors chosen by the train split's word `counts` (see the module docstring)."""
    from londinium.eval.heldout import interleave, round_robin_by_source

    pool = DistractorPool(counts, spec.skip_share, spec.min_count)
    # a document's share, with spares for documents that have fewer eligible words
    cap = math.ceil(2 * spec.items / max(1, len(held_out)))
    per_doc: list[list[TaskItem]] = []
    for doc in round_robin_by_source(held_out):
        text = doc.get("text", "")
        rng = random.Random(f"{spec.seed}:{doc.get('id')}")
        positions = _positions(text, pool, spec)
        rng.shuffle(positions)
        taken: list[TaskItem] = []
        used: list[int] = []
        for prompt_start, start, end in positions:
            if any(abs(start - u) < 40 for u in used):  # items of one document a few words apart at least
                continue
            answer = text[start:end]
            words = pool.distractors(answer[1:], spec.choices - 1, rng)
            if words is None:
                continue
            used.append(start)
            taken.append(TaskItem(
                id="", task="cloze", split=spec.split, prompt=text[prompt_start:start], answer=answer,
                distractors=tuple(" " + w for w in words),
                doc_id=str(doc.get("id", "")), source=str(doc.get("source") or ""), group=str(doc.get("group") or ""),
                start=start, end=end, prompt_start=prompt_start,
            ))
            if len(taken) >= cap:
                break
        per_doc.append(taken)
    items = interleave(per_doc)[:spec.items]
    return [_numbered(item, k) for k, item in enumerate(items, start=1)]


def _numbered(item: TaskItem, k: int) -> TaskItem:
    return dataclasses.replace(item, id=f"cloze-{item.split}-{k:05d}")


def unigram_accuracy(items: Sequence[TaskItem], counts: Counter[str]) -> float:
    """What guessing the choice most frequent in the train split scores (ties shared: an answer tied
    with one distractor counts 1/2): near 1 / choices when the distractors are frequency-matched."""
    if not items:
        return 0.0
    right = 0.0
    for item in items:
        n = [counts[c.strip()] for c in item.choices]
        if n[0] == max(n):
            right += 1 / n.count(n[0])
    return right / len(items)
