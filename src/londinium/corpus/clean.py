"""Normalisation that keeps the period language, and code and tables as written.

What changes in prose: Unicode to NFC, line endings to \\n, mojibake repaired ("â€™" -> "’"), control
characters and zero-width marks removed, odd spaces (NBSP, thin space) made plain, runs of spaces
inside a line collapsed, indentation capped, more than two blank lines collapsed to two.

Code and tables (`blocks.parse`: fenced, indented or prompt-led code, pipe and reStructuredText
tables) are verbatim: only their line endings and control characters change, so indentation and
alignment survive byte for byte. A source with `whitespace = "keep"` keeps every space, tab and
blank line of its prose too (letters are still repaired and composed).

What never changes: letters and spelling ("vpon", "haue", "deseruing", long s "ſ", "æ"), case,
accents, curly quotes, ligatures ("ﬁ"), and the line breaks of verse. ftfy is run with every
option that would rewrite characters (quote uncurling, ligature splitting, width folding, HTML
unescaping of plain text) switched off, so it only undoes encoding damage.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

from londinium.corpus.blocks import Block, join, paragraphs, parse

WHITESPACE = ("normalise", "keep")  # a source's `whitespace`: what happens to the spaces of its prose

# ftfy 6 options: repair encoding damage only. Each False is a rewrite of real characters we refuse.
FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,  # "&amp;" in a plain text is what the text says
    fix_latin_ligatures=False,  # "ﬁ", "ﬂ" are part of the printed text
    uncurl_quotes=False,  # ’ and ‘ stay curly
    fix_character_width=False,  # no NFKC-style width folding
    normalization="NFC",  # compose, never compatibility-decompose (NFKC would turn ſ into s)
    explain=False,
)

MAX_INDENT = 4  # spaces of indentation kept: enough to mark verse and speakers, not centred title pages

FTFY_NO_ENCODING_FIX = ftfy.TextFixerConfig(**{**FTFY_CONFIG._asdict(), "fix_encoding": False})

# What undoing the mojibake of Western text can produce: Latin letters (to Latin Extended-B),
# spacing modifiers (ˆ ˜ of Windows-1252), general punctuation (quotes, dashes, ellipsis, bullet),
# currency (€) and letterlike symbols (™).
_WESTERN = re.compile(r"[^\x00-\u024f\u02b0-\u02ff\u2000-\u20cf\u2100-\u214f]")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\u200b\u200c\u200d\u2060\ufeff]")
_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_RUN = re.compile(r"\n{4,}")  # 4 newlines = 3 blank lines


def _indent(match: re.Match) -> str:
    width = len(match.group(0).expandtabs(4))
    return " " * min(width, MAX_INDENT)


_LEADING = re.compile(r"^[ \t]+", re.MULTILINE)
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)


def _fix_encoding(text: str) -> str:
    """ftfy's repair, refused when it would bring in a script the text did not have: period
    spelling such as "æœœ" reads to ftfy like the UTF-8 of "朜" decoded as Windows-1252, and the
    mojibake of Western text only ever decodes to Western characters."""
    fixed = ftfy.fix_text(text, FTFY_CONFIG)
    if fixed != text and set(_WESTERN.findall(fixed)) - set(text):
        return ftfy.fix_text(text, FTFY_NO_ENCODING_FIX)
    return fixed


def normalise(text: str, whitespace: str = "normalise") -> str:
    """Normalise one text (see the module docstring). Idempotent: normalise(normalise(x)) == normalise(x)."""
    return join(normalise_blocks(text, whitespace))


def normalise_blocks(text: str, whitespace: str = "normalise") -> list[Block]:
    """The normalised text as blocks (`blocks.parse`), the form the corpus stage works on."""
    plain = _control(text)
    found = parse(plain)
    if whitespace == "normalise" and not any(b.verbatim for b in found):
        return paragraphs(_repeat(_normalise_once, text))  # prose only: the whole text at once, as always
    out: list[Block] = []
    run: list[Block] = []  # consecutive prose blocks, normalised together

    def flush() -> None:
        if not run:
            return
        if whitespace == "keep":
            out.extend(Block(_repeat(_characters, b.text), b.kind, b.gap) for b in run)
        else:
            prose = paragraphs(_repeat(_normalise_once, join([Block(b.text, b.kind, b.gap if k else "") for k, b in enumerate(run)])))
            out.extend([Block(prose[0].text, prose[0].kind, run[0].gap), *prose[1:]] if prose else [])
        run.clear()

    for b in found:
        if b.verbatim:
            flush()
            out.append(b)
        else:
            run.append(b)
    flush()
    if whitespace == "keep":
        return [Block(b.text, b.kind, b.gap if k else "") for k, b in enumerate(out)]
    # between blocks, at most two blank lines, as inside prose; the text starts with its first block
    return [Block(b.text, b.kind, "\n" * min(b.gap.count("\n"), 3) if k else "") for k, b in enumerate(out)]


def _repeat(once, text: str) -> str:
    """`once` until nothing changes. One pass is not always a fixed point on damaged text (removing
    an NBSP or a control character can join two halves of a mojibake sequence); clean text takes two,
    the second a check (about a second on the whole default corpus)."""
    for _ in range(8):
        again = once(text)
        if again == text:
            break
        text = again
    return text


def _control(text: str) -> str:
    """Line and page breaks to \\n, control characters and zero-width marks removed: done to every block."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n\n")
    if not text.isascii():
        text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    return _CONTROL.sub("", text)


def _characters(text: str) -> str:
    """The repairs that leave whitespace alone: mojibake and NFC."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", _fix_encoding(text))


def _normalise_once(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n\n")
    if not text.isascii():
        # Pure-ASCII text cannot hold mojibake or non-NFC sequences; skipping ftfy there is the
        # difference between seconds and a minute on the default corpus.
        text = _fix_encoding(text)
        text = unicodedata.normalize("NFC", text)
        text = _ODD_SPACE.sub(" ", text)
        text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("", text)
    text = _INNER_SPACES.sub(" ", text)
    text = _LEADING.sub(_indent, text)
    text = _BLANK_RUN.sub("\n\n\n", text)
    return text.strip("\n").rstrip()
