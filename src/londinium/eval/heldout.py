"""Which held-out documents the evaluation reads, and the prompts and references cut from them.

Everything here is taken from the corpus's validation/test split at evaluation time, never
hard-coded, so it is truly held out from training (and the contamination check verifies that no
reference was also seen in the training split). Selection is deterministic and spread over the
sources: documents are taken round-robin by source, in file order, so a cap of 200 documents reads
some of every source instead of 200 documents of whichever source the file lists first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence


def round_robin_by_source(docs: Iterable[dict], limit: int = 0) -> list[dict]:
    """Documents in round-robin order of their sources (first-seen order); at most `limit` (0: all)."""
    queues: OrderedDict[str, list[dict]] = OrderedDict()
    for d in docs:
        queues.setdefault(str(d.get("source") or "unknown"), []).append(d)
    out: list[dict] = []
    depth = 0
    while any(depth < len(q) for q in queues.values()):
        for q in queues.values():
            if depth < len(q):
                out.append(q[depth])
                if limit and len(out) >= limit:
                    return out
        depth += 1
    return out


@dataclass(frozen=True)
class HeldOut:
    """A prompt cut from the start of a held-out document and the words that follow it there."""

    id: str
    source: str
    prompt: str
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cut_prompt(text: str, prompt_chars: int, reference_words: int) -> tuple[str, str] | None:
    """(prompt, reference): the text up to a word boundary near `prompt_chars`, then the next
    `reference_words` words joined by single spaces. None when the text is too short."""
    if len(text) <= prompt_chars:
        return None
    cut = prompt_chars
    while cut > 0 and not text[cut].isspace():  # do not cut inside a word
        cut -= 1
    prompt = text[:cut].rstrip()
    rest = text[cut:].split()
    if not prompt.strip() or len(rest) < reference_words:
        return None
    return prompt, " ".join(rest[:reference_words])


def held_out_prompts(docs: Sequence[dict], n: int, prompt_chars: int, reference_words: int) -> list[HeldOut]:
    """Up to `n` prompt/reference pairs from `docs`, round-robin by source, skipping short documents."""
    out: list[HeldOut] = []
    for d in round_robin_by_source(docs):
        pair = cut_prompt(d.get("text", ""), prompt_chars, reference_words)
        if pair is None:
            continue
        out.append(HeldOut(str(d.get("id", len(out))), str(d.get("source") or "unknown"), *pair))
        if len(out) >= n:
            break
    return out
