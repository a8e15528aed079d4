"""A generated task: addition with the sum's digits written in reverse (least significant first).

    "Add; write the sum's digits reversed.\n\n357+86"  ->  "344"   (357 + 86 = 443)

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

DIGITS = 3  # operands of 1 to 3 digits: 10^6 problems, of which a split gets its share
_SHARE = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}  # percent of all problems


def split_of(a: int, b: int, seed: int) -> str:
    """The split problem a+b belongs to: a stable hash, 80% train, 10% val, 10% test."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{a}+{b}".encode()).digest()[:4], "big") % 100
    return next(s for s, (lo, hi) in _SHARE.items() if lo <= h < hi)


def reversed_sum(a: int, b: int) -> str:
    return str(a + b)[::-1]


def cut_arith(_corpus: Any, spec: TaskSpec) -> list[TaskItem]:
    """`spec.items` distinct problems of `spec.split` (the corpus is not read)."""
    rng = random.Random(f"{spec.seed}:arith:{spec.split}")
    top = 10 ** DIGITS
    seen: set[tuple[int, int]] = set()
    items: list[TaskItem] = []
    # A split holds at least 10% of 10^6 problems, so this ends long before the draws run out.
    while len(items) < spec.items and len(seen) < top * top // 20:
        a, b = rng.randrange(top), rng.randrange(top)
        if (a, b) in seen or split_of(a, b, spec.seed) != spec.split:
            continue
        seen.add((a, b))
        items.append(TaskItem(id="", task="arith", split=spec.split, prompt=f"{a}+{b}", answer=reversed_sum(a, b),
                              doc_id=f"arith/{a}+{b}", source="arith"))
    return numbered(items)
