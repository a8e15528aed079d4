"""Blocks: prose, code and tables told apart, and a parse that loses nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from londinium.corpus.blocks import CODE, PROSE, TABLE, join, parse

VERSE = ("    Before the starry threshold of Jove's court\n    My mansion is, where those immortal shapes\n"
         "    Of bright aerial spirits live insphered\n    After this mortal change, to her true servants      10")
KJV = "In the beginning God created the heaven and the earth. And the earth was without form, and void; (and darkness)."
FOLIO = "  Gon. I haue great comfort from this fellow: methinks he hath no drowning\nmarke vpon him; stand fast good Fate:"


def kinds(text: str) -> list[str]:
    return [b.kind for b in parse(text)]


def test_fenced_code_is_one_block_with_its_blank_lines():
    text = "Intro:\n```python\ndef f():\n\n\n    return  1\n```\nAfter.\n\n~~~\n$ ls  -l\n~~~"
    blocks = parse(text)
    assert [(b.kind, b.text) for b in blocks] == [
        (PROSE, "Intro:"), (CODE, "```python\ndef f():\n\n\n    return  1\n```"), (PROSE, "After."), (CODE, "~~~\n$ ls  -l\n~~~")]


def test_an_unclosed_fence_is_prose_so_a_line_of_tildes_cannot_swallow_a_book():
    assert kinds("~~~~~~~~~~\n\nThe first chapter of the book.\n\nAnd the second.") == [PROSE, PROSE, PROSE]


def test_indented_code_is_code_and_indented_verse_is_prose():
    code = "    class Stack:\n        def __init__(self):\n\n        def push(self, item):\n            self.items.append(item)"
    assert [(b.kind, b.text) for b in parse("A stack:\n\n" + code)] == [(PROSE, "A stack:"), (CODE, code)]
    assert kinds(VERSE + "\n\n" + VERSE) == [PROSE, PROSE]


def test_prompts_and_restructuredtext_literal_blocks_are_code():
    assert kinds(">>> for i in range(3):\n...     print(i)\n...\n0\n1") == [CODE]
    assert kinds("Run it like this::\n\n   ID PROVIDER   MODULE\n   29 python    foo\n\nBack to prose.") == [PROSE, CODE, PROSE]
    assert kinds(".. code-block:: python\n\n   x  =  1") == [PROSE, CODE]


def test_pipe_grid_and_simple_tables_are_tables():
    assert kinds("| a | b |\n|---|---|\n| 1 | 2 |") == [TABLE]
    assert kinds("a | b\n--- | ---\n1 | 2") == [TABLE]
    assert kinds("+---+---+\n| a | b |\n+===+===+") == [TABLE]
    assert kinds("=====  =====\nA      B\n=====  =====") == [TABLE]


def test_period_prose_verse_and_headings_are_prose():
    for text in (VERSE, KJV, FOLIO, "THE TEMPEST\n===========", "Exit.", "O, what a noble mind is here o'erthrown!"):
        assert kinds(text) == [PROSE], text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab =(:)>.`~|-\t\n ")), max_size=300))
def test_the_parse_loses_nothing(text):
    text = text.rstrip(" \t\n")
    assert join(parse(text)) == text
