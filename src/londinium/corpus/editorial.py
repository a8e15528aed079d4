"""Editorial front and back matter of an edition: what a later editor added, not the author's text.

Gutenberg-style editions of old works carry their editor's title page, introduction, contents,
footnotes, notes, index and glossary, and the e-text's own transcriber's and producer's notes. Under
the work's period label they are a later century's prose: in the default corpus, William Bell's 1891
introduction, notes and index fill four fifths of Milton's *Comus*. `split(blocks)` takes them out,
each section with what it is, and the build records every one as a rejection (level `section`,
reason `editorial`). It runs on `gutenberg` texts only.

The rules, on a text's paragraphs:

- a **heading** is a short paragraph (at most 4 lines and 200 characters) with no lower-case letter
  once italics (`_..._`), footnote marks (`{12:A}`) and brackets are set aside, and with a word of two
  capitals or a roman numeral: "COMUS.", "THE PERSONS.", "IX";
- an **editorial heading** is a one-line paragraph naming the editor's apparatus: introduction,
  contents, notes, footnotes, index, glossary, bibliography, errata, a preface *by* someone or an
  editor's preface. Its section runs to the next heading that is not editorial; an index or glossary
  in the second half of the text runs to the end (its letter headings, "A.", would stop it); a
  table of contents stops too where the text repeats its first entry (a heading in small letters);
  and a part that the contents list (INTRODUCTION) runs over its own sub-headings to the next
  heading that the contents list (COMUS);
- a paragraph that **opens with "Note:" or "Notes:"** is one note by itself (variant readings after
  a poem);
- a **transcriber's or producer's note** ("Produced by ...", "Transcriber's note: ...",
  "[All rights reserved]") is one paragraph;
- the edition's **title page**: the few short paragraphs before an editorial heading that opens the
  text, when they name an editor ("with introduction and notes by", "edited by").

An author's own preface ("PREFACE" alone), an appendix and a dedication are kept: old books have
their own, and nothing in them says a later hand wrote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from londinium.corpus.blocks import Block

_SET_ASIDE = re.compile(r"_[^_\n]*_|\{[^}\n]*\}|\[[^\]\n]*\]")
_ROMAN = re.compile(r"[IVXLC]+\.?")
_TWO_CAPITALS = re.compile(r"[A-Z]{2}")

_WHAT = (  # (what it is, the heading's words): the first match names the section
    ("index", r"(?:general\s+)?index(?:es)?(?:\s+(?:to|of)\b.*)?"),
    ("glossary", r"glossary(?:\s+.*)?|glossarial\s+index"),
    ("introduction", r"(?:editor'?s\s+)?introduction(?:\s+(?:by|to)\b.*)?|introductory\s+(?:note|essay|remarks)s?(?:\s+by\b.*)?"),
    ("preface", r"(?:editor'?s|translator'?s)\s+preface(?:\s+.*)?|preface\s+(?:by|to\s+the\s+(?:present\s+)?edition)\b.*|prefatory\s+note"),
    ("contents", r"(?:table\s+of\s+)?contents"),
    ("notes", r"(?:critical\s+|explanatory\s+|textual\s+|additional\s+|editor'?s\s+)?notes?(?:\s+(?:by|on|to)\b.*)?"
              r"|foot-?notes|end-?notes"),
    ("bibliography", r"bibliography"),
    ("errata", r"errata|corrigenda"),
    ("list of illustrations", r"list\s+of\s+(?:illustrations|plates)"),
    ("transcriber's notes", r"transcriber'?s\s+notes?"),
)
_APPARATUS = [(what, re.compile(rf"(?:{words})[\s.:,]*", re.IGNORECASE)) for what, words in _WHAT]
_NOTE_PARAGRAPH = re.compile(r"\s*notes?\s*[:.]", re.IGNORECASE)
# Paragraphs added by transcribers, producers or publishers of the e-text or the edition.
_PRODUCER_NOTE = re.compile(
    r"\s*[\[(_]*\s*(transcriber'?s'? notes?\b|produced by\b|e-?text prepared by\b|this e-?(text|book) (was|is)\b"
    r"|prepared by\b.*\b(gutenberg|etext|e-text)|all rights reserved)",
    re.IGNORECASE,
)
_EDITOR = re.compile(r"\bwith\s+(?:an\s+)?(?:introduction|notes)|\bedited\b|\beditor\b|\bannotated\b|\b(?:notes|introduction)\s+by\b",
                     re.IGNORECASE)
TITLE_PAGE_PARAGRAPHS = 15
TITLE_PAGE_CHARS = 1500


@dataclass
class Section:
    """Editorial paragraphs taken out of a text: what they are and where they started."""

    what: str  # "introduction", "notes", "index", "title page", ...
    heading: str  # the heading line (or the paragraph's first line) that marked them
    blocks: list[Block] = field(default_factory=list)
    to_end: bool = False  # it started in the second half of the text (an index there runs to the end)

    @property
    def chars(self) -> int:
        return sum(len(b.text) for b in self.blocks)


def is_heading(text: str) -> bool:
    """A short paragraph in capitals (or a roman numeral) once italics and marks are set aside."""
    if text.count("\n") > 3 or len(text) > 200:
        return False
    bare = _SET_ASIDE.sub("", text).strip()
    if not bare or any(c.islower() for c in bare) or not any(c.isalpha() for c in bare):
        return False
    return bool(_TWO_CAPITALS.search(bare) or _ROMAN.fullmatch(bare))


def apparatus(text: str) -> str | None:
    """What editorial heading a one-line paragraph is ("notes", "index", ...), or None."""
    if "\n" in text or len(text) > 100:
        return None
    line = _SET_ASIDE.sub(lambda m: m.group()[1:-1] if m.group()[0] == "_" else "", text).strip(" *_")
    return next((what for what, pattern in _APPARATUS if pattern.fullmatch(line)), None)


def _first_line(text: str) -> str:
    return " ".join(text.split("\n", 1)[0].split())


def _entry(line: str) -> str:
    """A contents entry or heading as lower-case words, without page numbers: "INTRODUCTION, vii" ->
    "introduction"."""
    words = re.sub(r"[^a-z ]", " ", _SET_ASIDE.sub("", line).lower()).split()
    while words and re.fullmatch(r"[ivxlc]+", words[-1]):
        words.pop()
    return " ".join(words)


def _first_entry(section: Section) -> str:
    for b in section.blocks[1:]:
        for line in b.text.split("\n"):
            entry = _entry(line)
            if entry and entry != "page":
                return entry
    return ""


def _parts(contents: Section) -> set[str]:
    """The entries of a table of contents, as `_entry` words."""
    return {_entry(line) for b in contents.blocks[1:] for line in b.text.split("\n")} - {"", "page"}


def _matches(key: str, entries: set[str]) -> bool:
    return any(key == e or key.startswith(e + " ") or e.startswith(key + " ") for e in entries if e)


def split(blocks: list[Block]) -> tuple[list[Block], list[Section]]:
    """(the author's blocks, the editorial sections taken out), in text order (see the module docstring)."""
    sections: list[Section] = []
    kept: list[Block] = []
    total = sum(len(b.text) for b in blocks)
    seen = 0  # characters before block i
    parts: set[str] = set()  # the entries of the edition's table of contents: its top-level parts
    open_section: Section | None = None

    def goes_on(section: Section, b: Block) -> bool:
        """Whether block b still belongs to the open editorial section."""
        if _PRODUCER_NOTE.match(b.text):
            return False
        if section.what in ("index", "glossary") and section.to_end:
            return True
        if section.what == "contents" and len(section.blocks) > 1 and _entry(_first_line(b.text)) == _first_entry(section):
            return False  # the text repeats the first entry: the contents are over
        if not is_heading(b.text):
            return True
        # a heading: the end, unless this section is a part the contents list (an introduction)
        # and the heading is not (a sub-heading of that introduction)
        return _matches(_entry(section.heading), parts) and not _matches(_entry(_first_line(b.text)), parts)

    for b in blocks:
        what = apparatus(b.text) if not b.verbatim else None
        if what is not None:
            if open_section is not None and open_section.what == "contents":
                parts = _parts(open_section)
            open_section = Section(what, _first_line(b.text), [b], to_end=seen >= total / 2)
            sections.append(open_section)
        elif open_section is not None and goes_on(open_section, b):
            open_section.blocks.append(b)
        elif not b.verbatim and _PRODUCER_NOTE.match(b.text):
            open_section = None
            sections.append(Section("transcriber's or producer's note", _first_line(b.text), [b]))
        elif not b.verbatim and _NOTE_PARAGRAPH.match(b.text):
            open_section = None
            sections.append(Section("note", _first_line(b.text), [b]))
        else:
            if open_section is not None and open_section.what == "contents":
                parts = _parts(open_section)
            open_section = None
            kept.append(b)
        seen += len(b.text)
    title_page = _title_page(blocks, sections)
    if title_page is not None:
        kept = kept[len(title_page.blocks):]
        sections.insert(0, title_page)
    if kept and sections:  # the text starts with its first block, whatever was before it
        kept[0] = Block(kept[0].text, kept[0].kind, "")
    return kept, sections


def _title_page(blocks: list[Block], sections: list[Section]) -> Section | None:
    """The kept paragraphs before an editorial heading near the start, if they name an editor."""
    first = next((s for s in sections if s.what not in ("note", "transcriber's or producer's note")), None)
    if first is None:
        return None
    start = next(i for i, b in enumerate(blocks) if b is first.blocks[0])
    before = [b for b in blocks[:start] if not any(b is x for s in sections for x in s.blocks)]
    if not before or len(before) > TITLE_PAGE_PARAGRAPHS or sum(len(b.text) for b in before) > TITLE_PAGE_CHARS:
        return None
    if not any(_EDITOR.search(b.text) for b in before):
        return None
    return Section("title page", _first_line(before[0].text), before)
