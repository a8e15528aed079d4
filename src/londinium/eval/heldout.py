"""Which held-out documents the evaluation reads, and the prompts and references cut from them.

Everything here is taken from the corpus's validation/test split at evaluation time, never
hard-coded, so it is truly held out from training (and the contamination check verifies that no
reference was also seen in the training split). Selection is deterministic and spread over the
sources and works: documents are taken round-robin by source and, within a source, by work, in file
order, so a cap of 64 documents reads every source and many works instead of 64 consecutive chunks
of whichever work the file lists first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence


def interleave(queues: Iterable[Sequence[Any]]) -> list[Any]:
    """The first item of each queue, then the second of each, and so on."""
    queues = [q for q in queues if q]
    return [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues if i < len(q)]


def _grouped(docs: Iterable[dict], key: str) -> OrderedDict[str, list[dict]]:
    out: OrderedDict[str, list[dict]] = OrderedDict()
    for d in docs:
        out.setdefault(str(d.get(key) or "unknown"), []).append(d)
    return out


def _spread(docs: Iterable[dict], skip_first_chunk: bool) -> list[dict]:
    per_source = []
    for source_docs in _grouped(docs, "source").values():
        works = list(_grouped(source_docs, "group").values())
        if skip_first_chunk:
            works = [g[1:] if len(g) > 1 else g for g in works]
        per_source.append(interleave(works))
    return interleave(per_source)


def round_robin_by_source(docs: Iterable[dict], limit: int = 0) -> list[dict]:
    """Documents round-robin by source (first-seen order) and, within a source, by work (`group`),
    so a sample reads every source and many works; at most `limit` (0: all)."""
    out = _spread(docs, skip_first_chunk=False)
    return out[:limit] if limit else out


def prompt_documents(docs: Iterable[dict]) -> list[dict]:
    """Documents to cut prompts from, in `round_robin_by_source` order, so eight prompts come from
    eight works rather than eight chunks of one. The first chunk of a work that has several is left
    out: that is where title pages, contents and lists of characters are, which make poor prompts."""
    return _spread(docs, skip_first_chunk=True)


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
    """Up to `n` prompt/reference pairs from `docs` (in `prompt_documents` order), skipping short ones."""
    out: list[HeldOut] = []
    for d in prompt_documents(docs):
        pair = cut_prompt(d.get("text", ""), prompt_chars, reference_words)
        if pair is None:
            continue
        out.append(HeldOut(str(d.get("id", len(out))), str(d.get("source") or "unknown"), *pair))
        if len(out) >= n:
            break
    return out
