"""Documents cut into passages with character offsets: the unit the vector index embeds and `ask` cites.

    passage_spans(text, 600)  ->  [(start, end), ...]   text[start:end] is a passage, never cut mid-word

Paragraphs (blank-line separated) are packed greedily up to the limit; a longer paragraph is cut at
the last line break, else sentence end, else space before the limit. Offsets are into the document
text as the corpus holds it, so a citation's span can be checked against the document itself.
"""

from __future__ import annotations

import re

_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\s*\n\s*\n|\s*$)", re.S)
_SENTENCE_END = re.compile(r"[.!?;:][\"'’”)\]]*(?=\s)")


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each blank-line separated paragraph, surrounding whitespace left out."""
    return [(m.start(), m.end()) for m in _PARAGRAPH.finditer(text)]


def _cut(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """A paragraph longer than `limit` cut into pieces of at most `limit` characters."""
    pieces = []
    while end - start > limit:
        window = text[start:start + limit + 1]
        cut = window.rfind("\n", 0, limit)
        if cut < limit // 4:
            ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
            cut = ends[-1] if ends and ends[-1] > limit // 4 else window.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit  # one unbroken run of characters
        piece_end = start + cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        pieces.append((start, piece_end))
        start += cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        pieces.append((start, end))
    return pieces


def passage_spans(text: str, limit: int) -> list[tuple[int, int]]:
    """(start, end) of the passages of `text`, in order; together they cover every non-blank character."""
    spans: list[tuple[int, int]] = []
    for start, end in _paragraphs(text):
        for s, e in _cut(text, start, end, limit):
            if spans and e - spans[-1][0] <= limit:  # packs with the previous passage
                spans[-1] = (spans[-1][0], e)
            else:
                spans.append((s, e))
    return spans
