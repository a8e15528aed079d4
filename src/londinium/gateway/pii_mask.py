"""Reversible masking: each PII value of a request becomes a placeholder (`<EMAIL_ADDRESS_1>`), the same
value the same placeholder everywhere in the request, and the answer's placeholders become the values
again — in a stream too, where a placeholder can arrive split across chunks.

Why the round trip is exact: a placeholder is `<`, capitals, digits and `_`, then `>`, so it holds no
`<` or `>` inside; a placeholder found in masked text is therefore either one this request put there
or lies wholly inside the original text. Numbers are chosen so that no placeholder put in also occurs
in the request's own text, so unmasking replaces exactly what masking inserted.

Presidio's anonymizer is not used for this: its operators replace a value without the request-wide,
per-type numbering, and its de-anonymizer only reverses encryption. This module is that mapping.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class Masking:
    """One request's mapping between values and placeholders."""

    def __init__(self, texts: Iterable[str] = ()):
        self.taken = {m.group() for t in texts for m in PLACEHOLDER.finditer(t)}  # already in the client's text
        self.by_value: dict[tuple[str, str], str] = {}
        self.values: dict[str, str] = {}  # placeholder -> value
        self.counts: dict[str, int] = {}

    def placeholder(self, entity: str, value: str) -> str:
        found = self.by_value.get((entity, value))
        if found is None:
            n = self.counts.get(entity, 0)
            while True:
                n += 1
                found = f"<{entity}_{n}>"
                if found not in self.taken:
                    break
            self.counts[entity] = n
            self.by_value[(entity, value)] = found
            self.values[found] = value
        return found

    def mask(self, text: str, spans: Iterable[tuple[str, int, int]]) -> str:
        """`text` with each (entity, start, end) span, in text order and not overlapping, replaced."""
        out, at = [], 0
        for entity, start, end in spans:
            out += [text[at:start], self.placeholder(entity, text[start:end])]
            at = end
        out.append(text[at:])
        return "".join(out)

    def unmask(self, text: str) -> str:
        if not self.values or "<" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.values.get(m.group(), m.group()), text)

    def stream(self) -> "StreamUnmasker":
        return StreamUnmasker(self.unmask, list(self.values))


class StreamUnmasker:
    """Unmasks text that arrives in pieces: holds back only a tail that could still become a placeholder
    (from its last `<`, while that is a proper prefix of a known placeholder); `flush` gives what is left."""

    def __init__(self, unmask: Callable[[str], str], placeholders: list[str]):
        self.unmask, self.placeholders = unmask, placeholders
        self.held = ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        cut = text.rfind("<")
        tail = text[cut:] if cut >= 0 else ""
        if tail and any(len(tail) < len(p) and p.startswith(tail) for p in self.placeholders):
            self.held, text = tail, text[:cut]
        else:
            self.held = ""
        return self.unmask(text)

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text  # a prefix that never completed: no placeholder in it
