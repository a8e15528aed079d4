"""Labelled pairs of single-turn questions for the semantic cache: paraphrases that should hit and
near-misses that must not, generated from a corpus's documents in the manner of its tasks.

    pairs = make_pairs(docs, 800, random.Random(0))                       # what benchmarks/semantic_cache.py measures on
    triplets = make_triplets(docs, 2000, random.Random(0), TUNING["all"])  # what `gateway tune-embedder` trains on

- **paraphrase**: the same question about the same line or work, asked with another wording of that
  task, with surface noise (case, quotes, trailing words) on one side;
- **near-misses** (each answer differs): the same wording about the most similar other line (most
  shared words); the same line asked by another task; the line with one word swapped for another
  corpus word; a neighbouring chapter or another work ("Summarise Genesis 30" vs "Genesis 31").

The wordings are shared by every split, so `HELD_OUT` names some that fine-tuning can leave out
(`TUNING["training"]`): pairs made with only those say whether a tuned encoder learnt what is asked or
memorised how it was worded. Training also sees `EXTRA` wordings that no pair uses.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from londinium.errors import LondiniumError


@dataclass(frozen=True)
class Wordings:
    """Question templates per task ("{x}" is the line) and for a chapter or work ("{x}" is its title)."""

    tasks: dict[str, list[str]]
    titles: list[str]

    def __post_init__(self) -> None:
        short = [t for t, w in self.tasks.items() if len(w) < 2] + (["titles"] if len(self.titles) < 2 else [])
        if short or len(self.tasks) < 2:  # a paraphrase needs two wordings of a task; an other-task near-miss, two tasks
            raise ValueError(f"wordings need two tasks and two templates each (too few: {short or 'tasks'})")


ALL = Wordings(
    tasks={
        "next_line": ["What line follows \"{x}\"?", "Which line comes after \"{x}\"?", "Give me the next line after: {x}",
                      "How does it go on after \"{x}\"?"],
        "source": ["Which work is the line \"{x}\" from?", "Where does the line \"{x}\" come from?",
                   "Name the text that contains \"{x}\".", "\"{x}\": what is the source of this line?"],
        "modernise": ["Put \"{x}\" into modern English.", "Rewrite this in present-day English: {x}",
                      "How would we say \"{x}\" today?"],
        "explain": ["What does \"{x}\" mean?", "Explain the line \"{x}\".", "What is meant by \"{x}\"?"],
    },
    titles=["Summarise {x}.", "Give me a short summary of {x}.", "What happens in {x}?", "Tell me briefly what {x} is about."],
)
# The last two wordings of each task with four, and of the titles: never seen by a tuned encoder.
HELD_OUT = Wordings({t: w[2:] for t, w in ALL.tasks.items() if len(w) >= 4}, ALL.titles[2:])
# More ways of asking, for training only (no pair of the benchmark uses them): a tuned encoder learns the
# wordings it is shown, so the more it sees, the more unseen ones it gets right (docs/LOG.md: trained with
# these and without HELD_OUT, it kept 0.99 of the paraphrases worded only in HELD_OUT's ways, 0.23 without).
EXTRA = Wordings(
    tasks={
        "next_line": ["What comes next after \"{x}\"?", "Continue the line \"{x}\".", "After \"{x}\", what is the following line?",
                      "Which line is next: {x}"],
        "source": ["From which work is \"{x}\" taken?", "In what text does \"{x}\" appear?",
                   "Identify the work that has the line \"{x}\".", "Who wrote \"{x}\", and in which work?"],
        "modernise": ["Translate \"{x}\" into the English of today.", "Say \"{x}\" in plain modern words."],
        "explain": ["Help me understand \"{x}\".", "Paraphrase the meaning of \"{x}\"."],
    },
    titles=["Sum up {x}.", "Outline {x} for me.", "Give the gist of {x}."],
)


def _joined(first: Wordings, more: Wordings) -> Wordings:
    return Wordings({t: w + more.tasks.get(t, []) for t, w in first.tasks.items()}, first.titles + more.titles)


# What the benchmark's pairs are asked in, and what `gateway tune-embedder --wordings` trains on.
PAIRS = {"all": ALL, "held-out": HELD_OUT}
TUNING = {"all": _joined(ALL, EXTRA),
          "training": _joined(Wordings({t: w[:2] if len(w) >= 4 else w for t, w in ALL.tasks.items()}, ALL.titles[:2]), EXTRA)}

NOISE: list[Callable[[str], str]] = [lambda s: s.lower(), lambda s: s.replace("\"", ""), lambda s: s + " Please.",
                                     lambda s: "Quick question: " + s, lambda s: s.rstrip("?.") + "?"]
NEAR_MISSES = ("other-line", "other-task", "one-word", "other-title")
WORD = re.compile(r"[A-Za-z']+")


def candidate_lines(docs: list[dict]) -> list[str]:
    """Lines (or sentences) that read as a question's subject: 30-90 characters, 6+ words, not a heading in capitals."""
    seen, out = set(), []
    for d in docs:
        for line in re.split(r"\n|(?<=[.;!?])\s+", d["text"]):
            line = line.strip().rstrip(",;:")
            if 30 <= len(line) <= 90 and len(WORD.findall(line)) >= 6 and not line.isupper() and line not in seen:
                seen.add(line)
                out.append(line)
    return out


def _words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text)}


def _nearest(line: str, pool: list[str], words: list[set[str]], rng: random.Random) -> str:
    """The other line of a sample of the pool sharing most words with `line` (Jaccard)."""
    mine = _words(line)
    best, score = line, -1.0
    for i in rng.sample(range(len(pool)), min(400, len(pool))):
        if pool[i] == line:
            continue
        j = len(mine & words[i]) / max(1, len(mine | words[i]))
        if j > score:
            best, score = pool[i], j
    return best


def _swap_word(line: str, vocabulary: list[str], rng: random.Random) -> str:
    """`line` with one word of 4+ letters replaced by another corpus word: a different line, minimally."""
    spots = [m for m in WORD.finditer(line) if len(m.group()) >= 4]
    m = rng.choice(spots)
    other = rng.choice([w for w in rng.sample(vocabulary, 20) if w.lower() != m.group().lower()] or ["mercy"])
    return line[:m.start()] + other + line[m.end():]


def _other_title(title: str, titles: list[str], rng: random.Random) -> str:
    """A neighbouring chapter ("Genesis 30" -> "Genesis 31") when the title ends in a number, else another work."""
    m = re.fullmatch(r"(.*\D)(\d+)", title)
    if m:
        n = int(m.group(2))
        return f"{m.group(1)}{n + 1 if n == 1 or rng.random() < 0.5 else n - 1}"
    return rng.choice([t for t in titles if t != title])


class _Material:
    """What the questions are about: the documents' candidate lines, their words and titles."""

    def __init__(self, docs: list[dict], what: str) -> None:
        self.pool = candidate_lines(docs)
        if len(self.pool) < 20:
            raise LondiniumError(f"{what}: too few lines ({len(self.pool)}) to make question pairs from; use a bigger corpus")
        self.words = [_words(x) for x in self.pool]
        self.vocabulary = sorted({w for x in self.pool for w in WORD.findall(x) if len(w) >= 4})
        self.titles = sorted({d["title"] for d in docs if d.get("title")})

    def question(self, kind: str, rng: random.Random, wordings: Wordings, titled: bool) -> tuple[str, str, str]:
        """(the question, its partner of `kind`, the line or title both are about); the partner without noise."""
        if titled:
            x = rng.choice(self.titles)
            a, b = rng.sample(wordings.titles, 2)
            return a.format(x=x), b.format(x=x) if kind == "paraphrase" else a.format(x=_other_title(x, self.titles, rng)), x
        x = rng.choice(self.pool)
        task = rng.choice(list(wordings.tasks))
        a, b = rng.sample(wordings.tasks[task], 2)
        if kind == "paraphrase":
            partner = b.format(x=x)
        elif kind == "other-line":
            partner = a.format(x=_nearest(x, self.pool, self.words, rng))
        elif kind == "one-word":
            partner = a.format(x=_swap_word(x, self.vocabulary, rng))
        else:
            other = rng.choice([t for t in wordings.tasks if t != task])
            partner = rng.choice(wordings.tasks[other]).format(x=x)
        return a.format(x=x), partner, x


def make_pairs(docs: list[dict], n: int, rng: random.Random, wordings: Wordings = ALL) -> list[dict]:
    """n labelled pairs {a, b, same, kind, group}, half paraphrases, half near-misses of four kinds (three
    where the documents have under two titles); `group` (the line or title) is what a split keeps on one side."""
    material = _Material(docs, "the documents")
    titled_docs = len(material.titles) >= 2
    kinds = ["paraphrase"] * 4 + list(NEAR_MISSES) if titled_docs else ["paraphrase"] * 3 + list(NEAR_MISSES[:3])
    pairs = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        titled = kind == "other-title" or (kind == "paraphrase" and titled_docs and rng.random() < 0.25)
        q1, q2, x = material.question(kind, rng, wordings, titled)
        if kind == "paraphrase" or rng.random() < 0.5:  # near-misses get the same noise, so it tells nothing
            q2 = rng.choice(NOISE)(q2)
        pairs.append({"a": q1, "b": q2, "same": kind == "paraphrase", "kind": kind, "group": x})
    return pairs


def make_triplets(docs: list[dict], n: int, rng: random.Random, wordings: Wordings) -> list[dict]:
    """n training rows {anchor, positive, negative, kind}: a question, a paraphrase of it (with noise) and a
    near-miss of it (the kinds in turn, "other-task" twice as often: the one the particulars cannot catch)."""
    material = _Material(docs, "the training documents")
    titled_docs = len(material.titles) >= 2
    kinds = ["other-task", "other-task", "other-line", "one-word"] + (["other-title"] if titled_docs else [])
    rows = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        titled = kind == "other-title"
        state = rng.getstate()
        anchor, negative, x = material.question(kind, rng, wordings, titled)
        rng.setstate(state)  # the same subject and wording again, for the paraphrase of the same anchor
        same_anchor, positive, y = material.question("paraphrase", rng, wordings, titled)
        assert (same_anchor, y) == (anchor, x)
        if rng.random() < 0.5:
            negative = rng.choice(NOISE)(negative)
        rows.append({"anchor": anchor, "positive": rng.choice(NOISE)(positive), "negative": negative, "kind": kind})
    return rows
