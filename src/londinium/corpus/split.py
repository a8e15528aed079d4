"""Train/val/test by document group, stratified by source, deterministic for the seed.

A group (a text and its near-duplicates, e.g. a play's modern and Folio texts) goes to exactly one
split, so nothing in validation or test has a near-copy in train. Each source's groups are shuffled
with a generator seeded by (seed, source) and cut by the source's own fractions, so every source is
represented in every held-out split in proportion, and adding a source does not reshuffle the
others. A source with three or more groups gets at least one validation and one test group even
when its fractions round to zero (Milton has few, long texts).
"""

from __future__ import annotations

import random

SPLIT_NAMES = ("train", "val", "test")


def held_out_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of `n` groups go to val and test."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n >= 3:
        if val_fraction > 0:
            n_val = max(1, n_val)
        if test_fraction > 0:
            n_test = max(1, n_test)
    while n_val + n_test >= n and (n_val or n_test):  # train keeps at least one group
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def assign_splits(
    groups_by_source: dict[str, list[str]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Map each group id to "train", "val" or "test". `groups_by_source`: source id -> its group ids."""
    out: dict[str, str] = {}
    for source in sorted(groups_by_source):
        groups = sorted(set(groups_by_source[source]))
        random.Random(f"{seed}/{source}").shuffle(groups)
        n_val, n_test = held_out_counts(len(groups), val_fraction, test_fraction)
        for i, group in enumerate(groups):
            out[group] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out
