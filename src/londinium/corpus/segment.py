"""Cut texts into training documents of at most `max_doc_chars`, at paragraph, then sentence, boundaries.

Blocks (`blocks.parse`: paragraphs of prose (speeches, stanzas, verses of prose), code, tables) are
packed greedily into documents, one blank line between two blocks (or, for a source whose whitespace
is kept, the blank lines that were there). A prose paragraph longer than the limit is cut at the
last sentence end that fits, else at the last line break, else at the last space, else (a single
unbroken run) at the limit itself. Code and tables are cut only between lines, and a fenced block
cut in two is closed and reopened with its fence, so each piece is still a fenced block.
Cuts only ever fall between characters of the original text: the words are never changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from londinium.corpus.blocks import Block, parse

# After ., ! or ? (and any closing quotes or brackets), before whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"'’”)\]]*(?=\s)")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})[^\n]*")


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs (code blocks whole), without the blank lines; leading indentation is kept."""
    return [b.text.rstrip() for b in parse(text)]


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


def split_lines(block: str, limit: int) -> list[str]:
    """Pieces of a code block or table, each at most `limit` chars, cut between lines (a line longer
    than the limit is cut at it). A fenced block's pieces are each fenced, when the fences fit."""
    lines = block.split("\n")
    opening, closing = "", ""
    if len(lines) >= 2 and _FENCE.fullmatch(lines[0]) and _FENCE.fullmatch(lines[-1]):
        if len(lines[0]) + len(lines[-1]) + 2 < limit:
            opening, closing = lines[0] + "\n", "\n" + lines[-1]
            lines = lines[1:-1]
    room = limit - len(opening) - len(closing)
    pieces: list[list[str]] = [[]]
    size = 0
    for line in lines:
        while len(line) > room:  # one line longer than the room: cut it
            if pieces[-1]:
                pieces.append([])
            pieces[-1].append(line[:room])
            pieces.append([])
            size, line = 0, line[room:]
        extra = len(line) + (1 if pieces[-1] else 0)
        if pieces[-1] and size + extra > room:
            pieces.append([])
            size, extra = 0, len(line)
        pieces[-1].append(line)
        size += extra
    return [opening + "\n".join(p) + closing for p in pieces if p]


def pack(paragraphs: Sequence[str | Block], limit: int, keep_gaps: bool = False) -> list[str]:
    """Join paragraphs (text or blocks) into documents of at most `limit` chars: one blank line
    between two, or with `keep_gaps` a block's own gap (the blank lines it had before it)."""
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for para in paragraphs:
        block = para if isinstance(para, Block) else Block(para)
        text = block.text
        if len(text) <= limit:
            pieces = [text]
        else:
            pieces = split_lines(text, limit) if block.verbatim else split_long(text, limit)
        for k, piece in enumerate(pieces):
            gap = block.gap if keep_gaps and k == 0 and block.gap.startswith("\n") else "\n\n"
            extra = len(piece) + (len(gap) if current else 0)
            if current and size + extra > limit:
                docs.append("".join(current))
                current, size = [], 0
            if current:
                current.append(gap)
            else:
                extra = len(piece)
            current.append(piece)
            size += extra
    if current:
        docs.append("".join(current))
    return docs
