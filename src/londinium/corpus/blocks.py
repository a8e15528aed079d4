"""A text as blocks: prose paragraphs, code and tables, so that each gets the care it needs.

`parse(text)` cuts a text at blank lines into blocks and says what each one is:

- **code**: a fenced block (CommonMark's rule: a line of three or more backticks or tildes, indented at
  most three spaces, up to a closing fence of the same character at least as long; an unclosed fence
  is not one, so a decorative line of tildes never swallows a book); consecutive paragraphs indented
  four or more columns that mostly look like code (as one block, with the blank lines between
  them); the indented paragraphs after a reStructuredText `::` or code directive, whatever they hold;
  or a paragraph whose lines mostly look like code (interpreter and shell prompts, assignments, calls
  and signatures, block openers ending in ":" or "{", operators such as `==`, `->`, `std::`);
- **table**: a Markdown pipe table, a reStructuredText grid or simple table;
- **prose**: everything else.

Code and tables are kept *verbatim*: normalisation leaves their whitespace alone (clean.py), the
language filter does not judge them as prose (quality.py), and segmentation keeps them whole or cuts
them between lines (segment.py). Verse is prose: its lines start with capitals and carry no operators.

The parse is lossless: `join(parse(text)) == text` for a text without trailing blank lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROSE, CODE, TABLE = "prose", "code", "table"
VERBATIM = (CODE, TABLE)


@dataclass(frozen=True)
class Block:
    text: str
    kind: str = PROSE  # PROSE, CODE or TABLE
    gap: str = "\n\n"  # what separated it from the block before: "\n" plus any blank lines as written

    @property
    def verbatim(self) -> bool:
        return self.kind in VERBATIM


def join(blocks: list[Block]) -> str:
    """The text the blocks were parsed from (the first block's gap is leading blank lines, if any)."""
    return "".join(b.gap + b.text for b in blocks)


# ---- what code and tables look like ----------------------------------------------------------------

# One line of code: each test is something English prose and verse do not do (verse lines open with
# a capital; prose does not open with "x = 1", end with "{" or use "=="). The tests at the start of a
# line are one anchored pattern; the rest are cheap string checks first, since most lines are prose.
_CODE_START = re.compile(
    r"""[ \t]*(?:
        (?:>>>|\.\.\.|\$|In\ \[\d*\]:)(?:[ \t]|$)                               # interpreter and shell prompts
      | (?:def|class|fn|func|function|struct|enum|interface)[ \t]+[A-Za-z_]\w*[ \t]*[(:<{]  # definitions
      | import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*[\w.]+)*[ \t]*;?[ \t]*$   # imports
      | from[ \t]+[\w.]+[ \t]+import[ \t]
      | \#[ \t]*(?:include|define|ifn?def|endif)\b
      | (?:if|elif|else|while|for|with|try|except|finally|switch|case|catch|async|match)\b[^\n]*[:{][ \t]*$  # block openers
      | [A-Za-z_][\w.]*(?:\[[^\]\n]*\])?[ \t]*(?:[-+*/%&|^]|//|\*\*|<<|>>)?=(?!=)[^\n]*[^.\s][ \t]*$  # assignment
                                                              # (one that ends in "." is a gloss: "_goodly_ = handsome.")
      | [})\]]+[;,)]*[ \t]*$                                                  # closing brackets
      | <[A-Za-z/!?][^>\n]*>                                                  # markup
      | //[ \t]                                                               # C-style comment
    )""",
    re.VERBOSE,
)
_OPERATOR = re.compile(r"==|!=|<=|>=|->|=>|:=|\+=|-=|&&|\|\||\w::\w")
# A paragraph with none of these characters or strings and no line opening with a keyword has no
# code line: most prose is let through on this one search, much cheaper than testing each line.
_MAYBE_CODE = re.compile(r"[=(){}\[\]<>$#/|&]|\.\.\.|::|^[ \t]*(?:def|class|fn|func|function|struct|enum|interface|import|"
                         r"from|if|elif|else|while|for|with|try|except|finally|switch|case|catch|async|match)\b", re.MULTILINE)
_IDENTIFIER_END = re.compile(r"[A-Za-z_][\w.]*$")
_CALL_TAIL = re.compile(r"\([^()]*\)[ \t]*[:;{]?")
_ADORNMENT = re.compile(r"[ \t]*([=\-~^\"'`#*+:_])\1{3,}[ \t]*")  # a heading's underline: "=====", "-----"


def code_line(line: str) -> bool:
    """Whether one line looks like code."""
    if _ADORNMENT.fullmatch(line):
        return False
    if _CODE_START.match(line):
        return True
    if ("=" in line or "->" in line or "&&" in line or "||" in line or "::" in line) and _OPERATOR.search(line):
        return True
    tail = line.rstrip(" \t")
    if tail.endswith("{") or (tail.endswith(";") and tail[:-1].rstrip(" \t").endswith(")")):
        return True
    if tail.endswith((")", ":", ";")) and (k := tail.rfind("(")) > 0:
        # a call or signature ending the line: name(args) with nothing but ":", ";" after it
        return bool(_CALL_TAIL.fullmatch(tail, k) and _IDENTIFIER_END.search(tail, max(0, k - 64), k))
    return False


CODE_SHARE = 0.5  # a paragraph is code when at least this share of its lines looks like code

_PIPE_ROW = re.compile(r"[ \t]*\|.*\|[ \t]*")
_PIPE_RULE = re.compile(r"[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+\|?[ \t]*")
_GRID_RULE = re.compile(r"[ \t]*\+(?:[-=]+\+)+[ \t]*")
_SIMPLE_RULE = re.compile(r"[ \t]*=+(?:[ \t]+=+)+[ \t]*")


def looks_like_code(lines: list[str]) -> bool:
    """Whether most of the non-blank `lines` look like code (see the module docstring)."""
    if not _MAYBE_CODE.search("\n".join(lines)):
        return False
    lines = [line for line in lines if line.strip()]
    hits = sum(1 for line in lines if code_line(line))
    return bool(lines) and hits >= CODE_SHARE * len(lines)


def looks_like_table(lines: list[str]) -> bool:
    """A pipe table (every line a `| ... |` row, or a `|---|---|` rule under the first line),
    or a reStructuredText grid (`+---+---+`) or simple (`===  ===`) table."""
    if len(lines) < 2:
        return False
    if all(_PIPE_ROW.fullmatch(line) for line in lines):
        return True
    if _PIPE_RULE.fullmatch(lines[1]) and all("|" in line for line in lines):
        return True
    return bool(_GRID_RULE.fullmatch(lines[0]) or _SIMPLE_RULE.fullmatch(lines[0]))


# ---- the parse ------------------------------------------------------------------------------------

# A paragraph: a run of lines that each hold something besides spaces and tabs. Found by the regex
# engine rather than line by line in Python: parsing the 15 MB default corpus takes about a second.
_PARAGRAPH = re.compile(r"[^\n]*[^ \t\n][^\n]*(?:\n[^\n]*[^ \t\n][^\n]*)*")
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n]*)$", re.MULTILINE)


def _indent(line: str) -> int:
    body = line.lstrip(" \t")
    return len(line[: len(line) - len(body)].expandtabs(4))


def _fences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each fenced code block, from its opening fence line to its closing one."""
    if "```" not in text and "~~~" not in text:
        return []
    lines = list(_FENCE_LINE.finditer(text))
    out, i = [], 0
    while i < len(lines):
        fence, info = lines[i].group(1), lines[i].group(2)
        if fence[0] == "`" and "`" in info:  # not an opening fence (CommonMark: no backtick in its info)
            i += 1
            continue
        close = next((j for j in range(i + 1, len(lines)) if lines[j].group(1)[0] == fence[0]
                      and len(lines[j].group(1)) >= len(fence) and not lines[j].group(2).strip(" \t")), None)
        if close is None:  # never closed: not a fence
            i += 1
            continue
        out.append((lines[i].start(), lines[close].end()))
        i = close + 1
    return out


def _kind(text: str) -> str:
    lines = text.split("\n")
    if ("|" in text or "+" in text or "=" in text) and looks_like_table(lines):
        return TABLE
    return CODE if looks_like_code(lines) else PROSE


def _indent_of(text: str) -> int:
    """The smallest indentation of the lines of a paragraph, in columns (tabs every 4)."""
    return min(_indent(line) for line in text.split("\n"))


# reStructuredText: a paragraph ending in "::", or a code directive, makes the indented text after it
# a literal block, whatever it holds (program output, a grammar, a shell session).
_RST_CODE_DIRECTIVE = re.compile(r"[ \t]*\.\. (?:code-block|code|sourcecode|doctest|testcode|testoutput|productionlist|parsed-literal)::")


def _literal_intro(text: str) -> bool:
    return text.rstrip().endswith("::") or bool(_RST_CODE_DIRECTIVE.match(text))


def paragraphs(text: str) -> list[Block]:
    """The paragraphs of `text` as prose blocks, without judging what they are (for text already parsed)."""
    out: list[Block] = []
    prev_end = 0
    for m in _PARAGRAPH.finditer(text):
        out.append(Block(m.group(), PROSE, text[prev_end : m.start()]))
        prev_end = m.end()
    return out


def parse(text: str) -> list[Block]:
    """The blocks of `text`, in order (see the module docstring)."""
    spans: list[tuple[int, int, str | None]] = []  # (start, end, kind); None: a paragraph not yet judged
    pos = 0
    for start, end in [*_fences(text), (len(text), len(text))]:
        spans.extend((m.start(), m.end(), None) for m in _PARAGRAPH.finditer(text, pos, start))
        if end > start:
            spans.append((start, end, CODE))
        pos = end

    def run(i: int, deeper_than: int) -> int:
        """The end of the run of unjudged paragraphs from i that are all indented beyond `deeper_than`."""
        j = i
        while j < len(spans) and spans[j][2] is None and _indent_of(text[spans[j][0] : spans[j][1]]) > deeper_than:
            j += 1
        return j

    blocks: list[Block] = []
    prev_end, i = 0, 0
    judged_until = 0  # spans before this index belong to an indented run already found not to be code
    while i < len(spans):
        start, end, kind = spans[i]
        para = text[start:end]
        j = i + 1
        if kind is None and para[0] in " \t" and blocks and blocks[-1].kind == PROSE and _literal_intro(blocks[-1].text):
            j = run(i, _indent(blocks[-1].text))
            if j > i:
                end, kind = spans[j - 1][1], CODE
            else:
                j = i + 1
        if kind is None and i >= judged_until and para[0] in " \t" and _indent_of(para) >= 4:
            # consecutive indented paragraphs: one code block (blank lines and all) if they read as code;
            # verse and quotations are judged paragraph by paragraph
            j = run(i, 3)
            if looks_like_code(text[start : spans[j - 1][1]].split("\n")):
                end, kind = spans[j - 1][1], CODE
            else:
                judged_until, j = j, i + 1
        if kind is None:
            kind = _kind(para)
        blocks.append(Block(text[start:end], kind, text[prev_end:start]))
        prev_end, i = end, j
    return blocks
