"""Train/val/test by document group, stratified by source, deterministic for the seed.

A group (a text and its near-duplicates, e.g. a play's modern and Folio texts) goes to exactly one
split, so nothing in validation or test has a near-copy in train. Each source is split on its own:
its groups are shuffled with a generator seeded by (seed, source), and validation then test take
groups in that order while they fit the source's share of *characters* (val_fraction and
test_fraction of its text), so every source is represented in every held-out split in proportion
to its size, and adding a source does not reshuffle the others.

Counting characters, not groups, matters for sources of a few long texts: Milton's 1.2 M
characters are four groups from 90 K to 590 K characters, and a count of groups would hold out a
quarter of the source per split whichever groups came first. When no group fits the share, a
source with three or more groups still gives its smallest remaining group, so every held-out split
sees every source; train always keeps at least one group.
"""

from __future__ import annotations

import random

SPLIT_NAMES = ("train", "val", "test")


def assign_splits(
    groups_by_source: dict[str, list[str]], val_fraction: float, test_fraction: float, seed: int,
    size_of: dict[str, int] | None = None,
) -> dict[str, str]:
    """Map each group id to "train", "val" or "test".

    `groups_by_source`: source id -> its group ids; `size_of`: group id -> its characters (default:
    every group counts 1, i.e. the fractions are of groups)."""
    out: dict[str, str] = {}
    for source in sorted(groups_by_source):
        groups = sorted(set(groups_by_source[source]))
        random.Random(f"{seed}/{source}").shuffle(groups)
        size = {g: size_of.get(g, 1) if size_of else 1 for g in groups}
        total = sum(size.values())
        left = list(groups)  # unassigned, in shuffled order
        for split, fraction in (("val", val_fraction), ("test", test_fraction)):
            if fraction <= 0:
                continue
            target, taken = fraction * total, 0
            for g in list(left):
                if len(left) == 1:
                    break  # train keeps at least one group
                if taken + size[g] <= target:
                    out[g] = split
                    taken += size[g]
                    left.remove(g)
            if taken == 0 and len(groups) >= 3 and len(left) > 1:
                smallest = min(left, key=lambda g: size[g])  # first of equals in shuffled order
                out[smallest] = split
                left.remove(smallest)
        for g in left:
            out[g] = "train"
    return out
