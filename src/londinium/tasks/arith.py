"""A generated task: addition with the sum's digits written in reverse (least significant first).

    "Add; write the sum's digits reversed.\n\n357+86"  ->  "344"   (357 + 86 = 443)

Numbers have up to `tasks.arith_digits` digits (3: a million problems; 2: ten thousand, learnt
sooner by a small model).

Reversed output is the format small transformers learn from scratch (Lee et al., "Teaching
Arithmetic to Small Transformers", ICLR 2024): each digit of the answer depends only on the digits
already written and the two operands' digits at the same place, so it is written left to right with
its carry. The task needs no corpus, its answer is checked exactly, and a model's gain on it is
not mixed up with how hard the corpus's tasks are: the test bed for reinforcement learning
(`londinium rl`, docs/rl.md).

Which split a problem belongs to is a function of the problem itself (a hash of the set's seed and
"a+b"), so train, val and test never share a problem, whatever the item counts; each split's items
are then drawn by a generator seeded with (seed, split), so the same spec gives the same items.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from londinium.tasks.cut import TaskSpec, numbered
from londinium.tasks.items import TaskItem

_SHARE = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}  # percent of all problems


def split_of(a: int, b: int, seed: int) -> str:
    """The split problem a+b belongs to: a stable hash, 80% train, 10% val, 10% test."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{a}+{b}".encode()).digest()[:4], "big") % 100
    return next(s for s, (lo, hi) in _SHARE.items() if lo <= h < hi)


def reversed_sum(a: int, b: int) -> str:
    return str(a + b)[::-1]


def cut_arith(_corpus: Any, spec: TaskSpec) -> list[TaskItem]:
    """`spec.items` distinct problems of `spec.split` with numbers of up to `spec.digits` digits (the
    corpus is not read); fewer when the split has fewer."""
    rng = random.Random(f"{spec.seed}:arith:{spec.split}")
    top = 10 ** spec.digits
    if spec.items * 20 >= top * top:  # a good share of all problems: list the split's, in a seeded order
        pairs = [(a, b) for a in range(top) for b in range(top) if split_of(a, b, spec.seed) == spec.split]
        rng.shuffle(pairs)
        pairs = pairs[:spec.items]
    else:  # a small share: draw, keeping the split's (at most 5% of the space: this ends quickly)
        pairs, seen = [], set()
        while len(pairs) < spec.items:
            a, b = rng.randrange(top), rng.randrange(top)
            if (a, b) not in seen and split_of(a, b, spec.seed) == spec.split:
                seen.add((a, b))
                pairs.append((a, b))
    return numbered([TaskItem(id="", task="arith", split=spec.split, prompt=f"{a}+{b}", answer=reversed_sum(a, b),
                              doc_id=f"arith/{a}+{b}", source="arith") for a, b in pairs])
