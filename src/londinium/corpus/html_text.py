"""An HTML page -> its visible text, with code and tables kept whole.

- Paragraph breaks come from block elements, line breaks from `<br>`; other whitespace collapses as
  a browser collapses it.
- Site furniture is left out: `script`, `style`, `nav`, `header`, `footer`, `aside`, `form`, and
  elements whose class, id or role say navigation, menu, sidebar, cookie or boilerplate (Gutenberg's
  `pg-header`); so are permalink anchors (Sphinx's and MkDocs' `<a class="headerlink">¶</a>`).
- `<pre>` is preformatted: its text goes out byte for byte inside a Markdown fence (a fence longer
  than any run of backticks in it), so the later stages know it as code and leave it alone.
- A `<table>` becomes a Markdown pipe table, one row a line, with a `|---|` rule under a header row;
  paragraphs inside a cell become spaces, a `|` inside a cell is escaped.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP_TAGS = {"script", "style", "nav", "header", "footer", "aside", "noscript", "template", "svg", "form", "head", "button", "iframe"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_BLOCK_TAGS = {"p", "div", "section", "article", "blockquote", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3",
               "h4", "h5", "h6", "main", "body", "figure", "figcaption", "center", "caption"}
# class/id/role words that mark site furniture rather than content (Gutenberg's pg-header included).
_BOILERPLATE_ATTR = re.compile(r"(^|[\s_-])(nav|navbar|navigation|menu|footer|header|sidebar|breadcrumbs?|cookies?|banner|"
                               r"share|social|advert|ads|boilerplate|pg-header|pg-footer)($|[\s_-])", re.IGNORECASE)
# Permalink anchors next to headings: Sphinx and MkDocs mark them with class="headerlink" and a title.
_PERMALINK_TITLE = re.compile(r"\s*(permalink|permanent link|link to this)", re.IGNORECASE)


def fenced(code: str) -> str:
    """`code` inside a Markdown fence of backticks longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{code}\n{fence}"


class _Table:
    """The rows of the table being read: cells as text, and whether a row is all header cells."""

    def __init__(self) -> None:
        self.rows: list[tuple[list[str], bool]] = []
        self.cells: list[str] | None = None  # the open row
        self.headers: list[bool] = []
        self.cell: list[str] | None = None  # the open cell's text

    def render(self) -> str:
        lines = []
        for k, (cells, header) in enumerate(self.rows):
            lines.append("| " + " | ".join(cells) + " |")
            if k == 0 and header:
                lines.append("|" + "---|" * len(cells))
        return "\n".join(lines)


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []  # finished paragraphs of text, fenced code and tables
        self.parts: list[str] = []  # the text since the last chunk
        self.skip: list[str] = []  # open tags whose content is skipped
        self.pre: list[str] | None = None  # the text of the open <pre>
        self.pre_depth = 0
        self.table: _Table | None = None  # the open table (a table inside one of its cells joins the cell)
        self.table_depth = 0
        self.title = ""
        self._in_title = False

    # ---- what is left out

    def _is_furniture(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP_TAGS:
            return True
        for key, value in attrs:
            if key in ("class", "id", "role") and value and _BOILERPLATE_ATTR.search(value):
                return True
        if tag == "a":
            values = dict(attrs)
            return "headerlink" in (values.get("class") or "").split() or bool(_PERMALINK_TITLE.match(values.get("title") or ""))
        return False

    # ---- text, code and tables

    def _flush(self) -> None:
        text = re.sub(r"\n{3,}", "\n\n", "".join(self.parts)).strip()
        if text:
            self.chunks.append(text)
        self.parts = []

    def _newline(self, brk: str) -> None:
        if self.pre is not None:
            if brk == "\n":
                self.pre.append(brk)
            return
        if self.table is not None:
            self._data(" ")
            return
        # spaces that HTML collapsing left at the end of a line are not text
        if self.parts:
            self.parts[-1] = self.parts[-1].rstrip(" ")
        self.parts.append(brk)

    def _data(self, data: str) -> None:
        if self.table is not None:
            if self.table.cell is not None:
                self.table.cell.append(data)
            return
        # HTML collapses source whitespace; only <pre>, <br> and blocks make line breaks.
        data = re.sub(r"\s+", " ", data)
        if not self.parts or self.parts[-1].endswith("\n"):
            data = data.lstrip(" ")
        if data:
            self.parts.append(data)

    def _start_table_part(self, tag: str) -> None:
        table = self.table
        if tag == "tr":
            self._end_table_part("tr")
            table.cells, table.headers = [], []
        elif tag in ("td", "th"):
            self._end_table_part("td")
            if table.cells is None:
                table.cells, table.headers = [], []
            table.cell = []
            table.headers.append(tag == "th")

    def _end_table_part(self, tag: str) -> None:
        table = self.table
        if table.cell is not None:
            text = " ".join("".join(table.cell).split()).replace("|", "\\|")
            table.cells.append(text)
            table.cell = None
        if tag == "tr" and table.cells is not None:
            if any(table.cells):
                table.rows.append((table.cells, all(table.headers)))
            table.cells = None

    def _table_part(self, tag: str, opening: bool) -> None:
        if self.table_depth > 1:  # a table inside a cell: its rows and cells are spaces in that cell
            self._data(" ")
        elif opening:
            self._start_table_part(tag)
        else:
            self._end_table_part(tag)

    # ---- HTMLParser's callbacks

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _VOID_TAGS:
            if tag == "br" and not self.skip:
                self._newline("\n")
            return
        if self.skip or self._is_furniture(tag, attrs):
            self.skip.append(tag)
            return
        if tag == "pre":
            self.pre_depth += 1
            if self.pre is None and self.table is None:
                self._flush()
                self.pre = []
            return
        if self.pre is not None:
            return
        if tag == "table":
            self.table_depth += 1
            if self.table is None:
                self._flush()
                self.table = _Table()
            return
        if self.table is not None and tag in ("tr", "td", "th"):
            self._table_part(tag, opening=True)
            return
        if tag in _BLOCK_TAGS:
            self._newline("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and not self.skip:
            self._newline("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self.skip:
            # close the innermost skipped element of this name (tolerates sloppy nesting)
            if tag in self.skip:
                while self.skip and self.skip.pop() != tag:
                    pass
            return
        if tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
            if self.pre is not None and not self.pre_depth:
                code = "".join(self.pre)
                self.pre = None
                # HTML drops one newline right after <pre>; the newlines before </pre> only close it
                code = (code[1:] if code.startswith("\n") else code).rstrip("\n")
                if code.strip():
                    self.chunks.append(fenced(code))
            return
        if self.pre is not None:
            return
        if self.table is not None and tag in ("tr", "td", "th"):
            self._table_part(tag, opening=False)
            return
        if tag == "table" and self.table is not None:
            self.table_depth -= 1
            if not self.table_depth:
                self._end_table_part("tr")
                if self.table.rows:
                    self.chunks.append(self.table.render())
                self.table = None
            return
        if tag in _BLOCK_TAGS:
            self._newline("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self.skip:
            return
        if self.pre is not None:
            self.pre.append(data)
            return
        self._data(data)

    def text(self) -> str:
        if self.pre is not None:  # an unclosed <pre> at the end of the page: its text is still the page's
            self.chunks.append(fenced("".join(self.pre).strip("\n")))
            self.pre = None
        while self.table is not None:
            self.handle_endtag("table")
        self._flush()
        return "\n\n".join(self.chunks)


def html_to_text(html: str) -> tuple[str, str]:
    """Visible body text of an HTML page without navigation/site furniture. Returns (title, text)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return " ".join(parser.title.split()), parser.text()
