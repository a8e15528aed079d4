"""Segmentation: documents within max_doc_chars, cut at paragraph then sentence boundaries, words intact."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from londinium.corpus.blocks import parse
from londinium.corpus.segment import pack, split_long, split_paragraphs

SPEECH = ("Now is the winter of our discontent made glorious summer by this sun of York. "
          "And all the clouds that lour'd upon our house in the deep bosom of the ocean buried! "
          "Now are our brows bound with victorious wreaths? ")


def test_paragraphs_are_split_on_blank_lines_keeping_verse_lines_and_indentation():
    text = "  Pro. Ye Elues of hils,\nAnd ye, that on the sands\n\n\n\nAriel. I'le fetch them.\n \nExit."
    assert split_paragraphs(text) == ["  Pro. Ye Elues of hils,\nAnd ye, that on the sands", "Ariel. I'le fetch them.", "Exit."]


def test_short_paragraphs_are_packed_together_up_to_the_limit():
    paras = [f"Paragraph {i} hath words." for i in range(10)]  # 22-23 chars each
    docs = pack(paras, 60)
    assert all(len(d) <= 60 for d in docs)
    assert docs[0] == "Paragraph 0 hath words.\n\nParagraph 1 hath words."
    assert "\n\n".join(docs) == "\n\n".join(paras)  # nothing lost, order kept


def test_a_long_paragraph_is_cut_at_sentence_ends():
    para = SPEECH * 3
    pieces = split_long(para, 200)
    assert all(len(p) <= 200 for p in pieces)
    assert all(p.endswith((".", "!", "?")) for p in pieces)
    assert " ".join(pieces) == para.strip()


def test_a_sentence_longer_than_the_limit_is_cut_at_a_line_break_then_a_space():
    verse = "\n".join(["Of Mans First Disobedience, and the Fruit"] * 6)  # no sentence end at all
    pieces = split_long(verse, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert all(p.startswith("Of Mans") and p.endswith("Fruit") for p in pieces)
    prose = "word " * 100
    assert all(len(p) <= 42 and not p.startswith(" ") for p in split_long(prose.strip(), 42))


def test_an_unbroken_run_is_cut_at_the_limit():
    assert split_long("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("abc ſ’.!?\n")), max_size=2000),
    limit=st.integers(5, 400),
)
def test_segments_respect_the_limit_and_keep_every_word(text, limit):
    docs = pack(split_paragraphs(text), limit)
    assert all(0 < len(d) <= limit for d in docs)
    # cuts fall between characters: the words read in order are exactly the text's words
    # (a word longer than the limit is the one thing that must be broken)
    if all(len(w) <= limit for w in text.split()):
        assert " ".join(docs).split() == text.split()


def test_a_long_fenced_block_is_cut_between_lines_and_each_piece_is_fenced_again():
    code = "\n".join(f"    value_{i}  =  compute({i})" for i in range(30))
    docs = pack(parse(f"Intro.\n\n```python\n{code}\n```"), 200)
    assert all(len(d) <= 200 for d in docs)
    pieces = [d.removeprefix("Intro.\n\n") for d in docs]
    assert all(p.startswith("```python\n") and p.endswith("\n```") for p in pieces)
    # every line whole, indentation and inner spaces kept, in order
    assert "\n".join(p[len("```python\n"):-len("\n```")] for p in pieces) == code


def test_blank_lines_between_blocks_are_one_unless_the_source_keeps_its_whitespace():
    blocks = parse("One.\n\n\n\nTwo.\n```\nx  =  1\n```")
    assert pack(blocks, 100) == ["One.\n\nTwo.\n\n```\nx  =  1\n```"]
    assert pack(blocks, 100, keep_gaps=True) == ["One.\n\n\n\nTwo.\n```\nx  =  1\n```"]
