"""Normalisation that keeps the period language.

What changes: Unicode to NFC, line endings to \\n, mojibake repaired ("â€™" -> "’"), control
characters and zero-width marks removed, odd spaces (NBSP, thin space) made plain, runs of spaces
inside a line collapsed, indentation capped, more than two blank lines collapsed to two.

What never changes: letters and spelling ("vpon", "haue", "deseruing", long s "ſ", "æ"), case,
accents, curly quotes, ligatures ("ﬁ"), and the line breaks of verse. ftfy is run with every
option that would rewrite characters (quote uncurling, ligature splitting, width folding, HTML
unescaping of plain text) switched off, so it only undoes encoding damage.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

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

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\u200b\u200c\u200d\u2060\ufeff]")
_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_RUN = re.compile(r"\n{4,}")  # 4 newlines = 3 blank lines


def _indent(match: re.Match) -> str:
    width = len(match.group(0).expandtabs(4))
    return " " * min(width, MAX_INDENT)


_LEADING = re.compile(r"^[ \t]+", re.MULTILINE)
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)


def normalise(text: str) -> str:
    """Normalise one text (see the module docstring). Idempotent: normalise(normalise(x)) == normalise(x)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n\n")
    if not text.isascii():
        # Pure-ASCII text cannot hold mojibake or non-NFC sequences; skipping ftfy there is the
        # difference between seconds and a minute on the default corpus.
        text = ftfy.fix_text(text, FTFY_CONFIG)
        text = unicodedata.normalize("NFC", text)
        text = _ODD_SPACE.sub(" ", text)
        text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("", text)
    text = _INNER_SPACES.sub(" ", text)
    text = _LEADING.sub(_indent, text)
    text = _BLANK_RUN.sub("\n\n\n", text)
    return text.strip("\n").rstrip()
