"""Contamination: how much of a probe or a reference text the model saw in training.

For every item (a probe's prompt + answer, or a held-out reference continuation) we take its word
n-grams (`text_metrics.words`: lower case, punctuation dropped, so "Heav'n." and "heav'n" agree)
and count how many occur anywhere in the training split. An item whose share reaches the threshold
is flagged: a score on it measures recall of training text, not generalisation.

Why this shape: the training split is large and the items are few, so we index the items' n-grams
(a few thousand) and stream the training text once, intersecting each document's n-grams with that
set in C (`set.intersection` over a `zip` of shifted word lists) -- no index of the training split
is ever built. Items shorter than n words are matched whole (an n-gram of their own length).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from londinium.errors import ConfigError
from londinium.eval.text_metrics import words


@dataclass
class Contamination:
    id: str
    kind: str  # "probe" or "reference"
    ngrams: int  # distinct n-grams of the item
    found: int  # of them, how many occur in the training text
    share: float
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(n: int, threshold: float) -> None:
    """The arguments' ranges, for callers that pass them without an EvalConfig (config.py declares
    the same ranges for eval.contamination_ngram and eval.contamination_threshold)."""
    if n < 1:
        raise ConfigError(f"eval.contamination_ngram must be at least 1, got {n}")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"eval.contamination_threshold must be in (0, 1], got {threshold}")


def check_contamination(
    items: Mapping[str, str],
    train_texts: Iterable[str],
    n: int = 8,
    threshold: float = 0.5,
    kind: str = "probe",
) -> list[Contamination]:
    """Share of each item's word n-grams found in `train_texts`, flagged at or above `threshold`.

    `items` maps an id to its text. Returns one `Contamination` per item, in the order given.
    """
    return check_groups({kind: items}, train_texts, n, threshold)


def check_groups(
    groups: Mapping[str, Mapping[str, str]],
    train_texts: Iterable[str],
    n: int = 8,
    threshold: float = 0.5,
) -> list[Contamination]:
    """`check_contamination` for several kinds of items ({kind: {id: text}}) in one pass over the
    training text. Results are in the order given, kind by kind."""
    check_config(n, threshold)
    keys = [(kind, item_id) for kind, items in groups.items() for item_id in items]
    if not keys:
        return []  # nothing to look for: do not read the training text at all
    # n-gram -> the items that contain it, grouped by n-gram length (items shorter than n use their own)
    wanted: dict[int, dict[tuple[str, ...], set[tuple[str, str]]]] = defaultdict(lambda: defaultdict(set))
    totals: dict[tuple[str, str], int] = {}
    for key in keys:
        ws = words(groups[key[0]][key[1]])
        k = min(n, len(ws))
        grams = set(zip(*(ws[i:] for i in range(k)))) if k else set()
        totals[key] = len(grams)
        for g in grams:
            wanted[k][g].add(key)

    wanted_sets = {k: set(v) for k, v in wanted.items()}
    seen: dict[int, set[tuple[str, ...]]] = {k: set() for k in wanted}
    for text in train_texts:
        ws = words(text)
        for k, key_set in wanted_sets.items():
            if len(ws) >= k and len(seen[k]) < len(key_set):
                seen[k] |= key_set.intersection(zip(*(ws[i:] for i in range(k))))

    found: dict[tuple[str, str], int] = dict.fromkeys(keys, 0)
    for k, grams in seen.items():
        for g in grams:
            for key in wanted[k][g]:
                found[key] += 1
    out = []
    for key in keys:
        total = totals[key]
        share = found[key] / total if total else 0.0
        out.append(Contamination(key[1], key[0], total, found[key], share, total > 0 and share >= threshold))
    return out


def summarize(results: list[Contamination]) -> dict[str, Any]:
    """Counts of flagged items per kind, and the mean share."""
    out: dict[str, Any] = {}
    for kind in sorted({r.kind for r in results}):
        rs = [r for r in results if r.kind == kind]
        out[kind] = {
            "items": len(rs),
            "flagged": sum(r.flagged for r in rs),
            "mean_share": sum(r.share for r in rs) / len(rs),
        }
    return out
