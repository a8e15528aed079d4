"""A small corpus that is not period English: code-heavy documentation in Markdown and Sphinx-like HTML.

`write_docs_corpus(root)` writes the pages under `root/docs/` and a registry `root/docs-sources.toml`
(one `local` source, id "docs", format auto) and returns a `DocsCorpus` naming what is in it, so a test
of any stage can build a corpus of technical text: code blocks whose indentation and inner spaces
matter, a shell session, tables, Sphinx permalinks, a page of prose that is half code, and one page
shipped twice (as `.html` and as its `.rst.txt` source, the way Sphinx publishes `_sources/`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

# Code as it must come out of the corpus stage, byte for byte: indentation deeper than four columns,
# runs of spaces inside lines, two blank lines between definitions, a tab.
LOOP_CODE = """\
# Strategy:  iterate over a copy
for user, status in users.copy().items():
    if status == 'inactive':
        del users[user]


def active(users):
    \"\"\"Only the active users.\"\"\"
    return {name: state  for name, state in users.items() if state == 'active'}"""
SHELL_SESSION = """\
$ python3 -m venv .venv
$ .venv/bin/pip install  --upgrade pip
Successfully installed pip-24.0"""
INDENTED_CODE = """\
    class Stack:
        def __init__(self):
            self.items = []

        def push(self, item):
            self.items.append(item)"""
DOCTEST = """\
>>> for i in range(3):
...     print(i,  i * i)
...
0 0
1 1
2 4"""
HTML_CODE = """\
def fib(n):    # write Fibonacci series up to n
    a, b = 0, 1
    while a < n:
        print(a, end=' ')
        a, b = b, a+b
    print()"""
PROBE_CODE = """\
$ stap -e 'probe process("python").mark("function__entry") { printf("%s => %s\\n", user_string($arg1), user_string($arg2)) }'
  0 python(8274):  => __contains__ in Lib/_abcoll.py:362
  1 python(8274):   => __getitem__ in Lib/os.py:425"""
DUPLICATED_CODE = """\
>>> words = ['cat', 'window', 'defenestrate']
>>> for w in words:
...     print(w, len(w))
..."""

CODE_BLOCKS = (LOOP_CODE, SHELL_SESSION, INDENTED_CODE, DOCTEST, HTML_CODE, PROBE_CODE, DUPLICATED_CODE)

LOOPS_MD = f"""\
# Looping over collections

Code that changes a collection while it is iterating over that same collection can be tricky to get
right. Instead, it is usually more straightforward to loop over a copy of the collection, or to create
a new collection and fill it as you go. The example below does both of these things for a small table
of users and their states.

```python
{LOOP_CODE}
```

Before you run the examples, make a virtual environment of your own and upgrade the installer in it,
so that nothing you do here changes the packages that the rest of your system relies on:

~~~console
{SHELL_SESSION}
~~~

A class that is written with an indented block, in the older style of Markdown, is kept the same way:

{INDENTED_CODE}

| Operation | Result | Notes |
|---|---|---|
| `x or y` | if x is false, then y, else x | (1) |
| `x and y` | if x is false, then x, else y | (2) |
| `not x` | if x is false, then True, else False | (3) |

An interactive session shows what each statement prints, and the prompts say which lines you type:

{DOCTEST}

That is all there is to it: once you have seen how the copy works, you will find it in many of the
programs that you read, and you will know why it was written that way.
"""

_PERMALINK = '<a class="headerlink" href="#{0}" title="Permalink to this heading">¶</a>'


def _sphinx_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><title>{title} — Example 1.0 documentation</title></head><body>"
            '<div class="related" role="navigation"><ul><li><a href="index.html">index</a></li>'
            '<li><a href="genindex.html">modules</a> |</li></ul></div>'
            f'<div class="body" role="main"><section id="top"><h1>{title}{_PERMALINK.format("top")}</h1>{body}</section></div>'
            '<div class="footer">© Copyright 2001-2024, Example Software Foundation. Built with Sphinx.</div></body></html>')


def _pre(code: str) -> str:
    """A Sphinx highlight block: the code escaped, inside spans, after an empty span."""
    spans = "\n".join(f'<span class="n">{html.escape(line)}</span>' if line else "" for line in code.split("\n"))
    return f'<div class="highlight-python3 notranslate"><div class="highlight"><pre><span></span>{spans}\n</pre></div></div>'


FUNCTIONS_HTML = _sphinx_page("Defining functions", (
    "<p>We can create a function that writes the Fibonacci series to an arbitrary boundary. The keyword "
    "<code class=\"docutils literal notranslate\"><span class=\"pre\">def</span></code> introduces a function "
    "definition, and it must be followed by the name of the function and the list of its parameters.</p>"
    + _pre(HTML_CODE)
    + f'<section id="rules"><h2>The rules of the call{_PERMALINK.format("rules")}</h2>'
    "<p>The statements that form the body of the function start at the next line, and they must be indented. "
    "The first statement of the body can be a string literal, which is the documentation of the function.</p>"
    '<table class="docutils align-default"><thead><tr class="row-odd"><th class="head"><p>Operation</p></th>'
    '<th class="head"><p>Meaning</p></th></tr></thead><tbody>'
    '<tr class="row-even"><td><p><code class="docutils literal notranslate"><span class="pre">&lt;</span></code></p></td>'
    "<td><p>strictly less than</p></td></tr>"
    '<tr class="row-odd"><td><p><code class="docutils literal notranslate"><span class="pre">&lt;=</span></code></p></td>'
    "<td><p>less than or equal</p></td></tr></tbody></table>"
    "<p>A function that does not return a value still returns one, which is None; the interpreter does not "
    "print it when it is the only value that would be written, but you can see it if you ask for it.</p></section>"))

# Prose about a tool, with much of the page in program output: real English that is not to be
# dropped as not-English because of the code beside it.
INSTRUMENTATION_HTML = _sphinx_page("Instrumenting with probes", (
    "<p>Both of the tools that are described here let you attach to the markers in a running program, and "
    "they can be used to find out where the time of a process is spent, as well as which of its functions "
    "are called most often while it is running.</p>"
    + _pre(PROBE_CODE)
    + "<p>The first column of the output is the time since the start of the script, and the rest of each "
    "line shows the name of the function, the file in which it is found and the number of the line.</p>"
    + _pre("  2 python(8274):    <= __getitem__\n  3 python(8274):  <= __contains__\n  4 python(8274): => __enter__")
    + _pre("$ stap -L 'process(\"python\").mark(\"*\")'\nprocess(\"python\").mark(\"function__entry\") $arg1:long $arg2:long")
    + "<p>If you are not sure whether your build has the markers at all, you can list them, and if the list "
    "is empty then the markers were not compiled into it and have to be enabled when it is built.</p>"))

DUPLICATE_PROSE = ("If you do need to iterate over a sequence of numbers, the built-in function range comes in "
                   "handy. It generates arithmetic progressions, and it is used in almost every loop that counts. "
                   "The given end point is never part of the generated sequence, which is what you want when you "
                   "count the items of a list by their index.")
CONTROLFLOW_HTML = _sphinx_page("More control flow tools", (
    f"<p>{DUPLICATE_PROSE}</p>" + _pre(DUPLICATED_CODE)
    + "<p>To iterate over the indices of a sequence, you can combine range and len, but in most such cases "
    "it is more convenient to use the enumerate function, which gives you the index and the item at once.</p>"
    # what the HTML has beyond its source (a rendered note): it is the longer copy, the one keep-one keeps
    '<div class="admonition note"><p>Note: a range object behaves like a list in many ways, but it is not one, '
    "and it saves space because it makes the items only when you iterate over it.</p></div>"))
CONTROLFLOW_RST = f"""\
More control flow tools
=======================

{DUPLICATE_PROSE}

::

{chr(10).join("   " + line if line else "" for line in DUPLICATED_CODE.split(chr(10)))}

To iterate over the indices of a sequence, you can combine range and len, but in most such cases it
is more convenient to use the enumerate function, which gives you the index and the item at once.
"""

ERRORS_MD = """\
# Errors and exceptions

Until now error messages have not been more than mentioned, but if you have tried out the examples you
have probably seen some of them. There are at least two kinds of errors that are worth telling apart:
the errors that the parser finds in the text of a program, and the exceptions that happen when it runs.

Even if a statement or an expression is correct as it is written, it may cause an error when an attempt
is made to execute it. Errors that are found while the program is running are called exceptions, and
they are not always fatal: you will soon learn how to handle them in the programs that you write.

The last line of the message says what happened. Exceptions come in different types, and the type is
printed as part of the message, so that you can tell one kind of problem from another at a glance.  The
rest of the line gives the details, in the words of the exception that was raised.
"""


@dataclass
class DocsCorpus:
    root: Path  # the folder of pages
    registry: Path  # docs-sources.toml
    code_blocks: tuple[str, ...]  # every code block, as the documents must hold it
    duplicate_html: str  # the page shipped twice: its name as .html ...
    duplicate_source: str  # ... and as its .rst.txt source (paths under root, as document ids name them)


def write_docs_corpus(root: Path, **source_fields: str) -> DocsCorpus:
    """Write the pages and a registry for them under `root`; `source_fields` are added to the source's
    table (e.g. `code="drop"`, `whitespace="keep"`)."""
    docs = root / "docs"
    pages = {
        "guide/loops.md": LOOPS_MD,
        "guide/errors.md": ERRORS_MD,
        "library/functions.html": FUNCTIONS_HTML,
        "howto/instrumentation.html": INSTRUMENTATION_HTML,
        "tutorial/controlflow.html": CONTROLFLOW_HTML,
        "_sources/tutorial/controlflow.rst.txt": CONTROLFLOW_RST,
    }
    for name, text in pages.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text, encoding="utf-8")
    extra = "".join(f'{key} = "{value}"\n' for key, value in source_fields.items())
    registry = root / "docs-sources.toml"
    registry.write_text(f"""\
[[source]]
id = "docs"
kind = "local"
location = "docs"
format = "auto"
license = "CC0"
title = "Example documentation"
{extra}""", encoding="utf-8")
    return DocsCorpus(docs, registry, CODE_BLOCKS, "tutorial/controlflow.html", "_sources/tutorial/controlflow.rst.txt")
