"""Cut texts into training documents of at most `max_doc_chars`, at paragraph, then sentence, boundaries.

Paragraphs (blank-line separated: speeches, stanzas, verses of prose) are packed greedily into
documents. A paragraph longer than the limit is cut at the last sentence end that fits, else at
the last line break, else at the last space, else (a single unbroken run) at the limit itself.
Cuts only ever fall between characters of the original text: the words are never changed.
"""

from __future__ import annotations

import re

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
# After ., ! or ? (and any closing quotes or brackets), before whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"'’”)\]]*(?=\s)")


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, without the blank lines; leading indentation is kept."""
    return [p for p in (p.rstrip() for p in _PARAGRAPH_BREAK.split(text)) if p.strip()]


def _cut_point(piece: str, limit: int) -> int:
    """Where to cut `piece` (longer than `limit`) so the first part is at most `limit` chars."""
    window = piece[: limit + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
    if ends and ends[-1] > limit // 4:  # a sentence end that leaves a reasonable first part
        return ends[-1]
    for sep in ("\n", " "):
        i = window.rfind(sep, 0, limit)
        if i > 0:
            return i
    # Only leading indentation before one unbroken run: cut the indentation off first, so a word
    # that fits the limit is not broken because of the spaces in front of it.
    lead = len(piece) - len(piece.lstrip())
    return lead or limit


def split_long(paragraph: str, limit: int) -> list[str]:
    """Pieces of one paragraph, each at most `limit` chars, cut at sentence ends where possible."""
    pieces = []
    rest = paragraph
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head:
            pieces.append(head)
    if rest.strip():
        pieces.append(rest.rstrip())
    return pieces


def pack(paragraphs: list[str], limit: int) -> list[str]:
    """Join paragraphs with blank lines into documents of at most `limit` chars."""
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for para in paragraphs:
        for piece in split_long(para, limit) if len(para) > limit else [para]:
            extra = len(piece) + (2 if current else 0)
            if current and size + extra > limit:
                docs.append("\n\n".join(current))
                current, size = [], 0
                extra = len(piece)
            current.append(piece)
            size += extra
    if current:
        docs.append("\n\n".join(current))
    return docs
