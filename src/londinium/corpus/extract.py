"""Raw file bytes -> plain texts, one function per format.

`extract(raw, spec)` returns the texts in one file: one for a book (text, Gutenberg, HTML, TEI,
PDF), several for a file of rows (JSONL, Parquet, Arrow: see `corpus/rows.py`), one a row or a
group of rows (e.g. KJV verses joined into chapters).
A file that cannot be used raises `ExtractError` with the reason; the build records it and goes on.

Decoding policy (files are untrusted and old): UTF-8 (with or without a BOM) is the norm, UTF-16
is accepted when a byte-order mark announces it. Bytes
that are not UTF-8 are decoded as Windows-1252 (a superset of Latin-1) only when the result is
*clearly* legacy 8-bit prose: every byte is defined in cp1252, fewer than 5% of the characters are
non-ASCII, and each of them is a letter or common typographic punctuation (é, æ, ’, —, £, ...).
Anything else is rejected ("not UTF-8 ... re-save the file as UTF-8") rather than silently turned
into mojibake: guessing latin-1 for every failure would "succeed" on any byte string.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable

from londinium.corpus.archive import sniff
from londinium.corpus.rows import TABLE_FORMATS, Row, RowsError, join_rows, jsonl_rows, table_rows
from londinium.corpus.html_text import html_to_text  # noqa: F401 (the html format; tests import it from here)
from londinium.corpus.sources import RawFile, SourceSpec
from londinium.errors import LondiniumError
from londinium.files import loads_json


class ExtractError(LondiniumError):
    """One file cannot be turned into text; the message is the reason recorded for it."""


@dataclass
class ExtractedText:
    """One text out of a file: a book, or one group of JSONL rows."""

    title: str
    text: str
    encoding: str = "utf-8"


# ---- decoding -------------------------------------------------------------------------------------

_LEGACY_PUNCT = set("‘’“”–—…£§°«»¶·×¢¥©®±´¨¸¹²³¼½¾¡¿ªº†‡•‰‹›€")


def looks_binary(data: bytes) -> bool:
    """NUL bytes, or many C0 control bytes, in the first 8 KiB: an image, archive or executable."""
    head = data[:8192]
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return bool(head) and controls / len(head) > 0.05


def decode_text(data: bytes, name: str) -> tuple[str, str]:
    """Decode file bytes to str under the policy in the module docstring. Returns (text, encoding)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 announced by its byte-order mark
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as e:
            raise ExtractError(f"{name}: starts with a UTF-16 byte-order mark but is not valid UTF-16 ({e.reason})") from None
    if looks_binary(data):
        raise ExtractError(f"{name}: binary content (NUL or control bytes), not text; leave it out with `exclude`")
    try:
        text = data.decode("utf-8-sig")
        return text, "utf-8"
    except UnicodeDecodeError as e:
        utf8_error = e
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        high = [c for c in text if ord(c) > 127]
        if len(high) < 0.05 * len(text) and all(unicodedata.category(c).startswith("L") or c in _LEGACY_PUNCT for c in high):
            return text, "cp1252"
    raise ExtractError(
        f"{name}: not UTF-8 (invalid byte at offset {utf8_error.start}) and not clearly Latin-1/Windows-1252 "
        "text; re-save the file as UTF-8"
    )


# ---- Project Gutenberg --------------------------------------------------------------------------

# Lines after which the text proper begins (the last one in the first half of the file wins).
_GUT_START = re.compile(
    r"^\W*(\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG"
    r"|\*?END\*?\s*THE SMALL PRINT"
    r"|\*{3}\s*START OF THE PROJECT)",
    re.IGNORECASE,
)
# Lines before which the text proper ends (the first one in the second half wins).
_GUT_END = re.compile(
    r"^\W*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG"
    r"|END OF (THE |THIS )?PROJECT GUTENBERG"
    r"|\*{3}\s*END OF THE PROJECT"
    r"|\*?\s*START\*?\*?THE SMALL PRINT)",
    re.IGNORECASE,
)
# The World Library notice repeated between scenes of the 1990s Gutenberg Shakespeare.
_WORLD_LIBRARY = re.compile(r"<<\s*THIS ELECTRONIC VERSION.*?>>", re.IGNORECASE | re.DOTALL)


def has_gutenberg_markers(text: str) -> bool:
    return any(_GUT_START.match(line) or _GUT_END.match(line) for line in text.splitlines())


def strip_gutenberg(text: str) -> str:
    """Remove Project Gutenberg headers, footers and small print (the licence around the text).

    Texts without markers (as in the `shakespeare` package, whose files were trimmed) keep their
    whole body. Transcriber's and producer's notes inside it are left for `editorial.split`, which
    takes them out with the edition's introduction and notes and records each one.
    """
    text = _WORLD_LIBRARY.sub("", text)
    lines = text.split("\n")
    half = len(lines) // 2
    start, end = 0, len(lines)
    for i, line in enumerate(lines[: half + 1]):
        if _GUT_START.match(line):
            start = i + 1
    for i in range(half, len(lines)):
        if _GUT_END.match(lines[i]):
            end = i
            break
    return "\n".join(lines[start:end])


# ---- TEI XML -------------------------------------------------------------------------------------

_TEI_SKIP = {"note", "fw", "teiHeader", "figDesc", "corr", "reg", "expan", "del"}
_TEI_PARAGRAPH = {"p", "lg", "div", "div1", "div2", "div3", "sp", "head", "stage", "castList", "argument", "epigraph", "closer", "opener", "trailer", "quote"}
_TEI_LINE = {"l", "speaker", "item", "castItem", "salute", "signed", "dateline", "byline"}


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def tei_to_text(data: bytes, name: str) -> tuple[str, str]:
    """The `<text>` of a TEI document (not the `<teiHeader>`), with line and paragraph breaks.

    `<choice>` keeps the original reading (`sic`, `orig`, `abbr`), not the editor's
    (`corr`, `reg`, `expan`): the corpus is about the period's own spelling.
    """
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        root = DET.fromstring(data)
    except DefusedXmlException as e:
        raise ExtractError(f"{name}: XML declares entities or DTDs ({type(e).__name__}); refused for safety") from None
    except Exception as e:  # xml.etree.ElementTree.ParseError and friends
        raise ExtractError(f"{name}: not well-formed XML ({e}); fix the markup or use format = \"text\"") from None
    title = ""
    for el in root.iter():
        if _local(el.tag) == "titleStmt":
            for sub in el:
                if _local(sub.tag) == "title" and "".join(sub.itertext()).strip():
                    title = " ".join("".join(sub.itertext()).split())
                    break
            break
    body = next((el for el in root.iter() if _local(el.tag) == "text"), None)
    if body is None:
        raise ExtractError(f"{name}: TEI file has no <text> element; is it TEI?")
    parts: list[str] = []

    def walk(el, in_speech: bool = False) -> None:
        tag = _local(el.tag)
        if tag in _TEI_SKIP:
            if el.tail:
                parts.append(re.sub(r"\s+", " ", el.tail))
            return
        # inside a speech (<sp>) the speaker and its lines stay together, as in printed plays
        paragraph = tag in _TEI_PARAGRAPH and not (in_speech and tag in ("p", "lg"))
        line = tag in _TEI_LINE or (in_speech and tag in ("p", "lg"))
        if paragraph:
            parts.append("\n\n")
        elif tag == "lb":
            parts.append("\n")
        if el.text:
            parts.append(re.sub(r"\s+", " ", el.text))
        for child in el:
            walk(child, in_speech or tag == "sp")
        if paragraph:
            parts.append("\n\n")
        elif line:
            parts.append("\n")
        if el.tail:
            parts.append(re.sub(r"\s+", " ", el.tail))

    try:
        for child in body:
            walk(child)
    except RecursionError:
        raise ExtractError(f"{name}: XML nested too deeply to be a text") from None
    text = "".join(parts)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return title, text.strip()


# ---- rows: JSONL, Parquet, Arrow -------------------------------------------------------------------


@dataclass
class RowTexts:
    texts: list[ExtractedText]
    bad_rows: list[str]  # "line N: reason" or "row N: reason", for the rejections log
    rows: int


def jsonl_texts(text: str, spec: SourceSpec, name: str) -> RowTexts:
    """JSONL rows -> texts, joined and titled as for every row format (`corpus/rows.py`)."""
    return _row_texts(jsonl_rows(text), spec, name)


def _row_texts(rows: Iterable[Row], spec: SourceSpec, name: str) -> RowTexts:
    try:
        joined = join_rows(rows, spec, name)
    except RowsError as e:
        raise ExtractError(str(e)) from None
    stem = PurePosixPath(name).stem
    texts = [ExtractedText(title or (spec.title or stem), text) for title, text in joined.texts]
    return RowTexts(texts, joined.bad_rows, joined.rows)


# ---- PDF -----------------------------------------------------------------------------------------


def pdf_to_text(data: bytes, name: str) -> tuple[str, str]:
    try:
        import pypdf
    except ImportError:
        raise ExtractError(f"{name}: reading PDF needs the optional extra: pip install 'londinium[pdf]'") from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str((reader.metadata or {}).get("/Title") or "")
    except Exception as e:  # pypdf raises many types on damaged files
        raise ExtractError(f"{name}: unreadable PDF ({type(e).__name__}: {e})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise ExtractError(f"{name}: PDF has no text layer (scanned images?); OCR it first")
    return title, text


# ---- dispatch ------------------------------------------------------------------------------------


def sniff_format(name: str, data: bytes) -> str:
    """`auto`: by extension first, then by content."""
    ext = PurePosixPath(name).suffix.lower()
    if ext in (".parquet", ".arrow", ".feather") or sniff(data[:8192]) in TABLE_FORMATS:
        return "parquet" if ext == ".parquet" or data.startswith(b"PAR1") else "arrow"
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if ext == ".pdf" or head.startswith(b"%PDF-"):
        return "pdf"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext in (".html", ".htm", ".xhtml"):
        return "html"
    if ext in (".xml", ".tei") or head.startswith(b"<?xml") or b"<TEI" in head:
        return "tei" if (b"<TEI" in head or b"<tei" in head or b"<text" in data[:65536]) else "html"
    low = head[:512].lower()
    if low.startswith(b"<!doctype html") or low.startswith(b"<html"):
        return "html"
    if head.startswith(b"{"):
        first = head.split(b"\n", 1)[0]
        try:
            if isinstance(loads_json(first), dict):
                return "jsonl"
        except ValueError:
            pass
    return "text"  # `extract` upgrades text with Gutenberg markers to `gutenberg`


def _default_title(text: str, name: str, spec: SourceSpec) -> str:
    """The first short non-empty line (a book's title line), else the file's stem."""
    for line in text.split("\n")[:20]:
        line = " ".join(line.split())
        if line:
            return line if len(line) <= 100 and any(c.isalpha() for c in line) else PurePosixPath(name).stem
    return spec.title or PurePosixPath(name).stem


@dataclass
class Extraction:
    texts: list[ExtractedText]
    format: str
    bad_rows: list[str]
    rows: int = 0


def extract(raw: RawFile, spec: SourceSpec) -> Extraction:
    """Turn one raw file into texts according to `spec.format` (sniffed when `auto`)."""
    name = raw.name
    if not raw.data.strip():
        raise ExtractError(f"{name}: empty file")
    fmt = spec.format if spec.format != "auto" else sniff_format(name, raw.data)
    if fmt in TABLE_FORMATS:
        result = _row_texts(table_rows(raw.data, fmt, name, spec), spec, name)
        return Extraction(result.texts, fmt, result.bad_rows, result.rows)
    if fmt == "pdf":
        title, text = pdf_to_text(raw.data, name)
        return Extraction([ExtractedText(title or _default_title(text, name, spec), text)], fmt, [])
    if fmt == "tei":
        if looks_binary(raw.data):
            raise ExtractError(f"{name}: binary content, not XML")
        title, text = tei_to_text(raw.data, name)
        return Extraction([ExtractedText(title or _default_title(text, name, spec), text)], fmt, [])
    text, encoding = decode_text(raw.data, name)
    if fmt == "jsonl":
        result = jsonl_texts(text, spec, name)
        for t in result.texts:
            t.encoding = encoding
        return Extraction(result.texts, fmt, result.bad_rows, result.rows)
    if fmt == "html":
        title, body = html_to_text(text)
        return Extraction([ExtractedText(title or _default_title(body, name, spec), body, encoding)], fmt, [])
    if fmt == "text" and spec.format == "auto" and has_gutenberg_markers(text):
        fmt = "gutenberg"
    if fmt == "gutenberg":
        text = strip_gutenberg(text.replace("\r\n", "\n").replace("\r", "\n"))
    return Extraction([ExtractedText(_default_title(text, name, spec), text, encoding)], fmt, [])
