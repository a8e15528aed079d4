"""Means with their standard errors, for scores over items that share documents.

Items cut from one document are not independent (a model that reads a passage well gets its items
right together), so the standard error is clustered by document: the spread of the per-document
sums of deviations, not of the items (with one item per document it is the usual sd / sqrt(n)).
A paired difference -- two models on the same items -- is the mean of the per-item differences with
the same clustered error: what two models agree on cancels, so far smaller differences are
readable than from two separate errors.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Hashable, Sequence


def mean_se(values: Sequence[float], clusters: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """(mean, standard error of the mean), clustered by `clusters` (one label per value; None: each
    value its own). The error has the small-sample factor G / (G - 1) for G clusters; nan for G < 2."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    sums: dict[Hashable, float] = defaultdict(float)
    for k, v in enumerate(values):
        sums[clusters[k] if clusters is not None else k] += v - mean
    g = len(sums)
    if g < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum(s * s for s in sums.values()) * g / (g - 1)) / n


def paired_difference(a: dict[str, float], b: dict[str, float], clusters: dict[str, Hashable]) -> tuple[float, float, int]:
    """(mean of b - a over the items both scored, its clustered standard error, items)."""
    ids = [i for i in a if i in b]
    mean, se = mean_se([b[i] - a[i] for i in ids], [clusters.get(i, i) for i in ids])
    return mean, se, len(ids)
